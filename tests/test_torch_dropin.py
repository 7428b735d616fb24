"""rnnfast.torch (drop-in GRU/LSTM/RNN torch.nn.Modules) against torch.nn's own modules.

What is checked (skipped without torch; CI installs torch==2.13.0):

1. parity with torch autograd: rnn (tanh, relu), lstm, gru x a pairwise-covering set of
   (num_layers 1-3, bidirectional, batch_first, bias, PackedSequence with a ragged unsorted batch,
   initial state given) x float64/float32: output, h_n (c_n) and every gradient (input, h0, c0, every
   parameter) of L = <output, dy> + <h_n, dh> (+ <c_n, dc>), on both of the modules' paths to the
   kernels (the eager autograd.Function and the custom ops), which are also compared bitwise;
   unbatched 2-D input; dropout between layers (same seed, same masks);
2. the module surface: state_dict keys and (same seed) initial values equal to torch.nn's,
   load_state_dict both ways, convert/revert keep the very Parameter objects, errors;
3. a torch training loop (Adam, clip_grad_norm_, StepLR, 20 steps) with the same loss trajectory and
   final parameters as nn.GRU / nn.LSTM;
4. torch.library.opcheck of every custom op; torch.compile(fullgraph=True) without graph break
   (dynamo's explain per cell, one inductor compile); torch.jit.trace and torch.export
   (torch.jit.script is not supported: see README);
5. the activation cache behind the handle tensor is freed with the autograd graph; in-place changes
   before backward and double backward are errors.

Tolerances and error measure are those of test_torch_parity.py: max |a - e| / max |e| per array;
float64 1e-10; float32 outputs 1e-5 and gradients 1e-4 against torch in float64 on the same
float32-representable inputs and weights. Training runs evolve separately, so both sides run in the
test's dtype: each step's loss relative to torch's, 1e-10 float64 (1e-4 float32), and the final
parameters (1e-9 float64, 1e-4 float32).
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from helpers import GATES, assert_close

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402
from torch.nn.utils.rnn import pack_padded_sequence  # noqa: E402

import rnnfast.torch as rt  # noqa: E402

__all__: list[str] = []

pytestmark = pytest.mark.torch

CELLS = ("gru", "lstm", "rnn-tanh", "rnn-relu")
TORCH_CLS = {"gru": nn.GRU, "lstm": nn.LSTM, "rnn": nn.RNN}
FAST_CLS = {"gru": rt.GRU, "lstm": rt.LSTM, "rnn": rt.RNN}
TOL_OUT = {torch.float64: 1e-10, torch.float32: 1e-5}
TOL_GRAD = {torch.float64: 1e-10, torch.float32: 1e-4}
DTYPES = (torch.float64, torch.float32)
DTYPE_IDS = ["f64", "f32"]

T, B, N_IN, H = 7, 4, 3, 5
LENGTHS = torch.tensor([3, 7, 1, 5])  # unsorted, one full, one of length 1

# (num_layers, bidirectional, batch_first, bias, packed, hx given): every pair of two-valued options
# appears in both combinations, and every num_layers with both directions
CONFIGS = [
    (1, False, False, True, False, False),
    (1, True, True, False, True, True),
    (2, False, True, True, True, True),
    (2, True, False, False, False, True),
    (3, True, True, True, True, False),
    (3, False, False, False, True, True),
]
CONFIG_IDS = [
    f"L{n}-{'bi' if bi else 'uni'}-{'bf' if bf else 'tm'}-{'b' if b else 'nob'}-"
    f"{'packed' if p else 'padded'}-{'hx' if hx else 'nohx'}"
    for n, bi, bf, b, p, hx in CONFIGS
]

# worst errors seen: (cell, dtype, "out" | "grad") -> (relative error, absolute error, name)
WORST: dict[tuple[str, str, str], tuple[float, float, str]] = {}


@pytest.fixture(scope="module", autouse=True)
def _module_setup() -> Iterator[None]:
    """One torch thread (tiny shapes on a shared machine), restored after; writes the worst errors to
    the JSON file named by RNNFAST_DROPIN_REPORT when set."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
    path = os.environ.get("RNNFAST_DROPIN_REPORT")
    if path:
        rows = [
            {"cell": c, "dtype": d, "kind": k, "rel": r, "abs": a, "array": n}
            for (c, d, k), (r, a, n) in sorted(WORST.items())
        ]
        with open(path, "w", encoding="utf-8") as f:
            json.dump(rows, f, indent=1)


