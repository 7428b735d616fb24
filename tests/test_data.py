"""A user's own data: rnnfast.data (windows, pad), batch-first data in fit/evaluate, predict,
forecast, fit(verbose=...) and History's export."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

import rnnfast
from rnnfast.data import pad, windows

# --------------------------------------------------------------------------------------------------
# windows
# --------------------------------------------------------------------------------------------------


def test_windows_values_and_index() -> None:
    s = np.arange(10.0)
    x, y = w = windows(s, input_len=3, horizon=2)
    assert x.shape == (3, 6, 1) and y.shape == (6, 2)
    for j, t in enumerate(w.target_index):
        np.testing.assert_array_equal(x[:, j, 0], s[t - 3 : t])
        np.testing.assert_array_equal(y[j], s[t : t + 2])
    assert w.target_index[-1] + 2 == len(s)  # the last target is the last value


@pytest.mark.parametrize("n_steps", [10, 11, 12, 13])
def test_windows_stride_keeps_the_tail(n_steps: int) -> None:
    """With a stride the windows are aligned to the end: the newest values are never dropped,
    only the (L - span) % stride oldest steps are unused."""
    s = np.arange(float(n_steps))
    w = windows(s, input_len=4, horizon=1, stride=3)
    assert w.y[-1, 0] == s[-1]
    n = (n_steps - 5) // 3 + 1
    assert len(w.target_index) == n
    first_input = w.target_index[0] - 4
    assert first_input == (n_steps - 5) % 3
    np.testing.assert_array_equal(np.diff(w.target_index), 3)


def test_windows_features_target_batch_first() -> None:
    rng = np.random.default_rng(0)
    s = rng.standard_normal((20, 3))
    x, y = windows(s, 5, horizon=2, target=[2], batch_first=True, dtype=np.float64)
    assert x.shape == (14, 5, 3) and y.shape == (14, 2)
    np.testing.assert_array_equal(x[0], s[:5])
    np.testing.assert_array_equal(y[0], s[5:7, 2])
    x2, y2 = windows(s, 5, horizon=2, target=[0, 2], dtype=np.float64)
    np.testing.assert_array_equal(y2[0], [s[5, 0], s[5, 2], s[6, 0], s[6, 2]])  # step-major
    assert x2.dtype == np.float64 and windows(s, 5).x.dtype == np.float32


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"input_len": 0}, "input_len"),
        ({"input_len": 4, "horizon": 0}, "horizon"),
        ({"input_len": 4, "stride": 0}, "stride"),
        ({"input_len": 10}, "too short"),
        ({"input_len": 4, "target": 3}, "target"),
    ],
)
def test_windows_errors(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        windows(np.zeros((10, 2)), **kwargs)


# --------------------------------------------------------------------------------------------------
# pad
# --------------------------------------------------------------------------------------------------


def test_pad_ids() -> None:
    ids, lengths = pad([[3, 1, 4], [1, 5], [], [9]])
    assert ids.dtype == np.int64 and ids.shape == (3, 4)
    np.testing.assert_array_equal(lengths, [3, 2, 0, 1])
    np.testing.assert_array_equal(ids[:, 0], [3, 1, 4])
    np.testing.assert_array_equal(ids[:, 1], [1, 5, 0])
    np.testing.assert_array_equal(ids[:, 2], [0, 0, 0])
    bf, _ = pad([[3, 1, 4], [1, 5]], batch_first=True, padding_value=-1)
    np.testing.assert_array_equal(bf, [[3, 1, 4], [1, 5, -1]])


def test_pad_truncating_and_features() -> None:
    ids, lengths = pad([[1, 2, 3, 4], [5]], maxlen=2, truncating="pre", batch_first=True)
    np.testing.assert_array_equal(ids, [[3, 4], [5, 0]])
    np.testing.assert_array_equal(lengths, [2, 1])
    feats, lengths = pad([np.ones((2, 3)), np.ones((4, 3))])
    assert feats.shape == (4, 2, 3) and feats.dtype == np.float32
    assert feats[2:, 0].sum() == 0 and feats[:, 1].sum() == 12
    with pytest.raises(ValueError, match=r"sequences\[1\]"):
        pad([np.ones((2, 3)), np.ones((2, 4))])
    with pytest.raises(ValueError, match="at least one"):
        pad([])


def test_pad_trains_a_ragged_model() -> None:
    """pad's (ids, lengths) go straight into fit; padded steps do not change the loss."""
    seqs = [[1, 2, 3], [2, 3], [3, 1, 1, 2]]
    ids, lengths = pad(seqs)
    y = np.array([0, 1, 0])
    model = rnnfast.build_model("gru", 4, 8, 2, mode="many_to_one", vocab_size=4, seed=0)
    loss = rnnfast.CrossEntropyLoss()
    a = rnnfast.evaluate(model, (ids, y, lengths), loss)["loss"]
    ids2, _ = pad(seqs, padding_value=2)
    b = rnnfast.evaluate(model, (ids2, y, lengths), loss)["loss"]
    assert a == pytest.approx(b, rel=1e-6)


