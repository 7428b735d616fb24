"""Tests of rnnfast._argcheck: the shape-level argument checks shared by the front ends."""

from __future__ import annotations

import numpy as np
import pytest

from rnnfast import _argcheck as A

__all__: list[str] = []


def test_sequence_sizes_returns_t_b_i_h() -> None:
    # GRU (G = 3), T=5, B=2, I=4, H=6: w_ih (18, 4), w_hh (18, 6)
    assert A.sequence_sizes(3, (5, 2, 4), (18, 4), (18, 6)) == (5, 2, 4, 6)
    assert A.sequence_sizes(1, [1, 1, 1], [1, 1], [1, 1]) == (1, 1, 1, 1)


@pytest.mark.parametrize(
    ("x", "w_ih", "w_hh", "pattern"),
    [
        ((5, 2), (18, 4), (18, 6), r"x: expected a 3-D array of shape \(T, B, I\), got shape"),
        ((0, 2, 4), (18, 4), (18, 6), r"x: expected shape \(T, B, I\) with T, B, I >= 1"),
        ((5, 2, 4), (17, 4), (18, 6), r"w_ih: expected shape \(3\*H, 4\) with H >= 1, got \(17"),
        ((5, 2, 4), (0, 4), (0, 0), r"w_ih: expected shape \(3\*H, 4\) with H >= 1, got \(0"),
        ((5, 2, 4), (18, 3), (18, 6), r"w_ih: expected shape \(3\*H, 4\) with H >= 1, got \(18, 3"),
        ((5, 2, 4), (18,), (18, 6), r"w_ih: expected shape \(3\*H, 4\)"),
        ((5, 2, 4), (18, 4), (18, 5), r"w_hh: expected shape \(18, 6\), got \(18, 5\)"),
    ],
)
def test_sequence_sizes_names_the_bad_argument(
    x: tuple[int, ...], w_ih: tuple[int, ...], w_hh: tuple[int, ...], pattern: str
) -> None:
    with pytest.raises(ValueError, match=pattern):
        A.sequence_sizes(3, x, w_ih, w_hh)


def test_small_checks() -> None:
    A.check_shape("h0", (2, 3), (2, 3))
    with pytest.raises(ValueError, match=r"h0: expected shape \(2, 3\), got \(3, 2\)"):
        A.check_shape("h0", (3, 2), (2, 3))
    assert A.check_bool("batch_first", np.bool_(True)) is True
    with pytest.raises(TypeError, match="batch_first: expected a bool, got int"):
        A.check_bool("batch_first", 1)
    assert A.check_nonlinearity("relu") == "relu"
    with pytest.raises(ValueError, match="nonlinearity: expected 'tanh' or 'relu', got 'gelu'"):
        A.check_nonlinearity("gelu")
    with pytest.raises(ValueError, match="nonlinearity"):
        A.check_nonlinearity(["tanh"])
    A.check_bias_pair(None, None)
    A.check_bias_pair(np.zeros(3), np.zeros(3))
    with pytest.raises(ValueError, match="b_ih, b_hh: expected both arrays or both None"):
        A.check_bias_pair(np.zeros(3), None)
    A.check_lengths_dtype(np.dtype(np.uint8), 4)
    with pytest.raises(TypeError, match=r"lengths: expected an integer array of shape \(4,\)"):
        A.check_lengths_dtype(np.dtype(np.float32), 4)
    with pytest.raises(TypeError, match="lengths"):
        A.check_lengths_dtype(np.dtype(bool), 4)
