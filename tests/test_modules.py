"""Tests of rnnfast.modules: stacks vs an independent composition of reference kernels, finite
differences, PyTorch layout/parity, state_dict strictness, eval/step/streaming, SequenceModel modes.

The modules run on rnnfast.functional (the compiled core). While the core in this checkout lacks the
kernels (it is being written), the autouse fixture falls back to rnnfast.reference so the module
logic is still tested; the oracle side of every comparison is always rnnfast.reference.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import rnnfast.modules as M
import rnnfast.reference as R
from helpers import assert_close, central_difference
from rnnfast._cells import get_cell

__all__: list[str] = []


def _functional_works() -> bool:
    try:
        from rnnfast import functional as F

        F.rnn_forward(np.zeros((1, 1, 1)), None, np.zeros((1, 1)), np.zeros((1, 1)), None, None)
        return True
    except Exception:
        return False


FUNCTIONAL = _functional_works()
# tolerance of module (functional backend) vs reference in float64
TOL64 = 1e-10


@pytest.fixture(autouse=True)
def _backend() -> Any:
    M.set_backend(None if FUNCTIONAL else R)
    yield
    M.set_backend(None)


CLASSES = {"rnn": M.RNN, "lstm": M.LSTM, "gru": M.GRU}


def make(cell: str, nonlin: str = "tanh", **kw: Any) -> M.RNNBase:
    if cell == "rnn":
        kw["nonlinearity"] = nonlin
    kw.setdefault("dtype", np.float64)
    kw.setdefault("seed", 0)
    return CLASSES[cell](**kw)


# --------------------------------------------------------------------------------------------------
# independent oracle: a stack composed by hand from reference kernels, reversing with Python slices
# --------------------------------------------------------------------------------------------------


def ref_stack(
    cell: str,
    nonlin: str,
    params: dict[str, np.ndarray],
    x: np.ndarray,
    hx: Any,
    lengths: np.ndarray | None,
    num_layers: int,
    bidir: bool,
    g_out: np.ndarray,
    g_state: Any,
) -> tuple[np.ndarray, Any, np.ndarray, dict[str, np.ndarray]]:
    """(out, h_n, dx, grads) of a stack, time-major, float64; loss = <out, g_out> + <h_n, g_state>."""
    t_steps, batch, _ = x.shape
    D = 2 if bidir else 1
    lens = np.full(batch, t_steps) if lengths is None else lengths

    def rev(a: np.ndarray) -> np.ndarray:  # per-sequence reversal within its valid length
        out = a.copy()
        for b in range(batch):
            out[: lens[b], b] = a[: lens[b], b][::-1]
        return out

    def w(layer: int, d: int) -> list[np.ndarray | None]:
        sfx = f"_l{layer}" + ("_reverse" if d else "")
        return [
            params[f"weight_ih{sfx}"],
            params[f"weight_hh{sfx}"],
            params.get(f"bias_ih{sfx}"),
            params.get(f"bias_hh{sfx}"),
        ]

    def st(i: int, s: Any) -> Any:
        if s is None:
            return None
        return (s[0][i], s[1][i]) if get_cell(cell).has_cell_state else s[i]

    caches, finals, inp, inputs = [], [], x, []
    for layer in range(num_layers):
        inputs.append(inp)
        ys = []
        for d in range(D):
            xi = inp if d == 0 else rev(inp)
            s0 = st(layer * D + d, hx)
            if get_cell(cell).has_cell_state:
                y, h, c, cache = R.lstm_forward(
                    xi, s0[0] if s0 else None, s0[1] if s0 else None, *w(layer, d), lengths=lengths
                )
                finals.append((h, c))
            elif cell == "rnn":
                y, h, cache = R.rnn_forward(
                    xi, s0, *w(layer, d), nonlinearity=nonlin, lengths=lengths
                )
                finals.append(h)
            else:
                y, h, cache = R.gru_forward(xi, s0, *w(layer, d), lengths=lengths)
                finals.append(h)
            ys.append(y if d == 0 else rev(y))
            caches.append(cache)
        inp = np.concatenate(ys, axis=2)
    out = inp
    grads: dict[str, np.ndarray] = {}
    dy = g_out
    H = out.shape[2] // D
    for layer in reversed(range(num_layers)):
        dx = np.zeros_like(inputs[layer])
        for d in range(D):
            dyd = dy[:, :, d * H : (d + 1) * H]
            if d:
                dyd = rev(dyd)
            gs = st(layer * D + d, g_state)
            cache = caches[layer * D + d]
            if get_cell(cell).has_cell_state:
                g = R.lstm_backward(cache, dyd, gs[0] if gs else None, gs[1] if gs else None)
            else:
                g = getattr(R, f"{cell}_backward")(cache, dyd, gs)
            sfx = f"_l{layer}" + ("_reverse" if d else "")
            grads[f"weight_ih{sfx}"] = g["w_ih"]
            grads[f"weight_hh{sfx}"] = g["w_hh"]
            if g["b_ih"] is not None:
                grads[f"bias_ih{sfx}"] = g["b_ih"]
                grads[f"bias_hh{sfx}"] = g["b_hh"]
            dx += g["x"] if d == 0 else rev(g["x"])
        dy = dx
    if get_cell(cell).has_cell_state:
        h_n = (np.stack([f[0] for f in finals]), np.stack([f[1] for f in finals]))
    else:
        h_n = np.stack(finals)
    return out, h_n, dy, grads


CASES = [
    # cell, nonlin, layers, bidir, batch_first, ragged, bias
    ("rnn", "tanh", 2, True, False, True, True),
    ("rnn", "relu", 1, False, True, False, False),
    ("lstm", "tanh", 2, True, True, True, True),
    ("lstm", "tanh", 3, False, False, True, False),
    ("gru", "tanh", 2, True, False, True, True),
    ("gru", "tanh", 1, False, True, True, True),
]


@pytest.mark.parametrize("cell,nonlin,layers,bidir,bf,ragged,bias", CASES)
def test_stack_matches_reference_composition(
    cell: str, nonlin: str, layers: int, bidir: bool, bf: bool, ragged: bool, bias: bool
) -> None:
    T, B, I, H = 5, 3, 4, 3
    m = make(
        cell,
        nonlin,
        input_size=I,
        hidden_size=H,
        num_layers=layers,
        bidirectional=bidir,
        batch_first=bf,
        bias=bias,
    )
    rng = np.random.default_rng(1)
    x = rng.standard_normal((T, B, I))
    lengths = np.array([5, 2, 0]) if ragged else None
    n = layers * (2 if bidir else 1)
    hx: Any = rng.standard_normal((n, B, H)) * 0.5
    if get_cell(cell).has_cell_state:
        hx = (hx, rng.standard_normal((n, B, H)) * 0.5)
    g_out = rng.standard_normal((T, B, H * (2 if bidir else 1)))
    if ragged:
        g_out[np.arange(T)[:, None] >= lengths[None, :]] = 0.0  # padded outputs are constants (0)
    g_state: Any = rng.standard_normal((n, B, H))
    if get_cell(cell).has_cell_state:
        g_state = (g_state, rng.standard_normal((n, B, H)))
    e_out, e_hn, e_dx, e_grads = ref_stack(
        cell, nonlin, m.state_dict(), x, hx, lengths, layers, bidir, g_out, g_state
    )
    xin = x.transpose(1, 0, 2) if bf else x
    out, h_n = m(xin, hx, lengths)
    if bf:
        out = out.transpose(1, 0, 2)
    assert_close(out, e_out, TOL64, "out")
    for j, (a, e) in enumerate(
        zip(
            h_n if get_cell(cell).has_cell_state else (h_n,),
            e_hn if get_cell(cell).has_cell_state else (e_hn,),
        )
    ):
        assert_close(a, e, TOL64, f"h_n[{j}]")
    dx = m.backward(g_out.transpose(1, 0, 2) if bf else g_out, g_state)
    assert_close(dx.transpose(1, 0, 2) if bf else dx, e_dx, TOL64, "dx")
    assert set(m.grads) == set(e_grads)
    for k in e_grads:
        assert_close(m.grads[k], e_grads[k], TOL64, f"grad {k}")
    # grads accumulate until zero_grad, like PyTorch
    m(xin, hx, lengths)
    m.backward(g_out.transpose(1, 0, 2) if bf else g_out, g_state)
    for k in e_grads:
        assert_close(m.grads[k], 2 * e_grads[k], TOL64, f"accumulated grad {k}")
    m.zero_grad()
    assert all(not g.any() for g in m.grads.values())


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_module_gradients_vs_finite_differences(cell: str) -> None:
    """Every parameter and the input, 2-layer bidirectional ragged stack with dropout (fixed masks)."""
    T, B, I, H = 3, 2, 2, 2
    m = make(cell, input_size=I, hidden_size=H, num_layers=2, bidirectional=True, dropout=0.3)
    rng = np.random.default_rng(3)
    x = rng.standard_normal((T, B, I))
    lengths = np.array([3, 2])
    g_out = rng.standard_normal((T, B, 2 * H))
    g_out[2, 1] = 0.0
    g_h = rng.standard_normal((4, B, H))

    def loss() -> float:
        m.rng = np.random.default_rng(11)  # the same dropout masks at every evaluation
        out, h_n = m(x, None, lengths)
        h = h_n[0] if get_cell(cell).has_cell_state else h_n
        return float(np.sum(out * g_out) + np.sum(h * g_h))

    loss()
    m.zero_grad()
    dx = m.backward(g_out, (g_h, None) if get_cell(cell).has_cell_state else g_h)
    grads = {k: v.copy() for k, v in m.grads.items()}
    m.eval()  # FD evaluations need no cache; training-mode dropout is kept by passing train again
    m.train()
    assert_close(dx, central_difference(loss, x, 1e-6), 1e-6, "dx vs FD")
    for k, p in m.parameters().items():
        assert_close(grads[k], central_difference(loss, p, 1e-6), 1e-6, f"d{k} vs FD")


def test_dropout_inverted_training_only() -> None:
    m = make("gru", input_size=3, hidden_size=50, num_layers=2, dropout=0.5)
    x = np.random.default_rng(0).standard_normal((4, 8, 3))
    a, _ = m(x)
    b, _ = m(x)
    assert not np.array_equal(a, b), "training-mode dropout should draw fresh masks"
    m.eval()
    c, _ = m(x)
    d, _ = m(x)
    assert np.array_equal(c, d)
    m0 = make("gru", input_size=3, hidden_size=50, num_layers=2, dropout=0.0)
    e, _ = m0(x)
    assert np.array_equal(c, e), "eval mode must not apply dropout"


def test_torch_layout_and_parity() -> None:
    torch = pytest.importorskip("torch")
    for cell, name in (("rnn", "RNN"), ("lstm", "LSTM"), ("gru", "GRU")):
        m = make(cell, input_size=3, hidden_size=4, num_layers=2, bidirectional=True)
        t = getattr(torch.nn, name)(3, 4, num_layers=2, bidirectional=True).double()
        assert list(m.state_dict()) == [k for k, _ in t.named_parameters()]
        assert {k: v.shape for k, v in m.state_dict().items()} == {
            k: tuple(v.shape) for k, v in t.state_dict().items()
        }
        m.load_state_dict(t.state_dict())  # torch tensors accepted directly (via __array__)
        x = np.random.default_rng(0).standard_normal((5, 3, 3))
        lengths = np.array([5, 2, 4])
        out, _ = m(x, lengths=lengths)
        pk = torch.nn.utils.rnn.pack_padded_sequence(
            torch.tensor(x), torch.tensor(lengths), enforce_sorted=False
        )
        o, _ = t(pk)
        o, _ = torch.nn.utils.rnn.pad_packed_sequence(o, total_length=5)
        assert_close(out, o.detach().numpy(), 1e-12, f"{name} out vs torch")


def test_state_dict_roundtrip_and_strictness() -> None:
    a = make("lstm", input_size=3, hidden_size=4, num_layers=2, seed=1)
    b = make("lstm", input_size=3, hidden_size=4, num_layers=2, seed=2)
    live = b.parameters()["weight_hh_l1"]
    b.load_state_dict(a.state_dict())
    assert b.parameters()["weight_hh_l1"] is live, (
        "load must copy into the live arrays (optimizer refs)"
    )
    for k, v in a.state_dict().items():
        assert np.array_equal(b.state_dict()[k], v)
    sd = a.state_dict()
    del sd["bias_hh_l1"]
    with pytest.raises(ValueError, match="bias_hh_l1"):
        b.load_state_dict(sd)
    sd = a.state_dict()
    sd["weight_hh_l9"] = np.zeros((16, 4))
    with pytest.raises(ValueError, match="weight_hh_l9"):
        b.load_state_dict(sd)
    sd = a.state_dict()
    sd["weight_ih_l0"] = np.zeros((16, 2))
    before = b.state_dict()
    with pytest.raises(ValueError, match=r"weight_ih_l0.*\(16, 3\).*\(16, 2\)"):
        b.load_state_dict(sd)
    assert all(np.array_equal(before[k], v) for k, v in b.state_dict().items()), (
        "failed load changed weights"
    )
    sd = a.state_dict()
    del sd["bias_ih_l0"]
    missing, unexpected = b.load_state_dict(sd, strict=False)
    assert missing == ["bias_ih_l0"] and unexpected == []

    class Wrapped:  # anything with __array__
        def __init__(self, v: np.ndarray) -> None:
            self.v = v

        def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
            return self.v

    b.load_state_dict({k: Wrapped(v * 2) for k, v in a.state_dict().items()})
    assert np.array_equal(b.parameters()["weight_ih_l0"], 2 * a.parameters()["weight_ih_l0"])


@pytest.mark.parametrize("src", [np.float16, np.float32, np.float64, np.longdouble])
@pytest.mark.parametrize("dst", [np.float32, np.float64])
def test_load_state_dict_casts_floating_arrays(src: Any, dst: Any) -> None:
    """Every floating dtype loads, rounded to the module dtype as NumPy's cast rounds it."""
    a = make("gru", input_size=3, hidden_size=2, num_layers=2, dtype=np.float64, seed=1)
    b = make("gru", input_size=3, hidden_size=2, num_layers=2, dtype=dst, seed=2)
    sd = {k: v.astype(src) for k, v in a.state_dict().items()}
    b.load_state_dict(sd)
    for k, v in b.state_dict().items():
        assert v.dtype == np.dtype(dst), k
        np.testing.assert_array_equal(v, sd[k].astype(dst), err_msg=k)