# --------------------------------------------------------------------------------------------------
# batch-first data in fit / evaluate
# --------------------------------------------------------------------------------------------------


def _fit(model: rnnfast.SequenceModel, data: object, **kw: object) -> rnnfast.History:
    opt = rnnfast.Adam(model.parameters(), lr=1e-2)
    return rnnfast.fit(
        model, data, rnnfast.MSELoss(), opt, epochs=2, batch_size=8, progress=False, seed=0, **kw
    )


@pytest.mark.parametrize("mode", ["many_to_one", "many_to_many"])
def test_fit_batch_first_model_reads_batch_first_tuples(mode: str) -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((20, 30, 2))  # time-major (T, N, I)
    y = rng.standard_normal((30, 2) if mode == "many_to_one" else (20, 30, 2))
    xb = np.ascontiguousarray(x.swapaxes(0, 1))
    yb = y if mode == "many_to_one" else np.ascontiguousarray(y.swapaxes(0, 1))
    kw = {"mode": mode, "dtype": np.float64, "seed": 0}
    tm = rnnfast.build_model("gru", 2, 6, 2, **kw)
    bf = rnnfast.build_model("gru", 2, 6, 2, batch_first=True, **kw)
    lengths = rng.integers(1, 21, size=30)
    h_tm = _fit(tm, (x, y, lengths), val_data=(x, y, lengths))
    h_bf = _fit(bf, (xb, yb, lengths), val_data=(xb, yb, lengths))
    np.testing.assert_allclose(h_bf["loss"], h_tm["loss"], rtol=1e-12)
    np.testing.assert_allclose(h_bf["val_loss"], h_tm["val_loss"], rtol=1e-12)
    e_tm = rnnfast.evaluate(tm, (x, y, lengths), rnnfast.MSELoss())["loss"]
    e_bf = rnnfast.evaluate(bf, (xb, yb, lengths), rnnfast.MSELoss())["loss"]
    assert e_bf == pytest.approx(e_tm, rel=1e-12)
    # a batch-first Dataset trains a time-major model the same way
    tm2 = rnnfast.build_model("gru", 2, 6, 2, **kw)
    h_ds = _fit(tm2, rnnfast.Dataset(xb, yb, lengths, batch_first=True))
    np.testing.assert_allclose(h_ds["loss"], h_tm["loss"], rtol=1e-12)