def _split(cell: str) -> tuple[str, dict[str, Any]]:
    kind, _, nl = cell.partition("-")
    return kind, ({"nonlinearity": nl} if nl else {})


def _check(cell: str, dtype: Any, kind: str, name: str, actual: Any, expected: Any) -> None:
    a = actual.detach().to(torch.float64).numpy()
    e = expected.detach().to(torch.float64).numpy()
    tol = (TOL_OUT if kind == "out" else TOL_GRAD)[dtype]
    rel = assert_close(a, e, tol, f"{cell} {kind} {name}")
    key = (cell, DTYPE_IDS[DTYPES.index(dtype)], kind)
    absolute = float(np.max(np.abs(a - e))) if a.size else 0.0
    if key not in WORST or rel > WORST[key][0]:
        WORST[key] = (rel, absolute, name)


def _pair(cell: str, dtype: Any, seed: int = 0, **kw: Any) -> tuple[nn.Module, nn.Module]:
    """(torch.nn module in float64, rnnfast.torch module in ``dtype``) with the same weights, those
    of a torch module made with ``seed`` rounded to ``dtype``."""
    kind, extra = _split(cell)
    torch.manual_seed(seed)
    ref = TORCH_CLS[kind](N_IN, H, dtype=torch.float64, **extra, **kw)
    fast = FAST_CLS[kind](N_IN, H, dtype=dtype, **extra, **kw)
    rounded = {k: v.to(dtype) for k, v in ref.state_dict().items()}
    fast.load_state_dict(rounded)
    ref.load_state_dict({k: v.to(torch.float64) for k, v in rounded.items()})
    return ref, fast


def _run(
    mod: nn.Module,
    x: Any,
    hx: Any,
    packed: bool,
    batch_first: bool,
    dy: Any,
    dstates: list[Any],
) -> tuple[Any, list[Any], Any]:
    """(output (padded data or packed data), final states, loss) of one forward."""
    inp = (
        pack_padded_sequence(x, LENGTHS, batch_first=batch_first, enforce_sorted=False)
        if packed
        else x
    )
    out, fin = mod(inp, hx)
    states = list(fin) if isinstance(fin, tuple) else [fin]
    if packed:
        assert isinstance(out, type(inp))
        assert torch.equal(out.batch_sizes, inp.batch_sizes)
        assert torch.equal(out.sorted_indices, inp.sorted_indices)
        assert torch.equal(out.unsorted_indices, inp.unsorted_indices)
        out = out.data
    loss = (out * dy.to(out.dtype)).sum()
    for s, d in zip(states, dstates):
        loss = loss + (s * d.to(s.dtype)).sum()
    return out, states, loss


