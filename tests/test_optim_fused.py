"""The fused optimizer kernels against the NumPy formulas they replaced, bit for bit.

The reference classes below are the per-array NumPy updates of rnnfast.optim before the kernels
(copied verbatim). Every optimizer and option runs many steps on random gradients, in float32 and
float64, once over a flat parameter buffer (one fused call per step) and once over a plain dict of
arrays (one call per array), and must give the same bits as the reference: the kernels perform the
same operations in the same order in the array dtype, without FMA contraction.
"""

from __future__ import annotations

import copy
import itertools
import math
import pickle
from typing import Any

import numpy as np
import pytest

from rnnfast import optim
from rnnfast._loader import core

SHAPES = {"w_ih": (12, 5), "w_hh": (12, 4), "b_ih": (12,), "b_hh": (12,), "head": (3, 4)}


# ---------------------------------------------------------------- the NumPy formulas (reference)
class _RefSGD:
    def __init__(self, params: dict[str, np.ndarray], lr: float, **hp: Any) -> None:
        self.params, self.lr, self.state = params, lr, {}
        self.momentum = hp.get("momentum", 0.0)
        self.dampening = hp.get("dampening", 0.0)
        self.weight_decay = hp.get("weight_decay", 0.0)
        self.nesterov = hp.get("nesterov", False)
        self.maximize = hp.get("maximize", False)

    def step(self, grads: dict[str, np.ndarray | None]) -> None:
        for name, g in grads.items():
            if g is not None:
                self._update(name, self.params[name], g)

    def _update(self, name: str, p: np.ndarray, g: np.ndarray) -> None:
        d_p = -g if self.maximize else g
        if self.weight_decay != 0:
            d_p = d_p + self.weight_decay * p
        if self.momentum != 0:
            st = self.state.setdefault(name, {})
            buf = st.get("momentum_buffer")
            if buf is None:
                buf = np.array(d_p, dtype=p.dtype, copy=True)
                st["momentum_buffer"] = buf
            else:
                buf *= self.momentum
                buf += (1 - self.dampening) * d_p
            d_p = d_p + self.momentum * buf if self.nesterov else buf
        p -= self.lr * d_p


class _RefAdam(_RefSGD):
    decoupled = False

    def __init__(self, params: dict[str, np.ndarray], lr: float, **hp: Any) -> None:
        super().__init__(params, lr)
        self.betas = hp.get("betas", (0.9, 0.999))
        self.eps = hp.get("eps", 1e-8)
        self.weight_decay = hp.get("weight_decay", 1e-2 if self.decoupled else 0.0)
        self.amsgrad = hp.get("amsgrad", False)
        self.maximize = hp.get("maximize", False)

    def _apply_weight_decay(self, p: np.ndarray, grad: np.ndarray) -> np.ndarray:
        if self.decoupled:
            p *= 1 - self.lr * self.weight_decay
            return grad
        return grad + self.weight_decay * p

    def _update(self, name: str, p: np.ndarray, g: np.ndarray) -> None:
        beta1, beta2 = self.betas
        lr = self.lr
        st = self.state.get(name)
        if st is None:
            st = {"step": 0, "exp_avg": np.zeros_like(p), "exp_avg_sq": np.zeros_like(p)}
            self.state[name] = st
        if self.amsgrad and "max_exp_avg_sq" not in st:  # new, or amsgrad turned on later
            st["max_exp_avg_sq"] = np.zeros_like(p)
        grad = -g if self.maximize else g
        st["step"] += 1
        step = st["step"]
        if self.weight_decay != 0:
            grad = self._apply_weight_decay(p, grad)
        m, v = st["exp_avg"], st["exp_avg_sq"]
        m += (1 - beta1) * (grad - m)
        v *= beta2
        v += (1 - beta2) * (grad * grad)
        bias_correction1 = 1 - beta1**step
        bias_correction2 = 1 - beta2**step
        step_size = lr / bias_correction1
        bias_correction2_sqrt = bias_correction2**0.5
        if self.amsgrad:
            vmax = st["max_exp_avg_sq"]
            np.maximum(vmax, v, out=vmax)
            denom = np.sqrt(vmax) / bias_correction2_sqrt + self.eps
        else:
            denom = np.sqrt(v) / bias_correction2_sqrt + self.eps
        p += -step_size * (m / denom)


class _RefAdamW(_RefAdam):
    decoupled = True


