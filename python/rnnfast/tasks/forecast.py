"""``sunspots`` and ``co2``: one-step-ahead forecasting of real time series bundled with statsmodels.

Data (no download; needs the optional extra ``rnnfast[data]``, which installs statsmodels; the
loaders raise ImportError naming it otherwise):

* ``sunspots``: yearly mean sunspot numbers 1700-2008 (309 values; ``statsmodels.datasets.sunspots``,
  from NOAA's National Geophysical Data Center; public domain). Period (solar cycle) ~11 years.
* ``co2``: atmospheric CO2 at Mauna Loa in ppm, weekly from March 1958 to December 2001
  (``statsmodels.datasets.co2``, Keeling and Whorf, Scripps Institution of Oceanography, via
  CDIAC; public domain), averaged per calendar month (526 months) after filling the 59 missing
  weeks by linear interpolation. Period 12 months, plus a rising trend.

Windows: ``input_len`` consecutive values predict the next one. Each window is expressed relative
to its last value (x_t - x_last, target x_next - x_last) and divided by the standard deviation of
one-step changes on the training part, so persistence predicts 0 and a trending series never
leaves the range seen in training. The first ``1 - val_fraction`` of the series (chronologically)
gives the training windows; validation windows are those whose target lies in the rest.
x (T, N, 1) float32, y (N, 1) float32. Many-to-one regression, MSE in these scaled units
(``val_rmse`` is the root of it in the series' own units: sunspot number or ppm).

Baselines (same windows, same units): ``persistence_mse`` (next = last) and ``seasonal_naive_mse``
(next = the value one period earlier, x_{t+1-P}: P = 11 years for sunspots, 12 months for co2).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ._base import Split, Task, check_fraction, check_positive_int, check_seed, task_config

__all__ = ["CO2Task", "SunspotsTask", "load_co2_monthly", "load_sunspots"]


def _statsmodels_datasets() -> Any:
    try:
        import statsmodels.datasets as ds
    except ImportError as exc:
        raise ImportError(
            "the sunspots and co2 tasks read statsmodels' bundled data sets: "
            f"pip install 'rnnfast[data]' (or statsmodels) ({exc})"
        ) from None
    return ds


def load_sunspots() -> np.ndarray:
    """(309,) float64 yearly sunspot numbers, 1700-2008."""
    data = _statsmodels_datasets().sunspots.load_pandas().data
    return np.asarray(data["SUNACTIVITY"], dtype=np.float64)


def load_co2_monthly() -> np.ndarray:
    """(526,) float64 monthly mean CO2 (ppm), March 1958 - December 2001 (weekly data, gaps
    interpolated linearly, averaged per month)."""
    data = _statsmodels_datasets().co2.load_pandas().data["co2"]
    filled = data.interpolate(method="linear")
    monthly = filled.groupby([filled.index.year, filled.index.month]).mean()
    return np.asarray(monthly, dtype=np.float64)


def _series_config(*, seq_len: int, epochs: int) -> dict[str, Any]:
    """The forecasting tasks' default_config: the same model and optimiser, their own window
    length and epochs."""
    return task_config(
        cell="gru",
        hidden=32,
        seq_len=seq_len,
        batch_size=16,
        epochs=epochs,
        lr=0.005,
        mode="many_to_one",
        loss="mse",
        val_fraction=0.2,
    )


class _SeriesTask(Task):
    """Shared one-step-ahead forecasting over a bundled series; see the module docstring."""

    mode = "many_to_one"
    kind = "regression"
    data_options = ("seq_len", "val_fraction")
    period = 1

    def series(self) -> np.ndarray:
        raise NotImplementedError

    def make_data(
        self, seed: int = 0, *, seq_len: int = 24, val_fraction: float = 0.2, **_: Any
    ) -> tuple[Split, Split]:
        """(train, val): x (seq_len, N, 1) float32, y (N, 1) float32; ``info`` holds ``scale``
        (the divisor), ``seasonal`` (N,) the seasonal naive forecast in the same units. The data
        do not depend on ``seed`` (a fixed real series; the seed only drives training)."""
        check_seed(seed)
        seq_len = check_positive_int("seq_len", seq_len, 2)
        check_fraction("val_fraction", val_fraction)
        s = self.series()
        if seq_len < self.period:
            raise ValueError(
                f"seq_len: expected at least the period {self.period} (the seasonal naive "
                f"baseline looks one period back), got {seq_len}"
            )
        cut = int(len(s) * (1.0 - val_fraction))
        if cut - seq_len < 10 or len(s) - cut < 2:
            raise ValueError(f"seq_len: {seq_len} leaves too few windows in {len(s)} values")
        scale = float(np.std(np.diff(s[:cut])))
        targets = np.arange(seq_len, len(s))  # index of the value each window predicts
        win = targets[None, :] + np.arange(-seq_len, 0)[:, None]  # (T, N) indices of the inputs
        last = s[targets - 1]
        x = (s[win] - last[None, :]) / scale
        y = (s[targets] - last) / scale
        seasonal = (s[targets - self.period] - last) / scale
        out = []
        for sel in (targets < cut, targets >= cut):
            out.append(
                Split(
                    np.ascontiguousarray(x[:, sel, None], dtype=np.float32),
                    y[sel, None].astype(np.float32),
                    info={"scale": scale, "seasonal": seasonal[sel], "period": self.period},
                )
            )
        return out[0], out[1]

    def sizes(self, train: Split) -> dict[str, Any]:
        return {"input_size": 1, "output_size": 1}

    def baseline(self, val: Split, train: Split | None = None) -> dict[str, float]:
        y = val.y[:, 0].astype(np.float64)
        return {
            "persistence_mse": float(np.mean(y**2)),  # predicts x_last: 0 in these units
            "seasonal_naive_mse": float(np.mean((val.info["seasonal"] - y) ** 2)),
        }

    def score(self, model: Any, val: Split) -> dict[str, float]:
        """``val_mse`` (scaled units) and ``val_rmse`` (the series' units)."""
        out = super().score(model, val)
        out["val_rmse"] = float(np.sqrt(out["val_mse"]) * val.info["scale"])
        return out


class SunspotsTask(_SeriesTask):
    """Yearly sunspot numbers 1700-2008 (statsmodels); see the module docstring."""

    name = "sunspots"
    description = "forecasting: yearly sunspots 1700-2008 (statsmodels), vs persistence/seasonal"
    period = 11
    default_config: dict[str, Any] = _series_config(seq_len=22, epochs=60)

    def series(self) -> np.ndarray:
        return load_sunspots()


class CO2Task(_SeriesTask):
    """Monthly Mauna Loa CO2 1958-2001 (statsmodels); see the module docstring."""

    name = "co2"
    description = (
        "forecasting: monthly Mauna Loa CO2 1958-2001 (statsmodels), vs persistence/seasonal"
    )
    period = 12
    default_config: dict[str, Any] = _series_config(seq_len=24, epochs=30)

    def series(self) -> np.ndarray:
        return load_co2_monthly()