@pytest.fixture(params=["eager", "ops"])
def path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """The modules' two paths to the kernels: the eager autograd.Function (default outside
    compile/export/trace) and the custom ops (rnnfast.torch.EAGER_FAST_PATH = False)."""
    monkeypatch.setattr(rt, "EAGER_FAST_PATH", request.param == "eager")
    return str(request.param)


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("config", CONFIGS, ids=CONFIG_IDS)
@pytest.mark.parametrize("cell", CELLS)
def test_parity_with_torch_autograd(
    cell: str, config: tuple[Any, ...], dtype: Any, path: str
) -> None:
    num_layers, bidirectional, batch_first, bias, packed, hx_given = config
    kind, _ = _split(cell)
    ref, fast = _pair(
        cell,
        dtype,
        num_layers=num_layers,
        bidirectional=bidirectional,
        batch_first=batch_first,
        bias=bias,
    )
    D = 2 if bidirectional else 1
    g = torch.Generator().manual_seed(1)
    shape = (B, T, N_IN) if batch_first else (T, B, N_IN)
    x64 = torch.randn(shape, generator=g, dtype=torch.float64).to(dtype).to(torch.float64)
    n_states = 2 if kind == "lstm" else 1
    s64 = [
        torch.randn(num_layers * D, B, H, generator=g, dtype=torch.float64).to(dtype).double()
        for _ in range(n_states)
    ]
    n_out = int(LENGTHS.sum()) if packed else T * B
    dy_shape = (n_out, D * H) if packed else (*shape[:2], D * H)
    dy = torch.randn(dy_shape, generator=g, dtype=torch.float64)
    dstates = [torch.randn(num_layers * D, B, H, generator=g, dtype=torch.float64) for _ in s64]

    results = []
    for mod, dt in ((ref, torch.float64), (fast, dtype)):
        x = x64.to(dt).requires_grad_()
        states = [s.to(dt).requires_grad_() for s in s64]
        hx = None
        if hx_given:
            hx = tuple(states) if kind == "lstm" else states[0]
        out, fin, loss = _run(mod, x, hx, packed, batch_first, dy, dstates)
        wrt = [x, *(states if hx_given else []), *mod.parameters()]
        grads = torch.autograd.grad(loss, wrt)
        results.append((out, fin, grads))
    (out_e, fin_e, grads_e), (out_a, fin_a, grads_a) = results
    assert out_a.dtype == dtype
    _check(cell, dtype, "out", "output", out_a, out_e)
    for j, (a, e) in enumerate(zip(fin_a, fin_e)):
        _check(cell, dtype, "out", ("h_n", "c_n")[j], a, e)
    names = ["input", *(["h0", "c0"][:n_states] if hx_given else [])]
    names += [n for n, _ in ref.named_parameters()]
    assert [n for n, _ in fast.named_parameters()] == [n for n, _ in ref.named_parameters()]
    assert len(grads_a) == len(names)
    for name, a, e in zip(names, grads_a, grads_e):
        assert a.dtype == dtype, name
        _check(cell, dtype, "grad", name, a, e)


@pytest.mark.parametrize("cell", CELLS)
def test_eager_and_ops_paths_bitwise_equal(cell: str, monkeypatch: pytest.MonkeyPatch) -> None:
    kind, _ = _split(cell)
    _, fast = _pair(cell, torch.float32, num_layers=2, bidirectional=True, batch_first=True)
    g = torch.Generator().manual_seed(3)
    x = torch.randn(B, T, N_IN, generator=g)
    packed = pack_padded_sequence(x, LENGTHS, batch_first=True, enforce_sorted=False)
    results = []
    for eager in (True, False):
        monkeypatch.setattr(rt, "EAGER_FAST_PATH", eager)
        fast.zero_grad()
        out, fin = fast(packed)
        leaves = [out.data, *torch.utils._pytree.tree_leaves(fin)]
        sum((leaf * leaf.detach().sin()).sum() for leaf in leaves).backward()
        results.append(
            [t.detach().clone() for t in leaves] + [p.grad.clone() for p in fast.parameters()]
        )
    for a, e in zip(*results):
        assert torch.equal(a, e)


@pytest.mark.parametrize("cell", CELLS)
def test_unbatched_input(cell: str, path: str) -> None:
    kind, _ = _split(cell)
    ref, fast = _pair(cell, torch.float64, num_layers=2, bidirectional=True)
    x = torch.randn(T, N_IN, dtype=torch.float64)
    hx = torch.randn(4, H, dtype=torch.float64)
    state = (hx, hx.cos()) if kind == "lstm" else hx
    for args in ((x,), (x, state)):
        out_e, fin_e = ref(*args)
        out_a, fin_a = fast(*args)
        _check(cell, torch.float64, "out", "output (unbatched)", out_a, out_e)
        for a, e in zip(
            torch.utils._pytree.tree_leaves(fin_a), torch.utils._pytree.tree_leaves(fin_e)
        ):
            assert a.shape == e.shape
            _check(cell, torch.float64, "out", "state (unbatched)", a, e)