NON_FLOATING = {
    "int64": lambda v: v.astype(np.int64),
    "int8": lambda v: v.astype(np.int8),
    "uint32": lambda v: np.abs(v).astype(np.uint32),
    "bool": lambda v: v > 0,
    "complex64": lambda v: v.astype(np.complex64),
    "complex128_real_values": lambda v: v + 0j,
    "object": lambda v: v.astype(object),
    "int_list": lambda v: np.rint(v).astype(int).tolist(),
}


@pytest.mark.parametrize("case", list(NON_FLOATING))
@pytest.mark.parametrize("kind", ["lstm", "Linear", "Embedding", "SequenceModel"])
def test_load_state_dict_rejects_non_floating_dtypes(kind: str, case: str) -> None:
    """Non-floating values are refused (no silent unsafe cast), naming the key and the dtype."""
    if kind == "Linear":
        m: Any = M.Linear(3, 4, dtype=np.float32, seed=0)
    elif kind == "Embedding":
        m = M.Embedding(5, 3, dtype=np.float32, seed=0)
    elif kind == "SequenceModel":
        m = M.build_model("lstm", 3, 4, 1, mode="many_to_one", dtype=np.float32, seed=0)
    else:
        m = make("lstm", input_size=3, hidden_size=4, dtype=np.float32)
    before = m.state_dict()
    key = list(before)[-1]
    sd = {**before, key: NON_FLOATING[case](before[key] * 3)}
    with pytest.raises(TypeError, match=rf"state_dict\['{key}'\].*floating.*float32.*got dtype"):
        m.load_state_dict(sd)
    for k, v in m.state_dict().items():
        np.testing.assert_array_equal(v, before[k], err_msg=f"a rejected load changed {k}")