def test_layout_errors_name_the_axis_and_the_fix() -> None:
    rng = np.random.default_rng(0)
    xb = rng.standard_normal((30, 50, 1)).astype(np.float32)  # batch-first windows (N, T, I)
    y = rng.standard_normal((30, 1)).astype(np.float32)
    tm = rnnfast.build_model("gru", 1, 4, 1, mode="many_to_one", seed=0)
    with pytest.raises(ValueError, match=r"train_data: y: expected 50 samples along axis 0") as e:
        _fit(tm, (xb, y))
    assert "time-major (T, N, ...): its batch axis is 1" in str(e.value)
    assert "batch_first=True" in str(e.value)
    bf = rnnfast.build_model("gru", 1, 4, 1, mode="many_to_one", seed=0, batch_first=True)
    with pytest.raises(ValueError, match="model is batch_first=True") as e:
        _fit(bf, (xb.swapaxes(0, 1), y))
    assert "rnnfast.Dataset(x, y)" in str(e.value)


# --------------------------------------------------------------------------------------------------
# predict / forecast
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("mode", ["many_to_one", "many_to_many", "one_to_one"])
def test_predict_batches_equal_one_forward(mode: str, batch_first: bool) -> None:
    rng = np.random.default_rng(1)
    m = rnnfast.build_model(
        "lstm", 3, 5, 2, mode=mode, batch_first=batch_first, dropout=0.0, seed=0
    )
    x = rng.standard_normal((13, 3) if mode == "one_to_one" else (7, 13, 3)).astype(np.float32)
    if batch_first and mode != "one_to_one":
        x = np.ascontiguousarray(x.swapaxes(0, 1))
    lengths = None if mode == "one_to_one" else rng.integers(1, 8, size=13)
    m.train()
    got = m.predict(x, lengths, batch_size=4)
    assert m.training  # mode restored
    m.eval()
    want = m(x, lengths)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)
    assert m.predict(x, lengths, batch_size=None).shape == want.shape


def test_predict_stores_nothing_for_backward() -> None:
    m = rnnfast.build_model("gru", 2, 4, 1, mode="many_to_one", seed=0)
    m.predict(np.zeros((5, 3, 2), np.float32))
    with pytest.raises(ValueError):
        m.backward(np.ones((3, 1), np.float32))


def test_forecast_many_to_one_slides_the_window() -> None:
    rng = np.random.default_rng(2)
    m = rnnfast.build_model("gru", 2, 6, 2, mode="many_to_one", dtype=np.float64, seed=0)
    hist = rng.standard_normal((5, 3, 2))
    f = m.forecast(hist, 4)
    assert f.shape == (4, 3, 2)
    h = hist.copy()
    for k in range(4):  # the definition, one step at a time
        nxt = m.predict(h[-5:])
        np.testing.assert_allclose(f[k], nxt, rtol=1e-12, atol=1e-14)
        h = np.concatenate([h, nxt[None]])
    # a direct multi-horizon model (O = 3 steps x 2 values) gives 3 steps per call
    m3 = rnnfast.build_model("gru", 2, 6, 6, mode="many_to_one", dtype=np.float64, seed=0)
    f3 = m3.forecast(hist, 5)
    np.testing.assert_allclose(f3[:3], m3.predict(hist).reshape(3, 3, 2).swapaxes(0, 1))
    bf = rnnfast.build_model(
        "gru", 2, 6, 2, mode="many_to_one", dtype=np.float64, seed=0, batch_first=True
    )
    np.testing.assert_allclose(bf.forecast(hist.swapaxes(0, 1), 4), f.swapaxes(0, 1), rtol=1e-12)


def test_forecast_many_to_many_continues_the_state() -> None:
    rng = np.random.default_rng(3)
    m = rnnfast.build_model("lstm", 1, 6, 1, mode="many_to_many", dtype=np.float64, seed=0)
    hist = rng.standard_normal((8, 2, 1))
    f = m.forecast(hist, 3)
    seq = hist
    for k in range(3):  # rerun the whole sequence each time: the same numbers
        nxt = m.predict(seq)[-1]
        np.testing.assert_allclose(f[k], nxt, rtol=1e-10, atol=1e-12)
        seq = np.concatenate([seq, nxt[None]])