@pytest.mark.parametrize("cell", ("gru", "lstm"))
def test_dropout_between_layers_same_masks(cell: str, path: str) -> None:
    """Same seed, same dropout masks as nn.GRU/LSTM (F.dropout on each layer's output but the
    last, in the same order); eval mode applies none."""
    ref, fast = _pair(cell, torch.float64, num_layers=3, dropout=0.4, bidirectional=True)
    x = torch.randn(T, B, N_IN, dtype=torch.float64)
    for train in (True, False):
        ref.train(train)
        fast.train(train)
        torch.manual_seed(5)
        out_e, _ = ref(x)
        torch.manual_seed(5)
        out_a, _ = fast(x)
        _check(cell, torch.float64, "out", f"output (dropout, train={train})", out_a, out_e)


# --------------------------------------------------------------------------------------------------
# module surface
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("cell", CELLS)
def test_state_dict_and_init_match_torch(cell: str) -> None:
    kind, extra = _split(cell)
    kw = dict(num_layers=2, bidirectional=True, **extra)
    torch.manual_seed(3)
    ref = TORCH_CLS[kind](N_IN, H, **kw)
    torch.manual_seed(3)
    fast = FAST_CLS[kind](N_IN, H, **kw)
    sd_e, sd_a = ref.state_dict(), fast.state_dict()
    assert list(sd_a) == list(sd_e)
    for k in sd_e:
        assert torch.equal(sd_a[k], sd_e[k]), k
    assert all(isinstance(p, nn.Parameter) for p in fast.parameters())
    assert repr(fast).split("(", 1)[1] == repr(ref).split("(", 1)[1]
    # checkpoints load both ways
    other = TORCH_CLS[kind](N_IN, H, **kw)
    other.load_state_dict(fast.state_dict())
    fast.load_state_dict(other.state_dict())
    if kind == "rnn":
        positional = FAST_CLS[kind](N_IN, H, 2, extra["nonlinearity"], False)
        assert positional.nonlinearity == extra["nonlinearity"] and positional.bias is False


def test_convert_and_revert_keep_parameters() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Linear(N_IN, N_IN),
        nn.ModuleDict({"enc": nn.LSTM(N_IN, H, batch_first=True), "dec": nn.GRU(H, H)}),
    )
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    before = {n: p for n, p in model.named_parameters()}
    sd = {k: v.clone() for k, v in model.state_dict().items()}
    assert rt.convert(model) is model
    assert type(model[1]["enc"]) is rt.LSTM and type(model[1]["dec"]) is rt.GRU
    assert model[1]["enc"].batch_first
    assert {n: p for n, p in model.named_parameters()} == before  # the same Parameter objects
    for k, v in model.state_dict().items():
        assert torch.equal(v, sd[k]), k
    x = torch.randn(B, T, N_IN)
    y, _ = model[1]["enc"](model[0](x))
    y.sum().backward()
    opt.step()  # the optimizer made before convert updates the converted modules' weights
    assert not torch.equal(model[1]["enc"].weight_hh_l0, sd["1.enc.weight_hh_l0"])
    assert rt.revert(model) is model
    assert type(model[1]["enc"]) is nn.LSTM and type(model[1]["dec"]) is nn.GRU
    assert {n: p for n, p in model.named_parameters()} == before
    # a bare module is replaced and returned; eval mode is kept
    gru = nn.GRU(N_IN, H, num_layers=2).eval()
    fast = rt.convert(gru)
    assert type(fast) is rt.GRU and not fast.training and fast.num_layers == 2
    assert fast.weight_ih_l1 is gru.weight_ih_l1
    proj = rt.convert(nn.Sequential(nn.LSTM(N_IN, H, proj_size=2)))  # tests/test_lstm_proj.py
    assert type(proj[0]) is rt.LSTM and proj[0].proj_size == 2