@pytest.mark.parametrize(
    "value,dtype,match",
    [
        (1e300, np.float32, r"value 1e\+300 at index \(1, 2\) overflows float32"),
        (-3.5e38, np.float32, r"value -3\.5e\+38 at index \(1, 2\) overflows float32"),
        (np.nan, np.float64, r"non-finite value nan at index \(1, 2\)"),
        (np.inf, np.float32, r"non-finite value inf at index \(1, 2\)"),
        (-np.inf, np.float64, r"non-finite value -inf at index \(1, 2\)"),
    ],
)
def test_load_state_dict_rejects_non_finite_after_cast(
    value: float, dtype: Any, match: str
) -> None:
    m = make("rnn", input_size=3, hidden_size=2, num_layers=2, dtype=dtype)
    before = m.state_dict()
    sd = {k: v.astype(np.float64) for k, v in before.items()}
    sd["weight_ih_l0"][1, 2] = value
    with pytest.raises(ValueError, match=rf"state_dict\['weight_ih_l0'\]: {match}"):
        m.load_state_dict(sd)
    for k, v in m.state_dict().items():
        np.testing.assert_array_equal(v, before[k], err_msg=f"a rejected load changed {k}")


def test_load_state_dict_float32_extremes_still_load() -> None:
    """Values at the edge of float32's range are finite after the cast, so they load."""
    m = M.Linear(2, 1, dtype=np.float32, seed=0)
    big = float(np.finfo(np.float32).max)
    m.load_state_dict({"weight": np.array([[big, -big]]), "bias": np.array([1e-45])})
    assert m.parameters()["weight"].tolist() == [[big, -big]]
    assert m.parameters()["bias"][0] == np.float32(1e-45)


def test_load_state_dict_unconvertible_value_names_the_key() -> None:
    m = M.Linear(2, 2, dtype=np.float64, seed=0)
    with pytest.raises(TypeError, match=r"state_dict\['weight'\]: cannot convert list"):
        m.load_state_dict({"weight": [[1.0, 2.0], [3.0]], "bias": np.zeros(2)})