def test_forecast_errors() -> None:
    m = rnnfast.build_model("gru", 2, 4, 3, mode="many_to_one", seed=0)
    with pytest.raises(ValueError, match="multiple of 2"):
        m.forecast(np.zeros((4, 1, 2), np.float32), 2)
    with pytest.raises(ValueError, match="history"):
        m.forecast(np.zeros((4, 2), np.float32), 2)
    m2 = rnnfast.build_model("gru", 2, 4, 3, mode="many_to_many", seed=0)
    with pytest.raises(ValueError, match="output size == input size"):
        m2.forecast(np.zeros((4, 1, 2), np.float32), 2)


def test_windows_fit_forecast_end_to_end() -> None:
    """A sine learned from windows forecasts better than repeating the last value."""
    t = np.arange(400)
    s = np.sin(2 * np.pi * t / 25).astype(np.float32)
    w = windows(s[:300], input_len=25)
    model = rnnfast.build_model("gru", 1, 16, 1, mode="many_to_one", seed=0)
    opt = rnnfast.Adam(model.parameters(), lr=1e-2)
    rnnfast.fit(model, w, rnnfast.MSELoss(), opt, epochs=15, batch_size=32, progress=False, seed=0)
    f = model.forecast(s[275:300, None, None], 10)[:, 0, 0]
    err = np.mean((f - s[300:310]) ** 2)
    persistence = np.mean((s[299] - s[300:310]) ** 2)
    assert err < 0.2 * persistence, (err, persistence)


# --------------------------------------------------------------------------------------------------
# fit(verbose=...) and History
# --------------------------------------------------------------------------------------------------


def _small_run(**kw: object) -> rnnfast.History:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((6, 16, 1)).astype(np.float32)
    y = x.sum(axis=0)
    m = rnnfast.build_model("gru", 1, 4, 1, mode="many_to_one", seed=0)
    opt = rnnfast.Adam(m.parameters(), lr=1e-2)
    return rnnfast.fit(
        m, (x, y), rnnfast.MSELoss(), opt, epochs=3, batch_size=8, val_data=(x, y), seed=0, **kw
    )


def test_verbose_prints_one_line_per_epoch(capsys: pytest.CaptureFixture[str]) -> None:
    _small_run(verbose=1)
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 3
    assert out[0].startswith("epoch 1/3") and "loss" in out[0] and "val_loss" in out[2]
    _small_run(verbose=0)
    assert capsys.readouterr().out == ""
    with pytest.raises(ValueError, match="verbose"):
        _small_run(verbose=3)


def test_history_repr_rows_csv(tmp_path: Path) -> None:
    h = _small_run(verbose=0)
    r = repr(h)
    assert r.startswith("History(3 epochs") and "val_loss" in r and "best" in r
    rows = h.rows()
    assert [row["epoch"] for row in rows] == [1, 2, 3]
    assert all(isinstance(v, (int, float, str, type(None))) for row in rows for v in row.values())
    path = tmp_path / "h.csv"
    h.to_csv(path)
    with open(path, newline="") as f:
        read = list(csv.DictReader(f))
    assert len(read) == 3
    assert float(read[2]["loss"]) == pytest.approx(rows[2]["loss"], rel=1e-12)
    assert repr(rnnfast.History()) == "History(0 epochs)"


# --------------------------------------------------------------------------------------------------
# python -m rnnfast train --csv
# --------------------------------------------------------------------------------------------------


def _write_series(path: Path, n: int = 160) -> None:
    t = np.arange(n)
    rng = np.random.default_rng(0)
    load = 10 + 3 * np.sin(2 * np.pi * t / 24) + 0.1 * rng.standard_normal(n)
    temp = 20 + 5 * np.sin(2 * np.pi * (t - 3) / 24)
    np.savetxt(
        path,
        np.column_stack([t, load, temp]),
        delimiter=",",
        header="hour,load,temp",
        comments="",
        fmt=["%d", "%.4f", "%.3f"],
    )