def test_errors() -> None:
    gru = rt.GRU(N_IN, H)
    with pytest.raises(RuntimeError, match="CPU only"):
        gru(torch.empty(T, B, N_IN, device="meta"))
    with pytest.raises(TypeError, match="float32 or float64, got torch.float16"):
        gru(torch.zeros(T, B, N_IN, dtype=torch.float16))
    with pytest.raises(ValueError, match=r"input dtype \(torch.float64\) does not match"):
        gru(torch.zeros(T, B, N_IN, dtype=torch.float64))
    with pytest.raises(RuntimeError, match=r"Expected hidden size \(1, 4, 5\), got \[1, 3, 5\]"):
        gru(torch.zeros(T, B, N_IN), torch.zeros(1, 3, H))
    with pytest.raises(RuntimeError, match="input_size. Expected 3, got 2"):
        gru(torch.zeros(T, B, 2))
    with pytest.raises(ValueError, match="proj_size has to be smaller than hidden_size"):
        rt.LSTM(N_IN, H, proj_size=H)
    with pytest.raises(ValueError, match="only supported for LSTM"):
        rt.GRU(N_IN, H, proj_size=2)
    with pytest.raises(TypeError, match="dtype: expected float32 or float64"):
        rt.GRU(N_IN, H, dtype=torch.float16)
    with pytest.warns(UserWarning, match="non-zero dropout expects num_layers greater than 1"):
        rt.GRU(N_IN, H, dropout=0.5)


def test_cache_freed_with_the_graph(monkeypatch: pytest.MonkeyPatch) -> None:
    """Custom-op path: the activation cache behind the handles lives as long as the autograd graph
    (not after backward, not at all without grad); backward twice with retain_graph gives the same
    gradients."""
    monkeypatch.setattr(rt, "EAGER_FAST_PATH", False)
    gru = rt.GRU(N_IN, H, num_layers=2, bidirectional=True)
    x = torch.randn(T, B, N_IN)
    assert len(rt._CACHES) == 0
    with torch.no_grad():
        gru(x)
    assert len(rt._CACHES) == 0
    y, _ = gru(x)
    assert len(rt._CACHES) == 4
    y.sum().backward(retain_graph=True)
    first = gru.weight_hh_l1.grad.clone()
    gru.zero_grad()
    y.sum().backward()
    assert torch.equal(gru.weight_hh_l1.grad, first)
    del y
    assert len(rt._CACHES) == 0


def test_in_place_change_before_backward_is_caught(path: str) -> None:
    """The kernels' cache holds NumPy views of the input and weights: autograd's version check
    refuses a backward after they were modified in place."""
    gru = rt.GRU(N_IN, H)
    y, _ = gru(torch.randn(T, B, N_IN))
    with torch.no_grad():
        gru.weight_hh_l0.mul_(2.0)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        y.sum().backward()


def test_double_backward_is_refused(path: str) -> None:
    """The kernels' backward is not differentiable: a second backward through it is an error, never
    a silently wrong (zero) second derivative."""
    gru = rt.GRU(N_IN, H)
    x = torch.randn(T, B, N_IN, requires_grad=True)
    y, _ = gru(x)
    (gx,) = torch.autograd.grad(y.square().sum(), x, create_graph=True)
    match = "differentiate twice" if path == "eager" else "no autograd formula was registered"
    with pytest.raises(RuntimeError, match=match):
        gx.sum().backward()


def test_backward_recomputes_without_cache() -> None:
    """A handle that leads to no cache: the backward op recomputes the forward, same gradients."""
    g = torch.Generator().manual_seed(0)
    x, h0 = torch.randn(T, B, N_IN, generator=g), torch.randn(B, H, generator=g)
    w = [torch.randn(3 * H, N_IN, generator=g), torch.randn(3 * H, H, generator=g)]
    w += [torch.randn(3 * H, generator=g), torch.randn(3 * H, generator=g)]
    dy, dh = torch.randn(T, B, H, generator=g), torch.randn(B, H, generator=g)
    _, _, handle = torch.ops.rnnfast.gru_forward(x, h0, *w, LENGTHS, True, True)
    args = (x, h0, *w, LENGTHS, True, dy, dh)
    with_cache = torch.ops.rnnfast.gru_backward(handle, *args)
    recomputed = torch.ops.rnnfast.gru_backward(torch.zeros(1, dtype=torch.uint8), *args)
    for a, e in zip(with_cache, recomputed):
        assert torch.equal(a, e)


def test_import_rnnfast_does_not_import_torch() -> None:
    code = "import sys, rnnfast; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


# --------------------------------------------------------------------------------------------------
# training loop
# --------------------------------------------------------------------------------------------------