def test_eval_stores_nothing_and_backward_once() -> None:
    m = make("gru", input_size=2, hidden_size=3)
    x = np.ones((4, 2, 2))
    m.eval()
    out, _ = m(x)
    assert m._cache is None
    with pytest.raises(ValueError, match="no stored forward pass"):
        m.backward(np.ones_like(out))
    m.train()
    out, _ = m(x)
    m.backward(np.ones_like(out))
    with pytest.raises(ValueError, match="no stored forward pass"):
        m.backward(np.ones_like(out))
    seq = M.build_model("lstm", 2, 3, 1, mode="many_to_one", dtype=np.float64, seed=0)
    seq.eval()
    seq(x)
    with pytest.raises(ValueError):
        seq.backward(np.ones((2, 1)))


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_step_equals_forward(cell: str) -> None:
    m = make(cell, input_size=3, hidden_size=4, num_layers=2)
    x = np.random.default_rng(0).standard_normal((6, 2, 3))
    m.eval()
    out, h_n = m(x)
    state = None
    for t in range(6):
        o, state = m.step(x[t], state)
        assert_close(o, out[t], 1e-12, f"step {t} output")
    for a, e in zip(
        state if get_cell(cell).has_cell_state else (state,),
        h_n if get_cell(cell).has_cell_state else (h_n,),
    ):
        assert_close(a, e, 1e-12, "final state")
    with pytest.raises(ValueError, match="bidirectional"):
        make(cell, input_size=3, hidden_size=4, bidirectional=True).step(x[0])


def test_many_to_one_last_valid_step_by_hand() -> None:
    """H = I = 1 tanh RNN with known weights; the head sees h at step lengths[b] - 1."""
    rnn = M.RNN(1, 1, dtype=np.float64)
    rnn.load_state_dict(
        {
            "weight_ih_l0": [[0.5]],
            "weight_hh_l0": [[-0.8]],
            "bias_ih_l0": [0.1],
            "bias_hh_l0": [0.0],
        }
    )
    head = M.Linear(1, 1, dtype=np.float64)
    head.load_state_dict({"weight": [[2.0]], "bias": [-1.0]})
    model = M.SequenceModel(rnn, head, mode="many_to_one")
    x = np.array([[1.0, 2.0, -1.0], [0.5, 1.0, 0.0], [-2.0, 0.0, 0.0], [1.0, 0.0, 0.0]])[:, :, None]
    lengths = np.array([4, 2, 1])
    pred = model(x, lengths=lengths)
    expected = []
    for b in range(3):
        h = 0.0
        for t in range(lengths[b]):
            h = np.tanh(0.5 * x[t, b, 0] + 0.1 - 0.8 * h)
        expected.append(2.0 * h - 1.0)
    assert_close(pred[:, 0], np.array(expected), 1e-14, "many_to_one prediction")
    # gradient wrt the last valid input of sequence 1 only flows from step 1 back
    dx = model.backward(np.ones((3, 1)))
    assert np.all(dx[2:, 1] == 0) and np.all(dx[1:, 2] == 0) and dx[1, 1, 0] != 0


def test_sequence_model_modes_and_backward_vs_fd() -> None:
    rng = np.random.default_rng(0)
    for mode, x, gshape in (
        ("many_to_many", rng.standard_normal((4, 2, 3)), (4, 2, 2)),
        ("many_to_one", rng.standard_normal((4, 2, 3)), (2, 2)),
        ("one_to_one", rng.standard_normal((2, 3)), (2, 2)),
    ):
        for bidir in (False, True):
            model = M.build_model(
                "gru", 3, 3, 2, mode=mode, dtype=np.float64, seed=4, bidirectional=bidir
            )
            g = rng.standard_normal(gshape)
            pred = model(x, lengths=np.array([4, 2]) if mode != "one_to_one" else None)
            assert pred.shape == gshape
            model.zero_grad()
            dx = model.backward(g)
            grads = {k: v.copy() for k, v in model.grads.items()}

            def loss() -> float:
                return float(
                    np.sum(model(x, lengths=np.array([4, 2]) if mode != "one_to_one" else None) * g)
                )

            assert_close(dx, central_difference(loss, x, 1e-6), 1e-6, f"{mode} bidir={bidir} dx")
            for k in ("rnn.weight_hh_l0", "head.weight", "head.bias"):
                assert_close(
                    grads[k],
                    central_difference(loss, model.parameters()[k], 1e-6),
                    1e-6,
                    f"{mode} bidir={bidir} {k}",
                )


def test_embedding_model_and_generate() -> None:
    model = M.build_model(
        "lstm",
        0,
        8,
        5,
        mode="many_to_many",
        vocab_size=5,
        embedding_dim=4,
        dtype=np.float64,
        seed=0,
    )
    ids = np.random.default_rng(0).integers(0, 5, (6, 3))
    pred = model(ids)
    assert pred.shape == (6, 3, 5)
    model.zero_grad()
    assert model.backward(np.ones_like(pred)) is None
    assert model.grads["embedding.weight"].any()
    model.eval()
    gen = model.generate(ids[0], 5, sample=False)
    assert gen.shape == (5, 3) and gen.dtype == np.int64
    # greedy generation equals feeding the argmax chain through a full forward pass
    chain = np.concatenate([ids[:1], gen[:-1]], axis=0)
    assert np.array_equal(np.argmax(model(chain), axis=2), gen)
    s1 = model.generate(ids[0], 5, rng=np.random.default_rng(1))
    s2 = model.generate(ids[0], 5, rng=np.random.default_rng(1))
    assert np.array_equal(s1, s2)
    reg = M.build_model("rnn", 2, 4, 2, mode="one_to_many", dtype=np.float64, seed=0)
    vals = reg.generate(np.ones((2, 2)), 3)
    assert vals.shape == (3, 2, 2)


def test_save_load_identical_outputs(tmp_path: Any) -> None:
    from rnnfast import io

    model = M.build_model(
        "gru", 3, 5, 2, mode="many_to_many", num_layers=2, seed=7, dropout=0.2, bidirectional=True
    )
    x = np.random.default_rng(0).standard_normal((4, 2, 3)).astype(np.float32)
    model.eval()
    before = model(x)
    io.save(tmp_path / "m.npz", model)
    loaded = io.load(tmp_path / "m.npz").build_model()
    assert isinstance(loaded, M.SequenceModel)
    loaded.eval()
    assert np.array_equal(loaded(x), before)
    again = M.model_from_config(model.config())
    assert all(np.array_equal(again.parameters()[k], v) for k, v in model.parameters().items()), (
        "same config and seed must give the same initial weights"
    )