class _RefRMSprop(_RefSGD):
    def __init__(self, params: dict[str, np.ndarray], lr: float, **hp: Any) -> None:
        super().__init__(params, lr)
        self.alpha = hp.get("alpha", 0.99)
        self.eps = hp.get("eps", 1e-8)
        self.weight_decay = hp.get("weight_decay", 0.0)
        self.momentum = hp.get("momentum", 0.0)
        self.centered = hp.get("centered", False)
        self.maximize = hp.get("maximize", False)

    def _update(self, name: str, p: np.ndarray, g: np.ndarray) -> None:
        st = self.state.get(name)
        if st is None:
            st = {"step": 0, "square_avg": np.zeros_like(p)}
            self.state[name] = st
        if self.centered and "grad_avg" not in st:
            st["grad_avg"] = np.zeros_like(p)
        if self.momentum > 0 and "momentum_buffer" not in st:
            st["momentum_buffer"] = np.zeros_like(p)
        grad = -g if self.maximize else g
        st["step"] += 1
        if self.weight_decay != 0:
            grad = grad + self.weight_decay * p
        v = st["square_avg"]
        v *= self.alpha
        v += (1 - self.alpha) * (grad * grad)
        if self.centered:
            ga = st["grad_avg"]
            ga += (1 - self.alpha) * (grad - ga)
            avg = np.sqrt(v - ga * ga)
        else:
            avg = np.sqrt(v)
        avg += self.eps
        if self.momentum > 0:
            buf = st["momentum_buffer"]
            buf *= self.momentum
            buf += grad / avg
            p += -self.lr * buf
        else:
            p += -self.lr * (grad / avg)


# ---------------------------------------------------------------- helpers
def _bools(**names: list[Any]) -> list[dict[str, Any]]:
    keys = list(names)
    return [dict(zip(keys, vals)) for vals in itertools.product(*names.values())]


CASES: list[tuple[str, Any, Any, float, dict[str, Any]]] = []
for hp in _bools(momentum=[0.0, 0.9], weight_decay=[0.0, 0.01], maximize=[False, True]):
    CASES.append(("SGD", optim.SGD, _RefSGD, 0.05, hp))
for hp in _bools(dampening=[0.0, 0.3], weight_decay=[0.0, 0.01]):
    CASES.append(("SGD", optim.SGD, _RefSGD, 0.05, dict(hp, momentum=0.8)))
CASES.append(("SGD", optim.SGD, _RefSGD, 0.05, dict(momentum=0.9, nesterov=True, weight_decay=0.1)))
for cls, ref in ((optim.Adam, _RefAdam), (optim.AdamW, _RefAdamW)):
    for hp in _bools(weight_decay=[0.0, 0.05], amsgrad=[False, True], maximize=[False, True]):
        CASES.append((cls.__name__, cls, ref, 3e-3, dict(hp, betas=(0.8, 0.95), eps=1e-6)))
for hp in _bools(
    momentum=[0.0, 0.7], centered=[False, True], weight_decay=[0.0, 0.02], maximize=[False, True]
):
    CASES.append(("RMSprop", optim.RMSprop, _RefRMSprop, 1e-3, dict(hp, alpha=0.9)))

IDS = [f"{n}-" + "-".join(f"{k}={v}" for k, v in hp.items()) for n, _, _, _, hp in CASES]