class _Net(nn.Module):
    def __init__(self, cell: str) -> None:
        super().__init__()
        self.rnn = TORCH_CLS[cell](N_IN, 8, num_layers=2, batch_first=True, dropout=0.2)
        self.head = nn.Linear(8, 1)

    def forward(self, x: Any) -> Any:
        y, _ = self.rnn(x)
        return self.head(y[:, -1])


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("cell", ("gru", "lstm"))
def test_training_trajectory_matches_torch(cell: str, dtype: Any) -> None:
    """20 steps of Adam + clip_grad_norm_ + StepLR (with dropout between layers, same seed)."""
    torch.manual_seed(0)
    ref = _Net(cell).to(dtype)
    fast = rt.convert(copy.deepcopy(ref))
    assert type(fast.rnn) is FAST_CLS[cell]
    g = torch.Generator().manual_seed(1)
    x = torch.randn(16, T, N_IN, generator=g, dtype=dtype)
    target = x.sum(dim=(1, 2)).sin().unsqueeze(1)
    losses = []
    for model in (ref, fast):
        opt = torch.optim.Adam(model.parameters(), lr=0.02)
        sched = torch.optim.lr_scheduler.StepLR(opt, step_size=5, gamma=0.5)
        torch.manual_seed(2)
        run = []
        for _ in range(20):
            opt.zero_grad()
            loss = nn.functional.mse_loss(model(x), target)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 0.5)
            opt.step()
            sched.step()
            run.append(loss.item())
        losses.append(run)
    loss_e, loss_a = np.array(losses[0]), np.array(losses[1])
    assert loss_e[-1] < loss_e[0]
    tol = 1e-10 if dtype == torch.float64 else 1e-4
    err = np.abs(loss_a - loss_e) / np.abs(loss_e)
    assert err.max() <= tol, f"loss trajectory: max rel diff {err.max():.2e} at step {err.argmax()}"
    ptol = 1e-9 if dtype == torch.float64 else 1e-4
    for (name, pa), pe in zip(fast.named_parameters(), ref.parameters()):
        assert_close(pa.detach().double().numpy(), pe.detach().double().numpy(), ptol, name)


# --------------------------------------------------------------------------------------------------
# torch.library, torch.compile, torch.jit, torch.export
# --------------------------------------------------------------------------------------------------


def _op_args(
    cell: str, bias: bool, ragged: bool, reverse: bool
) -> tuple[Any, Any, tuple[Any, ...]]:
    """(forward op, backward op, forward args) with float64 tensors that require grad."""
    kind, extra = _split(cell)
    G = GATES[kind]
    g = torch.Generator().manual_seed(0)

    def r(*shape: int) -> Any:
        return torch.randn(shape, generator=g, dtype=torch.float64).requires_grad_()

    states = (r(B, H), r(B, H)) if kind == "lstm" else (r(B, H),)
    w = (r(G * H, N_IN), r(G * H, H), *((r(G * H), r(G * H)) if bias else (None, None)))
    args = (r(T, B, N_IN), *states, *w, LENGTHS if ragged else None, reverse, True)
    if kind == "rnn":
        args = (*args, extra["nonlinearity"])
    ops = torch.ops.rnnfast
    return getattr(ops, f"{kind}_forward"), getattr(ops, f"{kind}_backward"), args


@pytest.mark.parametrize(
    "cell, bias, ragged, reverse",
    [("gru", True, False, False), ("lstm", False, True, True), ("rnn-relu", True, True, True)],
    ids=["gru-plain", "lstm-nobias-ragged-rev", "rnn-relu-ragged-rev"],
)
def test_opcheck(cell: str, bias: bool, ragged: bool, reverse: bool) -> None:
    fwd, bwd, args = _op_args(cell, bias, ragged, reverse)
    result = torch.library.opcheck(fwd, args)
    assert set(result.values()) == {"SUCCESS"}, result
    # the backward op on the forward's handle: (handle, x, states, weights, lengths, reverse,
    # output grads (, nonlinearity))
    kind, _ = _split(cell)
    ns = 2 if kind == "lstm" else 1
    outs = fwd(*args)
    base = [a.detach() if isinstance(a, torch.Tensor) else a for a in args[: ns + 7]]
    grads = [torch.randn_like(o).detach() for o in outs[: 1 + ns]]
    bargs = (outs[-1], *base, *grads, *(args[-1:] if kind == "rnn" else ()))
    result = torch.library.opcheck(bwd, bargs)
    assert set(result.values()) == {"SUCCESS"}, result