def test_cli_train_csv_outputs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from rnnfast.cli import main

    data = tmp_path / "load.csv"
    _write_series(data)
    outs = {k: tmp_path / f"out.{k}" for k in ("npz", "json", "png")}
    pred = tmp_path / "pred.csv"
    argv = ["train", "--csv", str(data), "--target", "load", "--input-len", "24"]
    argv += ["--hidden", "8", "--epochs", "2", "--forecast", "5", "--no-progress", "--threads", "1"]
    argv += ["--save", str(outs["npz"]), "--json", str(outs["json"]), "--predictions", str(pred)]
    pytest.importorskip("matplotlib")
    argv += ["--plot", str(outs["png"])]
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "vs persistence" in text and "epoch 2/2" in text
    assert all(p.exists() for p in outs.values())
    with open(pred, newline="") as f:
        rows = list(csv.DictReader(f))
    assert {r["split"] for r in rows} == {"train", "val", "forecast"}
    assert sum(r["split"] == "forecast" for r in rows) == 5
    assert rows[0]["row"] == "24" and rows[-1]["row"] == "164"
    ck = rnnfast.load(str(outs["npz"]))
    norm = ck.meta["normalisation"]
    assert norm["columns"] == ["load"] and abs(norm["mean"][0] - 10) < 0.5
    model = ck.build_model()
    assert model.rnn.input_size == 1 and model.head.out_features == 1


def test_cli_train_csv_features_and_horizon(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from rnnfast.cli import main

    data = tmp_path / "load.csv"
    _write_series(data)
    argv = ["train", "--csv", str(data), "--target", "load", "--features", "temp,hour"]
    argv += ["--input-len", "12", "--horizon", "3", "--hidden", "8", "--epochs", "1"]
    save = tmp_path / "m.npz"
    assert main([*argv, "--no-progress", "--save", str(save)]) == 0
    model = rnnfast.load(str(save)).build_model()
    assert model.rnn.input_size == 3 and model.head.out_features == 3
    assert "inputs ['load', 'temp', 'hour']" in capsys.readouterr().out


@pytest.mark.parametrize(
    "extra, match",
    [
        (["--target", "nope"], "--target: no column 'nope'"),
        (["--target", "load", "--features", "x"], "--features: no column 'x'"),
        (["--target", "load", "--seq-len", "5"], "use --input-len"),
        (["--target", "load", "--input-len", "500"], "too few"),
        (["--target", "load", "--features", "temp", "--forecast", "3"], "--forecast"),
        (["--target", "load", "--predictions", "/nonexistent-dir/p.csv"], "--predictions"),
        ([], "--target: required"),
    ],
)
def test_cli_train_csv_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], match: str
) -> None:
    from rnnfast.cli import main

    data = tmp_path / "load.csv"
    _write_series(data)
    assert main(["train", "--csv", str(data), "--epochs", "1", *extra]) == 2
    cap = capsys.readouterr()
    assert match in cap.err and "epoch" not in cap.out  # refused before training


def test_cli_csv_bad_cell_and_task_only_flags(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from rnnfast.cli import main

    data = tmp_path / "bad.csv"
    data.write_text("a,b\n1,2\n3,x\n")
    assert main(["train", "--csv", str(data), "--target", "b"]) == 2
    assert "line 3, column 'b'" in capsys.readouterr().err
    assert main(["train", "--task", "sine", "--target", "b"]) == 2
    assert "only with --csv" in capsys.readouterr().err
    assert main(["train"]) == 2
    assert "--task NAME" in capsys.readouterr().err


def test_run_task_early_stopping_option() -> None:
    from rnnfast.tasks import get_task, run_task

    assert get_task("charlm").default_config["early_stopping"] == 1
    res = run_task("sentiment", epochs=3, early_stopping=0)
    assert res.config["early_stopping"] == 0 and len(res.history) <= 3