def test_init_presets() -> None:
    H = 6
    o = M.LSTM(3, H, init="orthogonal", dtype=np.float64, seed=0)
    w = o.parameters()["weight_hh_l0"]
    for g in range(4):
        blk = w[g * H : (g + 1) * H]
        assert_close(blk.T @ blk, np.eye(H), 1e-12, f"orthogonal block {g}")
    b = o.parameters()["bias_ih_l0"]
    assert (
        np.all(b[H : 2 * H] == 1.0)
        and np.all(b[:H] == 0)
        and np.all(o.parameters()["bias_hh_l0"] == 0)
    )
    a = np.sqrt(6.0 / (3 + H))
    assert np.abs(o.parameters()["weight_ih_l0"]).max() <= a
    irnn = M.RNN(3, H, nonlinearity="relu", init="identity", dtype=np.float64, seed=0)
    assert np.array_equal(irnn.parameters()["weight_hh_l0"], np.eye(H))
    assert not irnn.parameters()["bias_ih_l0"].any()
    t = M.GRU(3, H, init="torch", seed=0)
    k = 1 / np.sqrt(H)
    assert all(np.abs(v).max() <= k for v in t.parameters().values())
    assert all(v.dtype == np.float32 for v in t.parameters().values())
    with pytest.raises(ValueError, match="init"):
        M.RNN(3, H, init="xavier")


def test_bad_arguments_name_the_argument() -> None:
    m = make("lstm", input_size=3, hidden_size=4, num_layers=2)
    with pytest.raises(ValueError, match="x"):
        m(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="input size 3"):
        m(np.zeros((2, 2, 5)))
    with pytest.raises(ValueError, match=r"hx\[0\].*\(2, 2, 4\)"):
        m(np.zeros((2, 2, 3)), (np.zeros((1, 2, 4)), np.zeros((2, 2, 4))))
    with pytest.raises(TypeError, match="hx"):
        m(np.zeros((2, 2, 3)), np.zeros((2, 2, 4)))
    with pytest.raises(ValueError, match="lengths"):
        m(np.zeros((2, 2, 3)), lengths=np.array([3, 1]))
    with pytest.raises(TypeError, match="x"):
        m(np.zeros((2, 2, 3), dtype=np.complex128))
    with pytest.raises(ValueError, match="dropout"):
        M.GRU(3, 4, dropout=1.0)
    with pytest.raises(ValueError, match="nonlinearity"):
        M.GRU(3, 4).__class__.__mro__[1](3, 4, nonlinearity="sigmoid")
    with pytest.raises(ValueError, match="head"):
        M.SequenceModel(M.GRU(3, 4), M.Linear(5, 1))


# --------------------------------------------------------------------------------------------------
# truncated BPTT streams
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "cell,k1,k2", [("rnn", 2, 3), ("lstm", 3, 5), ("gru", 2, 2), ("lstm", 1, 4)]
)
def test_stream_matches_reference_tbptt_grads(cell: str, k1: int, k2: int) -> None:
    T, B, I, H = 9, 2, 3, 4
    m = make(cell, input_size=I, hidden_size=H)
    rng = np.random.default_rng(5)
    x = rng.standard_normal((T, B, I))
    dy = rng.standard_normal((T, B, H))
    p = m.parameters()
    expected = R.tbptt_grads(
        cell,
        x,
        (None, None) if get_cell(cell).has_cell_state else None,
        {
            "w_ih": p["weight_ih_l0"],
            "w_hh": p["weight_hh_l0"],
            "b_ih": p["bias_ih_l0"],
            "b_hh": p["bias_hh_l0"],
        },
        dy,
        k1,
        k2,
    )
    m.stream_begin(B, k1, k2, total_steps=T)
    y_full, _ = m(x)
    m._cache = None
    for n, start in enumerate(range(0, T, k1)):
        m.zero_grad()
        y = m.stream_forward(x[start : start + k1])
        assert_close(y, y_full[start : start + k1], 1e-12, f"chunk {n} outputs")
        m.stream_backward(dy[start : start + k1])
        for key, name in (
            ("w_ih", "weight_ih_l0"),
            ("w_hh", "weight_hh_l0"),
            ("b_ih", "bias_ih_l0"),
        ):
            assert_close(m.grads[name], expected[n][key], 1e-10, f"update {n} {key}")


def test_stream_multilayer_full_window_equals_bptt() -> None:
    """k1 = k2 = T in one chunk is plain BPTT; 2 chunks with k2 >= T match the BPTT of the chunk losses."""
    T, B = 6, 2
    m = make("lstm", input_size=2, hidden_size=3, num_layers=3)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((T, B, 2))
    dy = rng.standard_normal((T, B, 3))
    dy1 = dy.copy()
    dy1[:3] = 0.0
    m(x)
    m.backward(dy1)
    expected = {k: v.copy() for k, v in m.grads.items()}
    m.zero_grad()
    m.stream_begin(B, 3, T)
    m.stream_forward(x[:3])
    m.stream_backward(dy[:3])
    m.zero_grad()
    m.stream_forward(x[3:])
    dxw = m.stream_backward(dy[3:])
    assert dxw.shape == (T, B, 2)
    for k, v in expected.items():
        assert_close(m.grads[k], v, 1e-10, f"window grad {k}")


