"""Tests of rnnfast.optim: updates against hand-written formulas and against torch.optim, clipping
against torch.nn.utils, schedulers against torch.optim.lr_scheduler, state round trips, errors."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from helpers import assert_close
from rnnfast.optim import (
    SGD,
    Adam,
    AdamW,
    ClipStats,
    CosineAnnealingLR,
    ExponentialLR,
    LinearLR,
    LinearWarmup,
    ReduceLROnPlateau,
    RMSprop,
    SequentialLR,
    StepLR,
    clip_grad_norm_,
    clip_grad_value_,
)

__all__: list[str] = []

SHAPES = {"weight_ih_l0": (8, 3), "weight_hh_l0": (8, 2), "bias_ih_l0": (8,)}
TORCH_TOL = 1e-12  # float64 parity with torch.optim (measured ~1e-16)


def _params(seed: int = 0, dtype=np.float64) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {k: rng.standard_normal(s).astype(dtype) for k, s in SHAPES.items()}


def _grad_seq(n: int, seed: int = 1, dtype=np.float64) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [{k: rng.standard_normal(s).astype(dtype) for k, s in SHAPES.items()} for _ in range(n)]


# ------------------------------------------------------------------- hand-written update formulas


def test_sgd_plain_and_weight_decay_formula() -> None:
    p0 = _params()
    g1, g2 = _grad_seq(2)
    p = {k: v.copy() for k, v in p0.items()}
    opt = SGD(p, lr=0.1, weight_decay=0.01)
    opt.step(g1)
    opt.step(g2)
    for k in p:
        p1 = p0[k] - 0.1 * (g1[k] + 0.01 * p0[k])
        p2 = p1 - 0.1 * (g2[k] + 0.01 * p1)
        assert_close(p[k], p2, 1e-15, f"sgd {k}")


@pytest.mark.parametrize("nesterov", [False, True])
def test_sgd_momentum_formula(nesterov: bool) -> None:
    mu, lr, damp = 0.9, 0.05, 0.0 if nesterov else 0.3
    p0 = _params()
    g1, g2, g3 = _grad_seq(3)
    p = {k: v.copy() for k, v in p0.items()}
    opt = SGD(p, lr=lr, momentum=mu, dampening=damp, nesterov=nesterov)
    for g in (g1, g2, g3):
        opt.step(g)
    for k in p:
        b1 = g1[k]  # first step: buffer = gradient (no dampening)
        b2 = mu * b1 + (1 - damp) * g2[k]
        b3 = mu * b2 + (1 - damp) * g3[k]
        if nesterov:
            d = [g1[k] + mu * b1, g2[k] + mu * b2, g3[k] + mu * b3]
        else:
            d = [b1, b2, b3]
        expected = p0[k] - lr * d[0] - lr * d[1] - lr * d[2]
        assert_close(p[k], expected, 1e-14, f"sgd momentum {k}")


@pytest.mark.parametrize("cls", [Adam, AdamW])
def test_adam_two_steps_formula(cls) -> None:
    lr, b1, b2, eps, wd = 0.01, 0.9, 0.999, 1e-8, 0.1
    p0 = _params()
    g1, g2 = _grad_seq(2)
    p = {k: v.copy() for k, v in p0.items()}
    opt = cls(p, lr=lr, betas=(b1, b2), eps=eps, weight_decay=wd)
    opt.step(g1)
    opt.step(g2)
    for k in p:
        if cls is AdamW:  # decoupled: shrink the weight, the gradient is untouched
            x1 = p0[k] * (1 - lr * wd)
            a = g1[k]
            # step 1: m_hat = g, v_hat = g^2  ->  x - lr g / (|g| + eps)
            x1 = x1 - lr * a / (np.abs(a) + eps)
            x2 = x1 * (1 - lr * wd)
            c = g2[k]
        else:  # L2: wd * p added to the gradient
            a = g1[k] + wd * p0[k]
            x1 = p0[k] - lr * a / (np.abs(a) + eps)
            x2 = x1
            c = g2[k] + wd * x1
        m2 = b1 * (1 - b1) * a + (1 - b1) * c
        v2 = b2 * (1 - b2) * a * a + (1 - b2) * c * c
        x2 = x2 - lr / (1 - b1**2) * m2 / (np.sqrt(v2) / math.sqrt(1 - b2**2) + eps)
        assert_close(p[k], x2, 1e-13, f"{cls.__name__} {k}")


def test_adam_amsgrad_uses_running_max() -> None:
    p = {"w": np.zeros(1)}
    opt = Adam(p, lr=1.0, betas=(0.0, 0.5), eps=0.0, amsgrad=True)
    opt.step({"w": np.array([2.0])})  # v = 0.5 * 4 = 2, vmax = 2
    opt.step({"w": np.array([0.0])})  # m = 0, no move
    opt.step(
        {"w": np.array([1.0])}
    )  # v = 0.25*2 + 0.5 = 1.0? -> v3 = 0.5*(0.5*2) + 0.5*1 = 1.0, vmax = 2
    # step 3: m_hat = 1 (beta1 = 0), denom = sqrt(2) / sqrt(1 - 0.5^3)
    x1 = -1.0 * 2.0 / (math.sqrt(2.0) / math.sqrt(0.5))
    x3 = x1 - 1.0 / (math.sqrt(2.0) / math.sqrt(1 - 0.125))
    assert p["w"][0] == pytest.approx(x3, rel=1e-14)


@pytest.mark.parametrize("centered", [False, True])
def test_rmsprop_first_step_formula(centered: bool) -> None:
    lr, alpha, eps = 0.01, 0.9, 1e-8
    p0 = _params()
    (g,) = _grad_seq(1)
    p = {k: v.copy() for k, v in p0.items()}
    RMSprop(p, lr=lr, alpha=alpha, eps=eps, centered=centered).step(g)
    for k in p:
        v = (1 - alpha) * g[k] ** 2
        if centered:
            v = v - ((1 - alpha) * g[k]) ** 2
        assert_close(p[k], p0[k] - lr * g[k] / (np.sqrt(v) + eps), 1e-14, f"rmsprop {k}")


# ------------------------------------------------------------------------- parity with torch.optim

OPT_CASES: list[tuple[type, str, dict[str, Any]]] = [
    (SGD, "SGD", dict(lr=0.1)),
    (SGD, "SGD", dict(lr=0.05, momentum=0.9)),
    (SGD, "SGD", dict(lr=0.05, momentum=0.8, dampening=0.3, weight_decay=0.01)),
    (SGD, "SGD", dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.02)),
    (SGD, "SGD", dict(lr=0.05, momentum=0.9, maximize=True)),
    (Adam, "Adam", dict(lr=0.01)),
    (Adam, "Adam", dict(lr=0.02, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.1)),
    (Adam, "Adam", dict(lr=0.01, amsgrad=True, weight_decay=0.05)),
    (AdamW, "AdamW", dict(lr=0.01)),
    (AdamW, "AdamW", dict(lr=0.02, weight_decay=0.3, amsgrad=True)),
    (RMSprop, "RMSprop", dict(lr=0.01)),
    (RMSprop, "RMSprop", dict(lr=0.01, alpha=0.9, momentum=0.5, weight_decay=0.1)),
    (RMSprop, "RMSprop", dict(lr=0.005, centered=True, momentum=0.9)),
]


def _torch_run(torch, tname: str, kw: dict[str, Any], p0, grads, dtype) -> dict[str, np.ndarray]:
    tparams = {k: torch.tensor(v.copy(), requires_grad=True) for k, v in p0.items()}
    topt = getattr(torch.optim, tname)(list(tparams.values()), foreach=False, **kw)
    for g in grads:
        for k, t in tparams.items():
            t.grad = None if g.get(k) is None else torch.tensor(g[k])
        topt.step()
    return {k: t.detach().numpy() for k, t in tparams.items()}


@pytest.mark.parametrize(
    "cls,tname,kw", OPT_CASES, ids=[f"{c[1]}-{i}" for i, c in enumerate(OPT_CASES)]
)
def test_matches_torch_float64(cls, tname, kw) -> None:
    torch = pytest.importorskip("torch")
    p0 = _params(3)
    grads = _grad_seq(10, seed=4)
    grads[4] = {**grads[4], "bias_ih_l0": None}  # a step without this gradient (torch: .grad None)
    expected = _torch_run(torch, tname, kw, p0, grads, np.float64)
    p = {k: v.copy() for k, v in p0.items()}
    opt = cls(p, **kw)
    for g in grads:
        opt.step(g)
    for k in p:
        assert_close(p[k], expected[k], TORCH_TOL, f"{tname}{kw} {k}")


@pytest.mark.parametrize(
    "cls,tname,kw", OPT_CASES[1::3], ids=lambda v: getattr(v, "__name__", None)
)
def test_matches_torch_float32(cls, tname, kw) -> None:
    torch = pytest.importorskip("torch")
    p0 = _params(5, np.float32)
    grads = _grad_seq(10, seed=6, dtype=np.float32)
    expected = _torch_run(torch, tname, kw, p0, grads, np.float32)
    p = {k: v.copy() for k, v in p0.items()}
    opt = cls(p, **kw)
    for g in grads:
        opt.step(g)
    for k in p:
        assert p[k].dtype == np.float32
        assert_close(p[k], expected[k], 1e-5, f"{tname} float32 {k}")


def test_updates_in_place_and_grads_untouched() -> None:
    p = _params()
    ids = {k: id(v) for k, v in p.items()}
    before = {k: v.copy() for k, v in p.items()}
    (g,) = _grad_seq(1)
    g_copy = {k: v.copy() for k, v in g.items()}
    opt = SGD(p, lr=0.1, momentum=0.9, weight_decay=0.1, nesterov=True)
    opt.step(g)
    assert {k: id(v) for k, v in p.items()} == ids
    assert opt.params["weight_ih_l0"] is p["weight_ih_l0"]
    assert all(not np.array_equal(p[k], before[k]) for k in p)
    assert all(np.array_equal(g[k], g_copy[k]) for k in g)


# ----------------------------------------------------------------------------- state round trip


@pytest.mark.parametrize(
    "cls,kw",
    [
        (SGD, dict(lr=0.1, momentum=0.9)),
        (Adam, dict(amsgrad=True)),
        (AdamW, {}),
        (RMSprop, dict(centered=True, momentum=0.3)),
    ],
)
def test_state_dict_resume_is_exact(cls, kw) -> None:
    grads = _grad_seq(8)
    p_a = _params()
    opt_a = cls(p_a, **kw)
    for g in grads[:4]:
        opt_a.step(g)
    sd = opt_a.state_dict()
    p_b = {k: v.copy() for k, v in p_a.items()}
    for g in grads[4:]:
        opt_a.step(g)
    opt_b = cls(p_b, lr=123.0)  # lr and hyperparameters come from the state
    opt_b.load_state_dict(sd)
    for g in grads[4:]:
        opt_b.step(g)
    for k in p_a:
        np.testing.assert_array_equal(p_b[k], p_a[k], err_msg=f"{cls.__name__} resume {k}")
    # the state dict holds copies, not live buffers
    assert all(
        not np.shares_memory(v, opt_a.state[n][f])
        for n, st in sd["state"].items()
        for f, v in st.items()
        if isinstance(v, np.ndarray)
    )


def test_load_state_dict_errors() -> None:
    p = _params()
    opt = Adam(p)
    opt.step(_grad_seq(1)[0])
    sd = opt.state_dict()
    with pytest.raises(ValueError, match="type"):
        SGD(_params()).load_state_dict(sd)
    bad = {**sd, "state": {"nope": {"step": 1}}}
    with pytest.raises(ValueError, match="unknown parameter"):
        Adam(_params()).load_state_dict(bad)
    bad_state = {k: dict(v) for k, v in sd["state"].items()}
    bad_state["bias_ih_l0"]["exp_avg"] = np.zeros(7)
    with pytest.raises(ValueError, match=r"exp_avg.*shape"):
        Adam(_params()).load_state_dict({**sd, "state": bad_state})
    bad_state["bias_ih_l0"]["exp_avg"] = np.zeros(8, dtype=np.float32)
    with pytest.raises(TypeError, match=r"exp_avg.*dtype"):
        Adam(_params()).load_state_dict({**sd, "state": bad_state})
    with pytest.raises(ValueError, match="betas"):
        Adam(_params()).load_state_dict(
            {**sd, "hyperparams": {**sd["hyperparams"], "betas": [1.5, 0.9]}}
        )


@pytest.mark.parametrize(
    "call,exc,match",
    [
        (lambda: SGD({}), ValueError, "params"),
        (lambda: SGD([np.zeros(3)]), TypeError, "params"),
        (lambda: SGD({"w": np.zeros(3, dtype=np.int64)}), TypeError, r"params\['w'\]"),
        (lambda: SGD({"w": np.zeros(3)[::-1].copy().view()}, lr=-1.0), ValueError, "lr"),
        (lambda: SGD({"w": np.zeros(3)}, nesterov=True), ValueError, "nesterov"),
        (lambda: Adam({"w": np.zeros(3)}, betas=(0.9, 1.0)), ValueError, "betas"),
        (
            lambda: SGD({"w": np.zeros(3)}).step({"w": np.zeros(4)}),
            ValueError,
            r"grads\['w'\].*shape",
        ),
        (
            lambda: SGD({"w": np.zeros(3)}).step({"w": np.zeros(3, np.float32)}),
            TypeError,
            r"grads\['w'\].*dtype",
        ),
        (lambda: SGD({"w": np.zeros(3)}).step({"v": np.zeros(3)}), ValueError, "unknown parameter"),
        (lambda: SGD({"w": np.zeros(3)}).step([np.zeros(3)]), TypeError, "grads"),
    ],
)
def test_bad_arguments(call, exc, match) -> None:
    with pytest.raises(exc, match=match):
        call()


ALL_OPTIMIZERS = (SGD, Adam, AdamW, RMSprop)


@pytest.mark.parametrize("cls", ALL_OPTIMIZERS, ids=lambda c: c.__name__)
@pytest.mark.parametrize(
    "kw,exc,match",
    [
        (dict(weight_decay=-0.1), ValueError, r"weight_decay: expected >= 0.0, got -0.1"),
        (dict(weight_decay=float("nan")), ValueError, "weight_decay: expected a number, got nan"),
        (dict(weight_decay="0.1"), TypeError, "weight_decay: expected a real number, got str"),
        (dict(maximize=1), TypeError, "maximize: expected a bool, got int"),
    ],
)
def test_shared_hyperparameters_checked_alike(cls, kw, exc, match) -> None:
    """The hyperparameters all optimizers have are checked the same way, naming the argument."""
    with pytest.raises(exc, match=match):
        cls({"w": np.zeros(3)}, **kw)


@pytest.mark.parametrize(
    "cls,kw,match",
    [
        (SGD, dict(momentum=0.9, weight_decay=-1.0), "weight_decay"),
        (SGD, dict(momentum=0.0, nesterov=True), "nesterov"),
        (Adam, dict(betas=[0.9, 1.0]), r"betas\[1\]"),
        (AdamW, dict(eps=-1e-8), "eps"),
        (RMSprop, dict(centered="yes"), "centered"),
    ],
)
def test_load_state_dict_with_bad_hyperparameters_changes_nothing(cls, kw, match) -> None:
    p = _params()
    opt = cls(p, lr=0.01)
    opt.step(_grad_seq(1)[0])
    before = opt.state_dict()
    sd = opt.state_dict()
    sd = {**sd, "lr": 0.5, "step_count": 9, "hyperparams": {**sd["hyperparams"], **kw}}
    with pytest.raises((TypeError, ValueError), match=match):
        opt.load_state_dict(sd)
    after = opt.state_dict()
    assert after["hyperparams"] == before["hyperparams"]
    assert (after["lr"], after["step_count"]) == (0.01, 1)
    for name, st in before["state"].items():
        for k, v in st.items():
            np.testing.assert_array_equal(after["state"][name][k], v, err_msg=f"{name} {k}")


def test_adamw_without_weight_decay_is_adam_exactly() -> None:
    """AdamW differs from Adam only in the weight decay: with wd = 0 the two are bit-identical."""
    grads = _grad_seq(6)
    p_adam, p_adamw = _params(), _params()
    adam = Adam(p_adam, lr=0.02, amsgrad=True)
    adamw = AdamW(p_adamw, lr=0.02, amsgrad=True, weight_decay=0.0)
    for g in grads:
        adam.step(g)
        adamw.step(g)
    for k in p_adam:
        np.testing.assert_array_equal(p_adamw[k], p_adam[k], err_msg=k)
    assert adamw.state_dict()["hyperparams"] == adam.state_dict()["hyperparams"]
    assert AdamW(_params()).weight_decay == 1e-2  # PyTorch's default, unlike Adam's 0


def test_read_only_param_rejected() -> None:
    w = np.zeros(3)
    w.flags.writeable = False
    with pytest.raises(ValueError, match=r"params\['w'\].*read-only"):
        SGD({"w": w})


def test_parameters_method_accepted() -> None:
    class M:
        def __init__(self) -> None:
            self.w = np.ones(2)

        def parameters(self) -> dict[str, np.ndarray]:
            return {"w": self.w}

    m = M()
    SGD(m, lr=0.5).step({"w": np.ones(2)})
    np.testing.assert_array_equal(m.w, [0.5, 0.5])


# -------------------------------------------------------------------------------------- clipping


@pytest.mark.parametrize("norm_type", [2.0, 1.0, 3.0, math.inf])
@pytest.mark.parametrize("max_norm", [0.5, 1e6])
def test_clip_grad_norm_matches_torch(norm_type: float, max_norm: float) -> None:
    torch = pytest.importorskip("torch")
    grads = _grad_seq(1, seed=11)[0]
    tgrads = [torch.tensor(g.copy()) for g in grads.values()]
    tparams = [torch.zeros_like(t, requires_grad=True) for t in tgrads]
    for p, g in zip(tparams, tgrads):
        p.grad = g
    t_total = float(torch.nn.utils.clip_grad_norm_(tparams, max_norm, norm_type=norm_type))
    stats = ClipStats()
    total = clip_grad_norm_(grads, max_norm, norm_type, stats=stats)
    assert math.isclose(total, t_total, rel_tol=1e-12), (total, t_total)
    for (k, g), tp in zip(grads.items(), tparams):
        assert_close(g, tp.grad.numpy(), 1e-12, f"clipped {k} (p={norm_type}, max={max_norm})")
    assert stats.calls == 1 and stats.clipped == int(max_norm < total)
    assert stats.last_norm == total


def test_clip_grad_norm_formula_and_stats() -> None:
    grads = {"a": np.array([3.0, 0.0]), "b": np.array([[0.0], [4.0]]), "c": None}
    stats = ClipStats()
    total = clip_grad_norm_(grads, 1.0, stats=stats)
    assert total == 5.0
    scale = 1.0 / (5.0 + 1e-6)
    np.testing.assert_array_equal(grads["a"], np.array([3.0, 0.0]) * scale)
    np.testing.assert_array_equal(grads["b"], np.array([[0.0], [4.0]]) * scale)
    small = {"a": np.array([0.1, 0.2])}
    clip_grad_norm_(small, 1.0, stats=stats)
    np.testing.assert_array_equal(small["a"], [0.1, 0.2])  # not scaled when under the limit
    assert (stats.calls, stats.clipped, stats.fraction_clipped) == (2, 1, 0.5)
    assert stats.max_norm_seen == 5.0 and stats.mean_norm == pytest.approx(
        (5.0 + math.sqrt(0.05)) / 2
    )
    restored = ClipStats()
    restored.load_state_dict(stats.state_dict())
    assert restored == stats
    stats.reset()
    assert stats == ClipStats()


def test_clip_grad_norm_nonfinite() -> None:
    g = {"a": np.array([1.0, np.nan]), "b": np.array([1e3])}
    stats = ClipStats()
    total = clip_grad_norm_(g, 1.0, stats=stats)
    assert math.isnan(total) and g["b"][0] == 1e3  # documented: left unchanged
    assert stats.nonfinite == 1 and stats.max_norm_seen == 0.0
    with pytest.raises(ValueError, match=r"grads.*nan.*\['a'\]"):
        clip_grad_norm_(g, 1.0, error_if_nonfinite=True)


def test_clip_grad_value_matches_torch() -> None:
    torch = pytest.importorskip("torch")
    grads = _grad_seq(1, seed=12)[0]
    tparams = [
        torch.zeros(g.shape, dtype=torch.float64, requires_grad=True) for g in grads.values()
    ]
    for p, g in zip(tparams, grads.values()):
        p.grad = torch.tensor(g.copy())
    torch.nn.utils.clip_grad_value_(tparams, 0.7)
    pre_clip_max = max(float(np.abs(g).max()) for g in grads.values())
    stats = ClipStats()
    vmax = clip_grad_value_(grads, 0.7, stats=stats)
    assert vmax == pre_clip_max and stats.last_norm == pre_clip_max
    for (k, g), tp in zip(grads.items(), tparams):
        np.testing.assert_array_equal(g, tp.grad.numpy(), err_msg=k)
    assert (
        stats.clipped == 1
        and np.max(np.abs(np.concatenate([g.ravel() for g in grads.values()]))) <= 0.7
    )


# ------------------------------------------------------------------------------------ schedulers


def _lr_sequence(make, n: int, lr: float = 0.1) -> list[float]:
    opt = SGD({"w": np.zeros(1)}, lr=lr)
    sched = make(opt)
    seq = [opt.lr]
    for _ in range(n):
        sched.step()
        seq.append(opt.lr)
    assert sched.get_last_lr() == [opt.lr]
    return seq


def _torch_lr_sequence(torch, make, n: int, lr: float = 0.1) -> list[float]:
    w = torch.zeros(1, requires_grad=True)
    opt = torch.optim.SGD([w], lr=lr)
    sched = make(opt)
    seq = [opt.param_groups[0]["lr"]]
    for _ in range(n):
        opt.step()  # (no gradient: no-op) keeps torch from warning about the call order
        sched.step()
        seq.append(opt.param_groups[0]["lr"])
    return seq


SCHED_CASES = [
    ("StepLR", lambda m: lambda o: m.StepLR(o, step_size=3, gamma=0.5)),
    ("ExponentialLR", lambda m: lambda o: m.ExponentialLR(o, gamma=0.9)),
    ("CosineAnnealingLR", lambda m: lambda o: m.CosineAnnealingLR(o, T_max=10, eta_min=0.001)),
    (
        "LinearLR",
        lambda m: lambda o: m.LinearLR(o, start_factor=0.25, end_factor=0.9, total_iters=6),
    ),
    (
        "Sequential",
        lambda m: (
            lambda o: m.SequentialLR(
                o,
                [m.LinearLR(o, 0.1, 1.0, 4), m.StepLR(o, 2, 0.7), m.CosineAnnealingLR(o, 8)],
                [4, 10],
            )
        ),
    ),
    ("Chained", lambda m: lambda o: _Both(m.StepLR(o, 4, 0.5), m.ExponentialLR(o, 0.95))),
]


class _Both:
    """Two schedulers on one optimizer, stepped together (PyTorch's chainable semantics)."""

    def __init__(self, *scheds: Any) -> None:
        self.scheds = scheds

    def step(self) -> None:
        for s in self.scheds:
            s.step()

    def get_last_lr(self) -> list[float]:
        return self.scheds[-1].get_last_lr()


@pytest.mark.parametrize("name,factory", SCHED_CASES, ids=[c[0] for c in SCHED_CASES])
def test_scheduler_matches_torch(name: str, factory) -> None:
    torch = pytest.importorskip("torch")
    import rnnfast.optim as ours

    n = 30
    mine = _lr_sequence(factory(ours), n)
    theirs = _torch_lr_sequence(torch, factory(torch.optim.lr_scheduler), n)
    assert_close(np.array(mine), np.array(theirs), 1e-12, f"{name} lr sequence")


def test_linear_warmup_matches_torch_sequential() -> None:
    torch = pytest.importorskip("torch")
    W, T = 5, 12
    mine = _lr_sequence(lambda o: LinearWarmup(o, W, after=CosineAnnealingLR(o, T_max=T)), 25)
    tl = torch.optim.lr_scheduler
    theirs = _torch_lr_sequence(
        torch,
        lambda o: tl.SequentialLR(
            o, [tl.LinearLR(o, 1 / (W + 1), 1.0, W), tl.CosineAnnealingLR(o, T_max=T)], [W]
        ),
        25,
    )
    assert_close(np.array(mine), np.array(theirs), 1e-12, "warmup+cosine lr sequence")
    # the documented shape: (t + 1) / (W + 1) * lr during warm-up, then cosine from the full lr
    np.testing.assert_allclose(
        mine[: W + 1], [0.1 * (t + 1) / (W + 1) for t in range(W + 1)], rtol=1e-14
    )
    np.testing.assert_allclose(mine[W + 3], 0.05 * (1 + math.cos(math.pi * 3 / T)), rtol=1e-12)


def test_closed_forms() -> None:
    step = _lr_sequence(lambda o: StepLR(o, step_size=3, gamma=0.5), 9)
    np.testing.assert_allclose(step, [0.1 * 0.5 ** (e // 3) for e in range(10)], rtol=1e-14)
    cos = _lr_sequence(lambda o: CosineAnnealingLR(o, T_max=6, eta_min=0.01), 6)
    np.testing.assert_allclose(
        cos, [0.01 + 0.09 * (1 + math.cos(math.pi * e / 6)) / 2 for e in range(7)], rtol=1e-12
    )
    lin = _lr_sequence(lambda o: LinearLR(o, start_factor=0.5, total_iters=4), 6)
    np.testing.assert_allclose(
        lin, [0.1 * (0.5 + 0.5 * min(e, 4) / 4) for e in range(7)], rtol=1e-14
    )
    warm = _lr_sequence(lambda o: LinearWarmup(o, 3), 5)
    np.testing.assert_allclose(warm, [0.025, 0.05, 0.075, 0.1, 0.1, 0.1], rtol=1e-14)


PLATEAU_METRICS = [
    1.0,
    0.9,
    0.95,
    0.95,
    0.96,
    0.97,
    0.5,
    0.6,
    0.6,
    0.6,
    0.6,
    0.6,
    0.6,
    0.6,
    0.7,
    0.2,
    0.2,
    0.2,
    float("nan"),
    0.2,
    0.2,
    0.2,
    0.2,
]


@pytest.mark.parametrize(
    "kw",
    [
        dict(patience=2),
        dict(mode="max", factor=0.5, patience=1, threshold=0.05),
        dict(patience=1, threshold_mode="abs", threshold=0.05, cooldown=2, min_lr=0.004),
        dict(patience=0, factor=0.5, eps=0.03),
    ],
)
def test_reduce_on_plateau_matches_torch(kw: dict[str, Any]) -> None:
    torch = pytest.importorskip("torch")
    opt = SGD({"w": np.zeros(1)}, lr=0.1)
    sched = ReduceLROnPlateau(opt, **kw)
    w = torch.zeros(1, requires_grad=True)
    topt = torch.optim.SGD([w], lr=0.1)
    tsched = torch.optim.lr_scheduler.ReduceLROnPlateau(topt, **kw)
    mine, theirs = [], []
    for m in PLATEAU_METRICS:
        sched.step(m)
        topt.step()
        tsched.step(m)
        mine.append(opt.lr)
        theirs.append(topt.param_groups[0]["lr"])
    assert_close(np.array(mine), np.array(theirs), 1e-15, f"plateau {kw}")
    assert len(set(mine)) > 1, "the metric sequence should trigger at least one reduction"


@pytest.mark.parametrize(
    "factory",
    [
        lambda o: StepLR(o, 3, 0.5),
        lambda o: CosineAnnealingLR(o, 7, 0.001),
        lambda o: LinearWarmup(o, 4, after=ExponentialLR(o, 0.9)),
        lambda o: SequentialLR(o, [ExponentialLR(o, 0.5), StepLR(o, 2)], [3]),
    ],
)
def test_scheduler_resume_is_exact(factory) -> None:
    grads = _grad_seq(12)
    p_a = _params()
    opt_a = Adam(p_a, lr=0.05)
    sched_a = factory(opt_a)
    lrs_a = []
    for i, g in enumerate(grads):
        if i == 5:
            opt_sd, sched_sd = opt_a.state_dict(), sched_a.state_dict()
            p_b = {k: v.copy() for k, v in p_a.items()}
        opt_a.step(g)
        sched_a.step()
        lrs_a.append(opt_a.lr)
    opt_b = Adam(p_b, lr=0.05)
    sched_b = factory(opt_b)  # construction moves lr; loading both states restores it
    opt_b.load_state_dict(opt_sd)
    sched_b.load_state_dict(sched_sd)
    lrs_b = []
    for g in grads[5:]:
        opt_b.step(g)
        sched_b.step()
        lrs_b.append(opt_b.lr)
    assert lrs_b == lrs_a[5:]
    for k in p_a:
        np.testing.assert_array_equal(p_b[k], p_a[k], err_msg=k)


def test_plateau_state_round_trip() -> None:
    opt = SGD({"w": np.zeros(1)}, lr=0.1)
    s = ReduceLROnPlateau(opt, patience=1, cooldown=1)
    for m in [1.0, 1.0, 1.0, 0.5]:
        s.step(m)
    sd = s.state_dict()
    opt2 = SGD({"w": np.zeros(1)}, lr=opt.lr)
    s2 = ReduceLROnPlateau(opt2)
    s2.load_state_dict(sd)
    for m in [0.6, 0.6, 0.6, 0.6]:
        s.step(m)
        s2.step(m)
        assert opt.lr == opt2.lr
    with pytest.raises(ValueError, match="type"):
        StepLR(opt, 2).load_state_dict(sd)


def test_adam_with_cosine_matches_torch() -> None:
    torch = pytest.importorskip("torch")
    p0 = _params(7)
    grads = _grad_seq(10, seed=8)
    p = {k: v.copy() for k, v in p0.items()}
    opt = AdamW(p, lr=0.03, weight_decay=0.1)
    sched = CosineAnnealingLR(opt, T_max=6)
    tparams = {k: torch.tensor(v.copy(), requires_grad=True) for k, v in p0.items()}
    topt = torch.optim.AdamW(list(tparams.values()), lr=0.03, weight_decay=0.1, foreach=False)
    tsched = torch.optim.lr_scheduler.CosineAnnealingLR(topt, T_max=6)
    for g in grads:
        opt.step(g)
        sched.step()
        for k, t in tparams.items():
            t.grad = torch.tensor(g[k])
        topt.step()
        tsched.step()
    for k in p:
        assert_close(p[k], tparams[k].detach().numpy(), TORCH_TOL, f"adamw+cosine {k}")


@pytest.mark.parametrize(
    "call,exc,match",
    [
        (lambda o: StepLR(o, 0), ValueError, "step_size"),
        (lambda o: StepLR(object(), 2), TypeError, "optimizer"),
        (lambda o: CosineAnnealingLR(o, T_max=2.5), TypeError, "T_max"),
        (lambda o: LinearLR(o, start_factor=0.0), ValueError, "start_factor"),
        (lambda o: SequentialLR(o, [StepLR(o, 2), StepLR(o, 3)], []), ValueError, "milestones"),
        (lambda o: SequentialLR(o, [ReduceLROnPlateau(o)], []), TypeError, "schedulers"),
        (lambda o: ReduceLROnPlateau(o, mode="up"), ValueError, "mode"),
        (lambda o: ReduceLROnPlateau(o, factor=1.0), ValueError, "factor"),
        (lambda o: LinearWarmup(o, 0), ValueError, "warmup_steps"),
    ],
)
def test_scheduler_bad_arguments(call, exc, match) -> None:
    opt = SGD({"w": np.zeros(1)}, lr=0.1)
    with pytest.raises(exc, match=match):
        call(opt)
