"""Tests of rnnfast.losses.

Values against their formulas written out here, gradients against central finite differences
(float64), PyTorch parity, stability on huge logits, masks, ignore_index, and argument errors.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from helpers import assert_close, central_difference
from rnnfast.losses import BCEWithLogitsLoss, CrossEntropyLoss, MSELoss, sequence_mask

__all__: list[str] = []

FD_EPS = 1e-6
FD_TOL = 1e-7  # relative max error of analytic vs central-difference gradients (float64)


def _rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def _fd_check(loss_fn, pred: np.ndarray, target, mask=None, name: str = "dpred") -> float:
    pred = np.array(pred, dtype=np.float64, copy=True)
    _, grad = loss_fn(pred, target, mask)
    num = central_difference(lambda: loss_fn.forward(pred, target, mask), pred, FD_EPS)
    return assert_close(grad, num, FD_TOL, name)


# ----------------------------------------------------------------------------------------- MSE


def _mse_expected(p, y, mask=None, reduction="mean"):
    """1/2 (p - y)^2 summed over the counted elements (a plain loop), divided by their number."""
    p = np.asarray(p, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    total, count = 0.0, 0
    for idx in np.ndindex(*p.shape):
        if mask is not None and not mask[idx[: mask.ndim]]:
            continue
        total += 0.5 * (p[idx] - y[idx]) ** 2
        count += 1
    if reduction == "sum":
        return total
    return total / count if count else 0.0


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_mse_value_and_fd_gradient(reduction: str) -> None:
    rng = _rng(1)
    p = rng.standard_normal((4, 3, 2))
    y = rng.standard_normal((4, 3, 2))
    fn = MSELoss(reduction)
    value, grad = fn(p, y)
    assert math.isclose(value, _mse_expected(p, y, reduction=reduction), rel_tol=1e-13)
    assert grad.shape == p.shape and grad.dtype == np.float64
    _fd_check(fn, p, y)


def test_mse_gradient_is_residual_over_n() -> None:
    # d/dp mean(1/2 (p - y)^2) = (p - y) / N: the 1/2 makes it the plain residual
    p = np.array([1.0, 2.0, 4.0, -1.0])
    y = np.array([0.0, 2.0, 1.0, 1.0])
    value, grad = MSELoss()(p, y)
    assert value == pytest.approx((0.5 * 1 + 0 + 0.5 * 9 + 0.5 * 4) / 4, rel=1e-15)
    np.testing.assert_array_equal(grad, np.array([1.0, 0.0, 3.0, -2.0]) / 4)


def test_mse_mask_prefix_and_fd() -> None:
    rng = _rng(2)
    p = rng.standard_normal((5, 3, 2))
    y = rng.standard_normal((5, 3, 2))
    mask = sequence_mask(np.array([5, 2, 0]), 5)  # (T=5, B=3)
    fn = MSELoss()
    value, grad = fn(p, y, mask)
    assert math.isclose(value, _mse_expected(p, y, mask), rel_tol=1e-13)
    assert np.all(grad[~mask] == 0), "masked steps must get zero gradient"
    _fd_check(fn, p, y, mask)
    # padding may hold anything (even NaN) without affecting the result
    p_pad = p.copy()
    p_pad[~mask] = np.nan
    v2, g2 = fn(p_pad, y, mask)
    assert v2 == value and np.array_equal(g2, grad)


def test_mse_matches_half_torch() -> None:
    torch = pytest.importorskip("torch")
    rng = _rng(3)
    p = rng.standard_normal((6, 5))
    y = rng.standard_normal((6, 5))
    for reduction in ("mean", "sum"):
        tp = torch.tensor(p, requires_grad=True)
        tl = torch.nn.MSELoss(reduction=reduction)(tp, torch.tensor(y))
        tl.backward()
        value, grad = MSELoss(reduction)(p, y)
        assert math.isclose(2 * value, tl.item(), rel_tol=1e-13), (value, tl.item())
        assert_close(2 * grad, tp.grad.numpy(), 1e-13, f"mse grad ({reduction})")


# ----------------------------------------------------------------------------------------- BCE


def _bce_expected(x, y, pos_weight=1.0, mask=None):
    """-[pw y log s + (1 - y) log(1 - s)], s = 1 / (1 + exp(-x)), naive (valid for moderate x)."""
    x = np.asarray(x, dtype=np.float64)
    s = 1.0 / (1.0 + np.exp(-x))
    elem = -(pos_weight * y * np.log(s) + (1 - y) * np.log(1 - s))
    if mask is None:
        return float(np.mean(elem))
    m = np.broadcast_to(mask.reshape(mask.shape + (1,) * (x.ndim - mask.ndim)), x.shape)
    return float(np.sum(elem[m]) / np.count_nonzero(m))


def test_bce_value_fd_and_soft_targets() -> None:
    rng = _rng(4)
    x = rng.standard_normal((4, 3)) * 3
    y = rng.uniform(0, 1, (4, 3))  # soft labels
    fn = BCEWithLogitsLoss()
    value, grad = fn(x, y)
    assert math.isclose(value, _bce_expected(x, y), rel_tol=1e-12)
    assert_close(grad, (1 / (1 + np.exp(-x)) - y) / x.size, 1e-13, "bce grad = (sigmoid - y)/N")
    _fd_check(fn, x, y)


def test_bce_pos_weight_and_mask() -> None:
    rng = _rng(5)
    x = rng.standard_normal((3, 4, 2)) * 2
    y = (rng.uniform(size=(3, 4, 2)) > 0.5).astype(np.float64)
    pw = np.array([0.5, 3.0])
    mask = np.array([[1, 1, 0, 1], [0, 1, 1, 1], [1, 0, 0, 0]], dtype=bool)
    fn = BCEWithLogitsLoss(pos_weight=pw)
    value = fn.forward(x, y, mask)
    assert math.isclose(value, _bce_expected(x, y, pw, mask), rel_tol=1e-12)
    _fd_check(fn, x, y, mask)
    y_pad = y.copy()
    y_pad[~mask] = -1.0  # invalid targets at padded items are never looked at
    assert fn.forward(x, y_pad, mask) == value


def test_bce_matches_torch() -> None:
    torch = pytest.importorskip("torch")
    rng = _rng(6)
    x = rng.standard_normal((5, 3)) * 4
    y = rng.uniform(size=(5, 3))
    pw = np.array([1.0, 2.5, 0.3])
    for reduction in ("mean", "sum"):
        tx = torch.tensor(x, requires_grad=True)
        tl = torch.nn.BCEWithLogitsLoss(pos_weight=torch.tensor(pw), reduction=reduction)(
            tx, torch.tensor(y)
        )
        tl.backward()
        value, grad = BCEWithLogitsLoss(pos_weight=pw, reduction=reduction)(x, y)
        assert math.isclose(value, tl.item(), rel_tol=1e-13), (value, tl.item())
        assert_close(grad, tx.grad.numpy(), 1e-13, f"bce grad ({reduction})")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_bce_huge_logits_are_finite_and_exact(dtype) -> None:
    x = np.array([1e4, -1e4, 1e4, -1e4, 80.0, -80.0], dtype=dtype)
    y = np.array([1.0, 0.0, 0.0, 1.0, 1.0, 1.0], dtype=dtype)
    value, grad = BCEWithLogitsLoss(reduction="sum")(x, y)
    # right answers: 0, 0, 1e4, 1e4 (log(1 + e^1e4) = 1e4 + tiny), ~e^-80, 80 + e^-80
    expected = 0 + 0 + 1e4 + 1e4 + math.exp(-80) + 80 + math.log1p(math.exp(-80))
    assert np.isfinite(value) and math.isclose(value, expected, rel_tol=1e-6), value
    assert grad.dtype == dtype and np.all(np.isfinite(grad))
    np.testing.assert_allclose(grad, [0, 0, 1, -1, -math.exp(-80), -1], rtol=1e-6, atol=0)


# ------------------------------------------------------------------------------ cross-entropy


def _ce_expected(z, t, weight=None, ignore_index=-100, mask=None):
    """Plain loop: -log(exp(z_y) / sum exp(z)) weighted by w[y], mean over counted items."""
    z = np.asarray(z, dtype=np.float64)
    num = den = 0.0
    for idx in np.ndindex(*t.shape):
        if t[idx] == ignore_index or (mask is not None and not mask[idx[: mask.ndim]]):
            continue
        row = z[idx]
        w = 1.0 if weight is None else weight[t[idx]]
        num += -w * math.log(math.exp(row[t[idx]]) / sum(math.exp(v) for v in row))
        den += w
    return num / den if den else 0.0


def test_ce_value_and_fd_gradient() -> None:
    rng = _rng(7)
    z = rng.standard_normal((4, 3, 5))
    t = rng.integers(0, 5, size=(4, 3))
    fn = CrossEntropyLoss()
    value, grad = fn(z, t)
    assert math.isclose(value, _ce_expected(z, t), rel_tol=1e-12)
    row_sums = np.abs(grad.sum(axis=-1))
    assert row_sums.max() < 1e-15, (
        f"softmax grad rows must sum to 0, max |sum| {row_sums.max():.2e}"
    )
    _fd_check(fn, z, t)


def test_ce_ignore_index_mask_and_weight() -> None:
    rng = _rng(8)
    z = rng.standard_normal((5, 2, 4))
    t = rng.integers(0, 4, size=(5, 2))
    t[3:, 0] = -1  # padding
    t[1, 1] = -1
    w = np.array([0.2, 1.0, 2.0, 0.7])
    mask = np.ones((5, 2), dtype=bool)
    mask[0, 1] = False
    fn = CrossEntropyLoss(weight=w, ignore_index=-1)
    value, grad = fn(z, t, mask)
    assert math.isclose(value, _ce_expected(z, t, w, -1, mask), rel_tol=1e-12)
    skipped = (t == -1) | ~mask
    assert np.all(grad[skipped] == 0), "ignored / masked items must get zero gradient"
    _fd_check(fn, z, t, mask)
    # the loss equals the loss of the kept items alone
    keep = ~skipped
    v_sub = fn.forward(z[keep], t[keep])
    assert math.isclose(value, v_sub, rel_tol=1e-13)


def test_ce_all_ignored_is_zero() -> None:
    z = np.ones((3, 4))
    value, grad = CrossEntropyLoss()(z, np.full(3, -100))
    assert value == 0.0 and np.all(grad == 0)


def test_ce_matches_torch() -> None:
    torch = pytest.importorskip("torch")
    rng = _rng(9)
    z = rng.standard_normal((6, 3, 5)) * 3
    t = rng.integers(0, 5, size=(6, 3))
    t[4:, 1] = -100
    w = rng.uniform(0.1, 2.0, 5)
    for reduction in ("mean", "sum"):
        tz = torch.tensor(z, requires_grad=True)
        tl = torch.nn.CrossEntropyLoss(weight=torch.tensor(w), reduction=reduction)(
            tz.reshape(-1, 5), torch.tensor(t.reshape(-1))
        )
        tl.backward()
        value, grad = CrossEntropyLoss(weight=w, reduction=reduction)(z, t)
        assert math.isclose(value, tl.item(), rel_tol=1e-13), (value, tl.item())
        assert_close(grad, tz.grad.numpy(), 1e-13, f"ce grad ({reduction})")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_ce_huge_logits_are_finite(dtype) -> None:
    big = 1e4 if dtype == np.float32 else 1e300
    z = np.array([[big, 0.0, -big], [big, big, 0.0], [-big, -big, -big]], dtype=dtype)
    t = np.array([0, 2, 1])
    value, grad = CrossEntropyLoss(reduction="sum")(z, t)
    # row 0: right and dominant -> 0; row 1: target 0 vs two at big -> big + log 2; row 2: log 3
    expected = 0.0 + (big + math.log(2)) + math.log(3)
    assert np.isfinite(value) and math.isclose(value, expected, rel_tol=1e-6), value
    assert grad.dtype == dtype and np.all(np.isfinite(grad))
    np.testing.assert_allclose(
        grad, [[0, 0, 0], [0.5, 0.5, -1], [1 / 3, -2 / 3, 1 / 3]], rtol=1e-6, atol=1e-7
    )


@given(
    n=st.integers(1, 4),
    c=st.integers(1, 5),
    seed=st.integers(0, 2**16),
    reduction=st.sampled_from(["mean", "sum"]),
)
def test_ce_fd_property(n: int, c: int, seed: int, reduction: str) -> None:
    rng = _rng(seed)
    z = rng.standard_normal((n, 2, c)) * 2
    t = rng.integers(-1, c, size=(n, 2))  # -1 = ignored
    _fd_check(CrossEntropyLoss(ignore_index=-1, reduction=reduction), z, t)


# --------------------------------------------------------------------------------- dtypes, API


@pytest.mark.parametrize(
    "fn,target",
    [
        (MSELoss(), lambda r, s: r.standard_normal(s)),
        (BCEWithLogitsLoss(), lambda r, s: r.uniform(size=s)),
        (CrossEntropyLoss(), lambda r, s: r.integers(0, s[-1], size=s[:-1])),
    ],
    ids=["mse", "bce", "ce"],
)
def test_float32_preserved_and_close_to_float64(fn, target) -> None:
    rng = _rng(10)
    x64 = rng.standard_normal((4, 3, 5))
    y = target(rng, x64.shape)
    v64, g64 = fn(x64, y)
    v32, g32 = fn(x64.astype(np.float32), y)
    assert g32.dtype == np.float32 and g64.dtype == np.float64
    assert isinstance(v32, float) and isinstance(v64, float)
    assert math.isclose(v32, v64, rel_tol=1e-5), (v32, v64)
    assert_close(g32, g64, 1e-5, f"{type(fn).__name__} float32 grad")
    assert fn.forward(x64, y) == v64
    assert np.array_equal(fn.backward(x64, y), g64)


def test_sequence_mask() -> None:
    m = sequence_mask(np.array([3, 0, 1]), 4)
    expected = np.array([[1, 0, 1], [1, 0, 0], [1, 0, 0], [0, 0, 0]], dtype=bool)
    np.testing.assert_array_equal(m, expected)
    np.testing.assert_array_equal(sequence_mask([3, 0, 1], 4, batch_first=True), expected.T)
    with pytest.raises(ValueError, match="lengths"):
        sequence_mask([5], 4)
    with pytest.raises(TypeError, match="lengths"):
        sequence_mask([1.5], 4)


def test_zero_size_and_numeric_mask() -> None:
    v, g = MSELoss()(np.zeros((0, 3)), np.zeros((0, 3)))
    assert v == 0.0 and g.shape == (0, 3)
    p = np.array([[1.0, 2.0], [3.0, 4.0]])
    assert MSELoss().forward(p, np.zeros_like(p), np.array([1, 0])) == pytest.approx(1.25)


@pytest.mark.parametrize(
    "call,exc,match",
    [
        (lambda: MSELoss()(np.zeros(3, dtype=np.int64), np.zeros(3)), TypeError, "pred"),
        (lambda: MSELoss()(np.zeros(3, dtype=np.float16), np.zeros(3)), TypeError, "pred"),
        (lambda: MSELoss()(np.zeros(3), np.zeros(4)), ValueError, "target"),
        (lambda: MSELoss()(np.zeros(3), np.array(["a", "b", "c"])), TypeError, "target"),
        (
            lambda: MSELoss()(np.zeros((2, 3)), np.zeros((2, 3)), np.ones(3, bool)),
            ValueError,
            "mask",
        ),
        (lambda: MSELoss()(np.zeros(3), np.zeros(3), np.array([0, 2, 1])), ValueError, "mask"),
        (lambda: MSELoss(reduction="none"), ValueError, "reduction"),
        (lambda: BCEWithLogitsLoss()(np.zeros(2), np.array([0.0, 1.5])), ValueError, "target"),
        (
            lambda: BCEWithLogitsLoss(pos_weight=[1.0, 2.0])(np.zeros((2, 3)), np.zeros((2, 3))),
            ValueError,
            "pos_weight",
        ),
        (lambda: BCEWithLogitsLoss(pos_weight=-1.0), ValueError, "pos_weight"),
        (lambda: CrossEntropyLoss()(np.zeros((2, 3)), np.zeros(2)), TypeError, "target"),
        (lambda: CrossEntropyLoss()(np.zeros((2, 3)), np.zeros(3, int)), ValueError, "target"),
        (
            lambda: CrossEntropyLoss()(np.zeros((2, 3)), np.array([0, 3])),
            ValueError,
            "out of range",
        ),
        (lambda: CrossEntropyLoss()(np.zeros((2, 0)), np.zeros(2, int)), ValueError, "pred"),
        (
            lambda: CrossEntropyLoss(weight=[1.0, 1.0])(np.zeros((2, 3)), np.zeros(2, int)),
            ValueError,
            "weight",
        ),
        (lambda: CrossEntropyLoss(ignore_index=1.5), TypeError, "ignore_index"),
    ],
)
def test_bad_arguments(call, exc, match) -> None:
    with pytest.raises(exc, match=match):
        call()


def test_nan_propagates() -> None:
    # documented: non-finite predictions are not hidden, so the training loop can detect them
    v, g = CrossEntropyLoss()(np.array([[np.nan, 0.0]]), np.array([1]))
    assert math.isnan(v) and np.isnan(g).all()
    v, _ = MSELoss()(np.array([np.inf]), np.array([0.0]))
    assert math.isinf(v)