def test_stream_rejects_bidirectional_and_reset() -> None:
    with pytest.raises(ValueError, match="bidirectional"):
        make("gru", input_size=2, hidden_size=3, bidirectional=True).stream_begin(2, 2, 4)
    m = make("gru", input_size=2, hidden_size=3)
    m.stream_begin(2, 2, 4)
    m.stream_forward(np.ones((2, 2, 2)))
    m.stream_reset([1])
    st = m.stream_state
    assert not st[:, 1].any() and st[:, 0].any()


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_stream_dropout_masks_consistent_over_the_window(cell: str) -> None:
    """3 layers, dropout, k1 < k2, frozen weights: each window's gradient equals BPTT over the window
    [s, e] from the state entering s, with the very masks the chunks used in their forward pass."""
    T, B, I, H, k1, k2 = 10, 2, 3, 4, 2, 5
    m = make(cell, input_size=I, hidden_size=H, num_layers=3, dropout=0.4)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((T, B, I))
    dy = rng.standard_normal((T, B, H))
    m.stream_begin(B, k1, k2)
    masks: list[list[Any]] = []  # per chunk, per layer
    for start in range(0, T, k1):
        m.zero_grad()
        m.stream_forward(x[start : start + k1])
        st = m._stream
        assert st is not None
        masks.append(st.chunks[-1].masks)
        m.stream_backward(dy[start : start + k1])
        got = {k: v.copy() for k, v in m.grads.items()}
        e = start + k1
        s = max(0, e - k2)
        full = [None] + [np.concatenate([c[lay] for c in masks]) for lay in (1, 2)]
        ref = make(cell, input_size=I, hidden_size=H, num_layers=3, dropout=0.4)
        ref.load_state_dict(m.state_dict())
        _, states, _ = (
            ref._run(x[:s], [None] * 3, None, True, [None if f is None else f[:s] for f in full])
            if s > 0
            else (None, [None] * 3, None)
        )
        _, _, cache = ref._run(
            x[s:e], states, None, True, [None if f is None else f[s:e] for f in full]
        )
        dyw = np.zeros((e - s, B, H))
        dyw[-k1:] = dy[start:e]
        ref.zero_grad()
        ref._backward_time_major(cache, dyw, [None] * 3)
        for k, v in ref.grads.items():
            assert_close(got[k], v, 1e-10, f"{cell} window [{s}, {e}) {k}")
    m.stream_end()