@pytest.mark.parametrize("cell", CELLS)
def test_dynamo_no_graph_break(cell: str) -> None:
    kind, extra = _split(cell)
    mod = FAST_CLS[kind](N_IN, H, num_layers=2, bidirectional=True, batch_first=True, **extra)
    x = torch.randn(B, T, N_IN, requires_grad=True)
    explanation = torch._dynamo.explain(mod)(x)
    assert explanation.graph_break_count == 0, explanation.break_reasons
    assert explanation.graph_count == 1
    torch._dynamo.reset()


@pytest.mark.filterwarnings(
    # inductor imports torch.utils.mkldnn, which uses the deprecated torch.jit.script_method
    "ignore:`torch.jit.script_method` is deprecated:DeprecationWarning"
)
def test_torch_compile_fullgraph() -> None:
    """The one inductor compile of this file (tens of seconds on a loaded 2-core machine; the other
    compile checks use dynamo's explain): an LSTM feeding a bidirectional GRU; outputs and gradients equal to eager. (nn.LSTM itself breaks the graph: pytorch #158007.)"""

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lstm = rt.LSTM(N_IN, H, batch_first=True)
            self.gru = rt.GRU(H, H, bidirectional=True, batch_first=True)

        def forward(self, x: Any) -> Any:
            y, _ = self.lstm(x)
            y, h = self.gru(y)
            return y[:, -1].sum(dim=1) * h.sum()

    torch.manual_seed(0)
    net = Net().double()
    x = torch.randn(B, T, N_IN, dtype=torch.float64)
    compiled = torch.compile(net, fullgraph=True)
    try:
        results = []
        for model in (net, compiled):
            net.zero_grad()
            out = model(x)
            out.square().sum().backward()
            results.append((out.detach(), [p.grad.clone() for p in net.parameters()]))
    finally:
        torch._dynamo.reset()
    (out_e, grads_e), (out_a, grads_a) = results
    _check("compile", torch.float64, "out", "output", out_a, out_e)
    for (name, _), a, e in zip(net.named_parameters(), grads_a, grads_e):
        _check("compile", torch.float64, "grad", name, a, e)


@pytest.mark.filterwarnings(
    # torch 2.13 deprecates torch.jit.trace (it still works: this test shows it)
    r"ignore:`torch\.jit\.trace(_method)?` is deprecated:DeprecationWarning"
)
@pytest.mark.filterwarnings(
    # the module's shape checks compare Python ints taken from the traced input (constant in the
    # trace, as intended: a traced module is specialised to its sizes' checks only)
    "ignore:Converting a tensor to a Python boolean:torch.jit.TracerWarning"
)
def test_jit_trace() -> None:
    torch.manual_seed(0)
    gru = rt.GRU(N_IN, H, num_layers=2, batch_first=True)
    x = torch.randn(B, T, N_IN)
    traced = torch.jit.trace(gru, (x,), check_trace=False)
    x2 = torch.randn(B + 1, T + 2, N_IN, requires_grad=True)
    out_a, h_a = traced(x2)
    out_e, h_e = gru(x2)
    assert torch.equal(out_a, out_e) and torch.equal(h_a, h_e)
    (ga,) = torch.autograd.grad(out_a.sum(), x2)
    (ge,) = torch.autograd.grad(out_e.sum(), x2)
    assert torch.equal(ga, ge)


def test_torch_export() -> None:
    torch.manual_seed(0)
    lstm = rt.LSTM(N_IN, H, num_layers=2, bidirectional=True, batch_first=True).eval()
    x = torch.randn(B, T, N_IN)
    with torch.no_grad():
        program = torch.export.export(lstm, (x,))
        assert "torch.ops.rnnfast.lstm_forward.default" in program.graph_module.code
        out_a, (h_a, c_a) = program.module()(x)
        out_e, (h_e, c_e) = lstm(x)
    assert torch.equal(out_a, out_e) and torch.equal(h_a, h_e) and torch.equal(c_a, c_e)