def _flat_params(arrays: dict[str, np.ndarray]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Copies of ``arrays`` as views tiling one flat buffer (the layout of a model)."""
    dtype = next(iter(arrays.values())).dtype
    buf = np.empty(sum(a.size for a in arrays.values()), dtype)
    views, off = {}, 0
    for k, a in arrays.items():
        v = buf[off : off + a.size].reshape(a.shape)
        v[...] = a
        views[k] = v
        off += a.size
    return buf, views


def _bits(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a).view(np.uint32 if a.dtype == np.float32 else np.uint64)


def _assert_bitwise(a: np.ndarray, b: np.ndarray, what: str) -> None:
    if not np.array_equal(_bits(a), _bits(b)):
        diff = np.abs(a.astype(np.float64) - b.astype(np.float64))
        i = np.unravel_index(int(np.nanargmax(diff)), a.shape) if a.ndim else ()
        raise AssertionError(f"{what}: not bitwise equal; max |diff| {np.nanmax(diff):.3g} at {i}")


def _grads(rng: np.random.Generator, dtype: Any, k: int) -> dict[str, np.ndarray]:
    g = {n: rng.standard_normal(s).astype(dtype) for n, s in SHAPES.items()}
    if k % 7 == 3:  # exact zeros (signed too): sqrt(0), 0/x and the sign rules
        g["b_ih"][:4] = 0.0
        g["b_hh"][:4] = -0.0
    return g


# ---------------------------------------------------------------- the tests
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("flat", [True, False], ids=["flat", "dict"])
@pytest.mark.parametrize(("name", "cls", "ref_cls", "lr", "hp"), CASES, ids=IDS)
def test_fused_update_is_bitwise_the_numpy_formula(
    name: str, cls: Any, ref_cls: Any, lr: float, hp: dict[str, Any], flat: bool, dtype: Any
) -> None:
    rng = np.random.default_rng(0)
    init = {n: rng.standard_normal(s).astype(dtype) for n, s in SHAPES.items()}
    ref_params = {k: v.copy() for k, v in init.items()}
    if flat:
        _, params = _flat_params(init)
    else:
        params = {k: v.copy() for k, v in init.items()}
    opt = cls(params, lr=lr, **hp)
    assert (opt._flat is not None) == flat
    ref = ref_cls(ref_params, lr, **hp)
    gbuf, gviews = _flat_params({k: np.zeros(s, dtype) for k, s in SHAPES.items()})
    for k in range(40):
        g = _grads(rng, dtype, k)
        if k in (5, 6):  # some parameters without a gradient: per-array updates, then fused again
            g["head"] = None  # type: ignore[assignment]
            if k == 6:
                g["w_hh"] = None  # type: ignore[assignment]
        if k % 3 == 0 and flat and all(v is not None for v in g.values()):
            for n, v in g.items():
                gviews[n][...] = v
            opt.step(gbuf)  # the flat gradient buffer itself
        elif k % 3 == 1 and flat:
            for n, v in g.items():
                if v is not None:
                    gviews[n][...] = v
            opt.step({n: (gviews[n] if v is not None else None) for n, v in g.items()})
        else:
            opt.step({n: (None if v is None else v.copy()) for n, v in g.items()})
        ref.step(g)
        if k in (0, 1, 4, 7, 39):
            for n in SHAPES:
                _assert_bitwise(params[n], ref_params[n], f"step {k} param {n}")
                for key, a in ref.state.get(n, {}).items():
                    if isinstance(a, np.ndarray):
                        _assert_bitwise(opt.state[n][key], a, f"step {k} state {n}.{key}")
                    else:
                        assert opt.state[n][key] == a


@pytest.mark.parametrize("flat", [True, False], ids=["flat", "dict"])
@pytest.mark.parametrize(
    ("cls", "ref_cls", "switch"),
    [
        (optim.Adam, _RefAdam, {"amsgrad": True}),
        (optim.RMSprop, _RefRMSprop, {"centered": True}),
        (optim.RMSprop, _RefRMSprop, {"momentum": 0.5}),
        (optim.RMSprop, _RefRMSprop, {"centered": True, "momentum": 0.5}),
    ],
)
def test_state_buffers_added_when_a_hyperparameter_turns_them_on(
    cls: Any, ref_cls: Any, switch: dict[str, Any], flat: bool
) -> None:
    """AMSGrad's max_exp_avg_sq, RMSprop's grad_avg / momentum_buffer start at zero on the first
    step after the hyperparameter is switched on, on the fused and the per-array path alike."""
    rng = np.random.default_rng(3)
    init = {n: rng.standard_normal(s) for n, s in SHAPES.items()}
    ref_params = {k: v.copy() for k, v in init.items()}
    params = _flat_params(init)[1] if flat else {k: v.copy() for k, v in init.items()}
    opt, ref = cls(params, lr=1e-2), ref_cls(ref_params, 1e-2)
    assert (opt._flat is not None) == flat
    for k in range(6):
        if k == 3:
            for name, value in switch.items():
                setattr(opt, name, value)
                setattr(ref, name, value)
        g = _grads(rng, np.float64, k)
        if flat:  # the flat gradient buffer: one fused update (_update_flat)
            gbuf, gviews = _flat_params(g)
            opt.step(gbuf)
        else:
            opt.step({n: v.copy() for n, v in g.items()})
        ref.step(g)
    for n in SHAPES:
        _assert_bitwise(params[n], ref_params[n], f"param {n}")
        assert sorted(opt.state[n]) == sorted(ref.state[n]), n
        for key, a in ref.state[n].items():
            if isinstance(a, np.ndarray):
                _assert_bitwise(opt.state[n][key], a, f"state {n}.{key}")
            else:
                assert opt.state[n][key] == a, (n, key)


@pytest.mark.parametrize("cls", [optim.SGD, optim.Adam, optim.AdamW, optim.RMSprop])
def test_flat_state_round_trips_and_copies(cls: Any) -> None:
    """state_dict/load_state_dict, deepcopy and pickle keep the update bitwise; the loaded state
    lives in the flat buffers (one fused call again)."""
    hp: dict[str, Any] = {"SGD": {"momentum": 0.9}, "RMSprop": {"centered": True, "momentum": 0.5}}
    hp = hp.get(cls.__name__, {"amsgrad": True})
    rng = np.random.default_rng(1)
    init = {n: rng.standard_normal(s) for n, s in SHAPES.items()}
    _, p1 = _flat_params(init)
    _, p2 = _flat_params(init)
    o1 = cls(p1, lr=1e-2, **hp)
    gs = [_grads(rng, np.float64, k) for k in range(8)]
    for g in gs[:4]:
        o1.step(g)
    o2 = cls(p2, lr=1e-2, **hp)
    for n in p2:
        p2[n][...] = p1[n]
    o2.load_state_dict(o1.state_dict())
    bases = [id(b) for b in o2._flat_state.values()]
    for st in o2.state.values():
        for a in st.values():
            if isinstance(a, np.ndarray):
                assert id(a.base) in bases  # a view of a flat state buffer
    assert o2._flat_ready()
    o3 = copy.deepcopy(o1)  # the parameter buffer is copied with it: flat again, on the copy
    o4 = pickle.loads(pickle.dumps(o1))
    for o in (o3, o4):
        assert o._flat is not None and not np.shares_memory(o._flat, p1["w_ih"])
        assert o._flat_ready()
    for g in gs[4:]:
        for o in (o1, o2, o3, o4):
            o.step(g)
    for n in SHAPES:
        for p in (p2, o3.params, o4.params):
            _assert_bitwise(p[n], p1[n], f"param {n}")


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_clip_kernels_are_bitwise_numpy(dtype: Any) -> None:
    rng = np.random.default_rng(3)
    g = rng.standard_normal(1001).astype(dtype) * 3
    g[:6] = [0.0, -0.0, np.nan, 0.7, -0.7, np.inf]
    for value in (0.0, 0.5, 0.7, 2.0):
        a, b = g.copy(), g.copy()
        np.clip(a, -value, value, out=a)
        core.grad_clip(b, value)
        if value == 0.0:  # NumPy's own sign of a clipped zero differs between its SIMD and scalar
            np.testing.assert_array_equal(b, a, err_msg="clip 0")  # loops: values only
        else:
            _assert_bitwise(b, a, f"clip {value}")
    for coef in (0.3, 1 / 3, 2.5):
        a, b = g.copy(), g.copy()
        a *= coef
        core.grad_scale(b, coef)
        _assert_bitwise(b, a, f"scale {coef}")


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_global_norm_against_the_per_array_formula(dtype: Any) -> None:
    """One pass over the flat buffer vs the old norm of per-array norms: equal to rounding."""
    rng = np.random.default_rng(4)
    arrays = {n: rng.standard_normal(s).astype(dtype) for n, s in SHAPES.items()}
    arrays["big"] = rng.standard_normal(100_003).astype(dtype)
    old_total = float(
        np.linalg.norm([np.linalg.norm(g.ravel().astype(np.float64)) for g in arrays.values()])
    )
    _, views = _flat_params(arrays)
    for grads in (arrays, views):
        sumsq, vmax = optim.grad_sumsq_maxabs(grads)
        assert math.isclose(math.sqrt(sumsq), old_total, rel_tol=1e-14), (
            f"norm {math.sqrt(sumsq)!r} vs {old_total!r}"
        )
        assert vmax == max(float(np.abs(g).max()) for g in arrays.values())
    g2 = {k: v.copy() for k, v in views.items()}
    _, v2 = _flat_params(g2)
    t1 = optim.clip_grad_norm_(v2, 1.0)
    assert math.isclose(t1, old_total, rel_tol=1e-14)
    scale = 1.0 / (t1 + 1e-6)
    for k, v in v2.items():
        _assert_bitwise(v, g2[k] * scale, f"clipped {k}")
    arrays["head"][1, 2] = np.nan
    assert math.isnan(optim.grad_sumsq_maxabs(arrays)[1])


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_embedding_backward_is_bitwise_add_at(dtype: Any) -> None:
    rng = np.random.default_rng(5)
    ids = rng.integers(0, 7, 500)  # many repeats: the order of the sums matters
    dy = rng.standard_normal((500, 3)).astype(dtype)
    a = rng.standard_normal((7, 3)).astype(dtype)
    b = a.copy()
    np.add.at(a, ids, dy)
    core.embedding_backward(b, ids, dy)
    _assert_bitwise(b, a, "embedding gradient")
    with pytest.raises(ValueError, match=r"ids: expected values in \[0, 7\)"):
        core.embedding_backward(b, np.array([0, 7]), dy[:2])