def test_stream_per_row_reset_keeps_other_rows_history() -> None:
    """reset rows=[1] at step 6 with k1=3 < k2=7 (frozen weights): row 1's later windows start at the
    reset (zero state, no gradient into the old sequence); rows 0 and 2 keep their history. Weight
    gradients are sums over rows, so the expected update is tbptt_grads on rows {0, 2} over the whole
    stream plus tbptt_grads on row 1 from step 6."""
    T, B, I, H, k1, k2, P = 12, 3, 2, 4, 3, 7, 6
    m = make("lstm", input_size=I, hidden_size=H)
    rng = np.random.default_rng(2)
    x = rng.standard_normal((T, B, I))
    dy = rng.standard_normal((T, B, H))
    p = m.parameters()
    w = {
        "w_ih": p["weight_ih_l0"],
        "w_hh": p["weight_hh_l0"],
        "b_ih": p["bias_ih_l0"],
        "b_hh": p["bias_hh_l0"],
    }
    keep = [0, 2]
    exp_keep = R.tbptt_grads("lstm", x[:, keep], (None, None), w, dy[:, keep], k1, k2)
    exp_row = R.tbptt_grads("lstm", x[P:, [1]], (None, None), w, dy[P:, [1]], k1, k2)
    m.stream_begin(B, k1, k2)
    for n, start in enumerate(range(0, T, k1)):
        if start == P:
            m.stream_reset([1])
            st = m.stream_state
            assert not st[0][:, 1].any() and not st[1][:, 1].any() and st[0][:, 0].any()
        m.zero_grad()
        m.stream_forward(x[start : start + k1])
        m.stream_backward(dy[start : start + k1])
        if start < P:
            continue
        for key, name in (("w_ih", "weight_ih_l0"), ("w_hh", "weight_hh_l0")):
            e = exp_keep[n][key] + exp_row[n - P // k1][key]
            assert_close(m.grads[name], e, 1e-10, f"update {n} {key}")


def test_stream_memory_is_flat_in_stream_length() -> None:
    """The Python side of a (replayable, dropout) stream holds O(k1 + k2) steps: its arrays, and the
    traced NumPy memory, are the same after 30 and after 300 chunks (the C++ buffers are 2*k2 steps by
    construction)."""
    import tracemalloc

    B, I, H, k1, k2 = 3, 4, 8, 3, 7
    m = make("gru", input_size=I, hidden_size=H, num_layers=2, dropout=0.3)
    x = np.random.default_rng(0).standard_normal((k1, B, I))
    m.stream_begin(B, k1, k2, replayable=True)
    sizes, traced = {}, {}
    tracemalloc.start()
    try:
        for n in range(300):
            m.zero_grad()
            m.stream_forward(x)
            m.stream_backward(np.ones((k1, B, H)))
            if n + 1 in (30, 300):
                st = m._stream
                assert st is not None
                sizes[n + 1] = st.nbytes()
                traced[n + 1] = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert sizes[30] == sizes[300] > 0, f"stream arrays grow with T: {sizes}"
    per_chunk = k1 * B * (I + H) * 8  # what keeping the inputs and masks of every step would add
    growth = traced[300] - traced[30]
    assert growth < 20 * per_chunk, f"traced memory grew by {growth} bytes over 270 chunks"


def test_stream_export_import_continues_bit_for_bit() -> None:
    """Export mid-stream (dropout, k1 < k2, a per-row reset, weights changing every chunk), import
    into a fresh module with the same weights and RNG: the continuation is identical."""
    T, B, I, H, k1, k2 = 16, 3, 2, 5, 2, 7
    rng = np.random.default_rng(4)
    x = rng.standard_normal((T, B, I))
    dy = rng.standard_normal((T, B, H))

    def chunk(m: M.RNNBase, start: int) -> dict[str, np.ndarray]:
        if start == 8:
            m.stream_reset([2])
        m.zero_grad()
        y = m.stream_forward(x[start : start + k1])
        m.stream_backward(dy[start : start + k1] + 0.1 * y)
        g = {k: v.copy() for k, v in m.grads.items()}
        for k, v in m.parameters().items():
            v -= 0.05 * g[k]  # an SGD step: the history activations keep the old weights
        return g

    a = make("lstm", input_size=I, hidden_size=H, num_layers=2, dropout=0.3, seed=1)
    a.stream_begin(B, k1, k2)
    for start in range(0, 10, k1):
        chunk(a, start)
    saved = a.stream_export()
    b = make("lstm", input_size=I, hidden_size=H, num_layers=2, dropout=0.3, seed=1)
    b.load_state_dict(a.state_dict())
    b.rng.bit_generator.state = a.rng.bit_generator.state
    b.stream_import(saved)
    for start in range(10, T, k1):
        ga, gb = chunk(a, start), chunk(b, start)
        for k in ga:
            assert np.array_equal(ga[k], gb[k]), f"chunk at {start}: {k} differs after import"


# --------------------------------------------------------------------------------------------------
# reliability: per-sequence isolation, aliasing loads, in-place inputs, threads, pickling
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [np.nan, np.inf], ids=["nan", "inf"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_non_finite_state_of_empty_sequence_is_isolated(cell: str, dtype: Any, bad: float) -> None:
    """A non-finite initial state of a sequence of length 0 reaches no output and no gradient of the
    batch: forward/backward of a ragged batch and a ragged TBPTT stream give exactly the results of
    a zero state there."""
    T, B, I, H = 6, 3, 2, 4
    rng = np.random.default_rng(7)
    x = rng.standard_normal((T, B, I)).astype(dtype)
    dy = rng.standard_normal((T, B, H)).astype(dtype)
    lengths = np.array([6, 0, 4])

    h_clean = np.random.default_rng(8).standard_normal((1, B, H)).astype(dtype)
    h_clean[0, 1] = 0.0
    h_dirty = h_clean.copy()
    h_dirty[0, 1] = bad

    def state(h: np.ndarray) -> Any:
        return (h, h.copy()) if get_cell(cell).has_cell_state else h

    runs = []
    for h in (h_clean, h_dirty):
        m = make(cell, input_size=I, hidden_size=H, dtype=dtype)
        y, _ = m.forward(x, state(h), lengths=lengths)
        m.backward(dy)
        grads = {k: v.copy() for k, v in m.grads.items()}
        m.zero_grad()
        m.stream_begin(B, 2, 4, hx=state(h), lengths=lengths)
        ys = []
        for start in range(0, T, 2):
            ys.append(m.stream_forward(x[start : start + 2]))
            m.stream_backward(dy[start : start + 2])
        runs.append((y, grads, np.concatenate(ys), {k: v.copy() for k, v in m.grads.items()}))
    for what, want, got in zip(("y", "grads", "stream y", "stream grads"), runs[0], runs[1]):
        items = got.items() if isinstance(got, dict) else [(what, got)]
        for k, v in items:
            w = want[k] if isinstance(want, dict) else want
            assert np.isfinite(v).all(), f"{cell} {what} {k}: non-finite after h0[1] = {bad}"
            np.testing.assert_array_equal(v, w, err_msg=f"{cell} {what} {k} with h0[1] = {bad}")


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_load_state_dict_from_own_arrays_in_another_order(cell: str) -> None:
    """Loading the module's own live arrays with the two directions swapped (sources aliasing
    destinations) loads the values they held before the call, not ones already overwritten."""
    m = make(cell, input_size=3, hidden_size=3, num_layers=2, bidirectional=True)
    before = m.state_dict()  # copies
    live = m.parameters()
    swapped = {}
    for k in live:
        other = k[: -len("_reverse")] if k.endswith("_reverse") else k + "_reverse"
        swapped[k] = live[other]
    m.load_state_dict(swapped)
    after = m.state_dict()
    for k in live:
        other = k[: -len("_reverse")] if k.endswith("_reverse") else k + "_reverse"
        np.testing.assert_array_equal(after[k], before[other], err_msg=f"{k} <- {other}")
    # a rotation through views: every weight_hh takes the previous one's values
    names = [k for k in live if k.startswith("weight_hh")]
    before = m.state_dict()
    rotated = {k: live[names[i - 1]][...] for i, k in enumerate(names)}
    m.load_state_dict(rotated, strict=False)
    for i, k in enumerate(names):
        np.testing.assert_array_equal(live[k], before[names[i - 1]], err_msg=f"{k} rotated")


def _seq_models() -> dict[str, Any]:
    return {
        "many_to_many": M.build_model(
            "gru", 3, 5, 2, mode="many_to_many", dtype=np.float64, seed=0
        ),
        "many_to_one": M.build_model("lstm", 3, 5, 2, mode="many_to_one", dtype=np.float64, seed=0),
        "one_to_one": M.build_model("rnn", 3, 5, 2, mode="one_to_one", dtype=np.float64, seed=0),
    }


@pytest.mark.parametrize("kind", ["rnn", "lstm", "gru", "lstm-bidir", "gru-batch-first"])
def test_input_changed_in_place_after_forward_does_not_change_gradients(kind: str) -> None:
    """backward differentiates the forward that was run: an input array changed in place between
    forward and backward (e.g. a reused batch buffer) does not change the gradients."""
    cell = kind.split("-")[0]
    kw = {"bidirectional": "bidir" in kind, "batch_first": "batch-first" in kind}
    rng = np.random.default_rng(3)
    x = rng.standard_normal((5, 3, 2))  # float64, C-contiguous: the module may use it as is
    dy = rng.standard_normal((5, 3, 4 * (2 if kw["bidirectional"] else 1)))
    grads = []
    for mutate in (False, True):
        m = make(cell, input_size=2, hidden_size=4, num_layers=2, **kw)
        xb = x.copy()
        m.forward(xb)
        if mutate:
            xb[...] = rng.standard_normal(xb.shape)  # the caller reuses its buffer
        dx = m.backward(dy)
        grads.append(({k: v.copy() for k, v in m.grads.items()}, dx))
    (want, dx_want), (got, dx_got) = grads
    for k in want:
        np.testing.assert_array_equal(got[k], want[k], err_msg=f"{kind} {k}")
    np.testing.assert_array_equal(dx_got, dx_want, err_msg=f"{kind} dx")


@pytest.mark.parametrize("mode", ["many_to_many", "many_to_one", "one_to_one", "linear"])
def test_input_changed_in_place_sequence_model_and_linear(mode: str) -> None:
    rng = np.random.default_rng(4)
    x = rng.standard_normal((3, 3) if mode in ("one_to_one", "linear") else (6, 3, 3))
    grads = []
    for mutate in (False, True):
        m: Any = (
            M.Linear(3, 2, dtype=np.float64, seed=0) if mode == "linear" else _seq_models()[mode]
        )
        xb = x.copy()
        pred = m.forward(xb)
        if mode == "many_to_one":  # the head reads the final state, public as last_hidden
            h = m.last_hidden[0]
            if mutate:
                h[...] = 7.0
        if mutate:
            xb[...] = 7.0
        m.backward(np.ones_like(pred))
        grads.append(dict(m.grads))
    for k in grads[0]:
        np.testing.assert_array_equal(grads[1][k], grads[0][k], err_msg=f"{mode} {k}")


@pytest.mark.parametrize("proto", [2, 3, 4, 5, "deepcopy"])
def test_copy_and_pickle_round_trip(proto: Any) -> None:
    """copy.deepcopy and pickle (protocols 2-5) give an independent module with the same config,
    state_dict, gradients, outputs and dropout RNG."""
    import copy
    import pickle

    def dup(obj: Any) -> Any:
        return copy.deepcopy(obj) if proto == "deepcopy" else pickle.loads(pickle.dumps(obj, proto))

    rng = np.random.default_rng(5)
    x = rng.standard_normal((4, 2, 3))
    models: dict[str, Any] = {
        "lstm": make("lstm", input_size=3, hidden_size=4, num_layers=2, dropout=0.3),
        "gru-bidir": make("gru", input_size=3, hidden_size=4, bidirectional=True),
        "rnn-relu": make("rnn", "relu", input_size=3, hidden_size=4),
        "linear": M.Linear(3, 2, dtype=np.float64, seed=1),
        "seq": M.build_model("lstm", 3, 4, 2, mode="many_to_many", dtype=np.float64, seed=2),
        "seq-emb": M.build_model(
            "gru", 0, 4, 5, mode="many_to_one", vocab_size=5, embedding_dim=3, seed=3
        ),
    }
    ids = rng.integers(0, 5, (4, 2))
    for name, m in models.items():
        inp = ids if name == "seq-emb" else x
        out = m(inp)
        out = out[0] if isinstance(out, tuple) else out
        m.backward(np.ones_like(out))  # gradients to carry
        m(inp)  # a forward awaiting its backward: not carried (the copy needs its own)
        c = dup(m)
        assert type(c) is type(m) and repr(c) == repr(m), name
        for k, v in m.state_dict().items():
            np.testing.assert_array_equal(c.state_dict()[k], v, err_msg=f"{name} {k}")
        for k, v in m.grads.items():
            np.testing.assert_array_equal(c.grads[k], v, err_msg=f"{name} grad {k}")
        with pytest.raises(ValueError, match="no stored forward pass"):
            c.backward(np.ones_like(out))
        m.backward(np.ones_like(out))  # the original's pending forward is untouched
        a, b = m(inp), c(inp)  # same outputs, same dropout masks (RNG state copied)
        for u, v in zip(a if isinstance(a, tuple) else (a,), b if isinstance(b, tuple) else (b,)):
            np.testing.assert_array_equal(np.asarray(v), np.asarray(u), err_msg=f"{name} output")
        for k, v in c.parameters().items():  # independent copies
            v += 1.0
            assert not np.array_equal(m.parameters()[k], v), f"{name} {k} shared with the copy"


@pytest.mark.parametrize("how", ["deepcopy", "pickle"])
def test_copy_in_the_middle_of_a_stream_continues_identically(how: str) -> None:
    import copy
    import pickle

    rng = np.random.default_rng(6)
    x = rng.standard_normal((10, 3, 2))
    m = make("lstm", input_size=2, hidden_size=4, num_layers=2, dropout=0.2)
    m.stream_begin(3, 2, 5)
    for a in range(0, 6, 2):
        m.stream_forward(x[a : a + 2])
        m.stream_backward(np.ones((2, 3, 4)))
    c = copy.deepcopy(m) if how == "deepcopy" else pickle.loads(pickle.dumps(m))
    for a in range(6, 10, 2):
        m.zero_grad()
        c.zero_grad()
        np.testing.assert_array_equal(
            c.stream_forward(x[a : a + 2]), m.stream_forward(x[a : a + 2])
        )
        m.stream_backward(np.ones((2, 3, 4)))
        c.stream_backward(np.ones((2, 3, 4)))
        for k, v in m.grads.items():
            np.testing.assert_array_equal(c.grads[k], v, err_msg=f"step {a}: {k}")
    m.stream_begin(3, 2, 5, replayable=False)
    m.stream_forward(x[:2])
    with pytest.raises(TypeError, match="replayable=False"):
        copy.deepcopy(m)
    m.stream_end()
    copy.deepcopy(m)


def _spawn_worker_forward(model: Any, x: np.ndarray) -> np.ndarray:
    return model(x)


def test_model_pickles_into_a_spawned_worker() -> None:
    import multiprocessing as mp

    model = M.build_model("gru", 3, 4, 2, mode="many_to_many", dtype=np.float64, seed=7)
    model.eval()
    x = np.random.default_rng(7).standard_normal((5, 2, 3))
    with mp.get_context("spawn").Pool(1) as pool:
        got = pool.apply(_spawn_worker_forward, (model, x))
    np.testing.assert_array_equal(got, model(x))


def test_modules_is_the_nn_package_under_its_old_name() -> None:
    """rnnfast.modules re-exports rnnfast.nn (the same objects), the public classes keep the class
    string checkpoints record ("rnnfast.modules:LSTM"), and every layer is an nn.Module."""
    import pickle

    import rnnfast.nn as nn

    for name in M.__all__:
        assert getattr(M, name) is getattr(nn, name), name
    for cls in (M.RNN, M.LSTM, M.GRU, M.Linear, M.Embedding, M.SequenceModel):
        assert f"{cls.__module__}:{cls.__qualname__}" == f"rnnfast.modules:{cls.__name__}"
        assert issubclass(cls, nn.Module)
    m = M.LSTM(3, 4, num_layers=2, seed=0)
    m.stream_begin(2, 2, 3)
    m.stream_forward(np.ones((2, 2, 3)))
    assert isinstance(m._stream, nn.TBPTTSession) and m._stream.module is m
    copy = pickle.loads(pickle.dumps(m))
    assert isinstance(copy._stream, nn.TBPTTSession) and copy._stream.module is copy
    np.testing.assert_array_equal(copy.stream_state[0], m.stream_state[0])
