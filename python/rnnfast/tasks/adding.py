"""``adding``: the adding problem (Hochreiter & Schmidhuber 1997), a test of long-term memory.

Input (T, N, 2): channel 0 holds values u_t ~ U(0, 1); channel 1 is a marker that is 1 at exactly
two
steps, one in the first half [0, T/2) and one in the second half [T/2, T), else 0. Target (N, 1):
the
sum of the two marked values. Predicting the constant 1 gives MSE Var(u_a + u_b) = 1/6 ~ 0.167 (the
baseline); a model "solves" the task at MSE < 0.01. The first marker can be up to T steps back, so a
tanh RNN (whose gradient vanishes with distance) fails at T = 100 while LSTM and GRU succeed.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ._base import Split, Task, check_positive_int, check_seed, task_config

__all__ = ["AddingTask", "make_adding"]

#: MSE of the constant prediction 1: Var(U(0,1) + U(0,1)) = 2 * 1/12.
BASELINE_MSE = 1.0 / 6.0


def make_adding(n: int, t_steps: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """x (T, n, 2) float32 and y (n, 1) float32 for the adding problem at length ``t_steps``."""
    values = rng.uniform(0.0, 1.0, size=(t_steps, n))
    half = t_steps // 2
    first = rng.integers(0, half, size=n)
    second = rng.integers(half, t_steps, size=n)
    markers = np.zeros((t_steps, n))
    cols = np.arange(n)
    markers[first, cols] = 1.0
    markers[second, cols] = 1.0
    y = values[first, cols] + values[second, cols]
    x = np.stack([values, markers], axis=2).astype(np.float32)
    return x, y[:, None].astype(np.float32)


class AddingTask(Task):
    """The adding problem; see the module docstring."""

    name = "adding"
    description = (
        "long-term memory: sum of two marked numbers in a length-T sequence (baseline MSE 0.167)"
    )
    mode = "many_to_one"
    kind = "regression"
    data_options = ("seq_len", "n_train", "n_val")
    default_config: dict[str, Any] = task_config(
        cell="lstm",
        hidden=64,
        seq_len=100,
        batch_size=32,
        epochs=4,
        lr=0.01,
        mode="many_to_one",
        loss="mse",
        init="orthogonal",
        n_train=10000,
        n_val=1000,
    )

    def make_data(
        self,
        seed: int = 0,
        *,
        seq_len: int = 100,
        n_train: int = 10000,
        n_val: int = 1000,
        **_: Any,
    ) -> tuple[Split, Split]:
        """(train, val): x (T, N, 2) float32, y (N, 1) float32."""
        seed = check_seed(seed)
        seq_len = check_positive_int("seq_len", seq_len, 2)
        n_train = check_positive_int("n_train", n_train)
        n_val = check_positive_int("n_val", n_val)
        rng = np.random.default_rng(seed)
        train = Split(*make_adding(n_train, seq_len, rng))
        val = Split(*make_adding(n_val, seq_len, rng))
        return train, val

    def sizes(self, train: Split) -> dict[str, Any]:
        return {"input_size": 2, "output_size": 1}

    def baseline(self, val: Split, train: Split | None = None) -> dict[str, float]:
        y = val.y.astype(np.float64)
        return {"constant_mse": float(np.mean((y - 1.0) ** 2)), "theoretical_mse": BASELINE_MSE}
