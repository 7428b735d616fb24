"""``sine``: time-series forecasting of a noisy sum of sines (next-value prediction).

Each sequence is its own series ``s_t = sum_k a_k sin(2 pi t / P_k + phi_k) + noise`` with 3 random
components (periods 6-40 steps, amplitudes 0.2-0.8), plus Gaussian noise of std ``noise``.

- ``mode="many_to_one"`` (default): x = s_0..s_{T-1} (T, N, 1); y = s_T (N, 1).
- ``mode="many_to_many"``: y_t = s_{t+1} for every t (T, N, 1).

Baselines (plain mean squared error, not the halved training loss): ``persistence_mse`` predicts
the last seen value (y_hat = s_t for target s_{t+1}); ``mean_mse`` predicts 0 (the series' mean).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ._base import Split, Task, check_positive_int, check_seed, task_config

__all__ = ["SineTask", "make_series"]


def make_series(n: int, length: int, rng: np.random.Generator, noise: float = 0.05) -> np.ndarray:
    """(n, length) float64 noisy sums of 3 sines, one independent series per row."""
    k = 3
    periods = rng.uniform(6.0, 40.0, size=(n, k, 1))
    amps = rng.uniform(0.2, 0.8, size=(n, k, 1))
    phases = rng.uniform(0.0, 2.0 * np.pi, size=(n, k, 1))
    t = np.arange(length, dtype=np.float64)[None, None, :]
    clean = np.sum(amps * np.sin(2.0 * np.pi * t / periods + phases), axis=1)
    return clean + noise * rng.standard_normal((n, length))


class SineTask(Task):
    """Next-value forecasting of noisy sums of sines; see the module docstring."""

    name = "sine"
    description = "time series: next value of a noisy sum of sines (MSE vs persistence)"
    mode = "many_to_one"
    kind = "regression"
    data_options = ("seq_len", "n_train", "n_val", "noise", "mode")
    default_config: dict[str, Any] = task_config(
        cell="gru",
        hidden=32,
        seq_len=40,
        batch_size=32,
        epochs=8,
        lr=0.01,
        mode="many_to_one",
        loss="mse",
        n_train=2000,
        n_val=500,
        noise=0.05,
    )

    def make_data(
        self,
        seed: int = 0,
        *,
        seq_len: int = 40,
        n_train: int = 2000,
        n_val: int = 500,
        noise: float = 0.05,
        mode: str = "many_to_one",
        **_: Any,
    ) -> tuple[Split, Split]:
        """(train, val): x (T, N, 1) float32; y (N, 1) or (T, N, 1) float32 per ``mode``."""
        seed = check_seed(seed)
        seq_len = check_positive_int("seq_len", seq_len, 2)
        n_train = check_positive_int("n_train", n_train)
        n_val = check_positive_int("n_val", n_val)
        if mode not in ("many_to_one", "many_to_many"):
            raise ValueError(f"mode: expected 'many_to_one' or 'many_to_many', got {mode!r}")
        if not noise >= 0:
            raise ValueError(f"noise: expected a float >= 0, got {noise!r}")
        rng = np.random.default_rng(seed)
        splits = []
        for n in (n_train, n_val):
            s = make_series(n, seq_len + 1, rng, noise).T  # (T+1, N)
            x = s[:-1, :, None].astype(np.float32)
            y = s[1:, :, None] if mode == "many_to_many" else s[-1, :, None]
            splits.append(Split(x, np.ascontiguousarray(y, dtype=np.float32), info={"mode": mode}))
        return splits[0], splits[1]

    def sizes(self, train: Split) -> dict[str, Any]:
        return {"input_size": 1, "output_size": 1}

    def baseline(self, val: Split, train: Split | None = None) -> dict[str, float]:
        x = val.x.astype(np.float64)
        y = val.y.astype(np.float64)
        if y.ndim == 3:  # many-to-many: persistence predicts y_t = x_t
            persist = x
        else:
            persist = x[-1]
        return {
            "persistence_mse": float(np.mean((y - persist) ** 2)),
            "mean_mse": float(np.mean(y**2)),
        }
