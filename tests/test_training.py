"""Tests of rnnfast.training: learning outcomes on tiny synthetic data, the TBPTT trainer path vs
reference.tbptt_grads, stateful carry, exact resume (epoch boundary and SIGINT mid-epoch), non-finite
handling, early stopping, evaluate and determinism.

Like tests/test_modules.py, runs the modules on rnnfast.functional when the compiled kernels are
present, else on rnnfast.reference.
"""

from __future__ import annotations

import os
import signal
from typing import Any

import numpy as np
import pytest

import rnnfast.modules as M
import rnnfast.reference as R
import rnnfast.training as TR
from helpers import assert_close
from rnnfast import io, losses, optim

__all__: list[str] = []


def _functional_works() -> bool:
    try:
        from rnnfast import functional as F

        F.rnn_forward(np.zeros((1, 1, 1)), None, np.zeros((1, 1)), np.zeros((1, 1)), None, None)
        return True
    except Exception:
        return False


FUNCTIONAL = _functional_works()


@pytest.fixture(autouse=True)
def _backend() -> Any:
    M.set_backend(None if FUNCTIONAL else R)
    yield
    M.set_backend(None)


def toy_sentiment(n: int = 120, t: int = 5, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """One-hot words {cat=0, mat=1, rat=2}; label 1 iff 'cat' occurs more often than 'rat'."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, 3, (t, n))
    ids[:, (np.sum(ids == 0, 0) == np.sum(ids == 2, 0))] = (
        1  # ties -> all 'mat' ... then no cat/rat
    )
    keep = np.sum(ids == 0, 0) != np.sum(ids == 2, 0)
    ids = ids[:, keep]
    y = (np.sum(ids == 0, 0) > np.sum(ids == 2, 0)).astype(np.float64)[:, None]
    return np.eye(3)[ids], y


def adding_problem(n: int, t: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = np.zeros((t, n, 2))
    x[:, :, 0] = rng.uniform(0, 1, (t, n))
    a = rng.integers(0, t // 2, n)
    b = rng.integers(t // 2, t, n)
    x[a, np.arange(n), 1] = 1.0
    x[b, np.arange(n), 1] = 1.0
    y = (x[a, np.arange(n), 0] + x[b, np.arange(n), 0])[:, None]
    return x, y


# --------------------------------------------------------------------------------------------------
# learning outcomes
# --------------------------------------------------------------------------------------------------


def test_sentiment_toy_reaches_full_accuracy() -> None:
    x, y = toy_sentiment()
    model = M.build_model("rnn", 3, 8, 1, mode="many_to_one", seed=0, dtype=np.float64)
    opt = optim.Adam(model.parameters(), lr=0.03)
    hist = TR.fit(
        model,
        (x, y),
        losses.BCEWithLogitsLoss(),
        opt,
        epochs=60,
        batch_size=16,
        seed=0,
        metrics=["accuracy"],
        progress=False,
    )
    res = TR.evaluate(model, (x, y), losses.BCEWithLogitsLoss(), metrics=["accuracy"])
    assert res["accuracy"] == 1.0, f"accuracy {res['accuracy']}, history tail {hist['loss'][-3:]}"
    assert hist["accuracy"][-1] == 1.0


def test_adding_problem_short_t_lstm() -> None:
    x, y = adding_problem(512, 10, 0)
    xv, yv = adding_problem(256, 10, 1)
    model = M.build_model("lstm", 2, 16, 1, mode="many_to_one", seed=0, init="orthogonal")
    opt = optim.Adam(model.parameters(), lr=0.02)
    hist = TR.fit(
        model,
        (x, y),
        losses.MSELoss(),
        opt,
        epochs=40,
        batch_size=32,
        seed=0,
        val_data=(xv, yv),
        clip_norm=1.0,
        progress=False,
    )
    # MSELoss is mean of 1/2 (d - y)^2: the plain MSE is twice it
    mse = 2 * hist["val_loss"][-1]
    baseline = float(np.mean((yv - 1.0) ** 2))  # predict the mean (1.0): ~0.167
    assert mse < 0.01, f"val MSE {mse:.4f} (baseline {baseline:.3f})"


def test_tbptt_charlike_many_to_many_learns() -> None:
    """Predict the next token of a periodic sequence with TBPTT(4, 8) and an embedding."""
    seq = np.tile(np.array([0, 1, 2, 3, 2, 1]), 40)
    x = np.stack([seq[i : i + 24] for i in range(0, 200, 7)], axis=1)
    y = np.stack([seq[i + 1 : i + 25] for i in range(0, 200, 7)], axis=1)
    model = M.build_model(
        "gru", 0, 16, 4, mode="many_to_many", vocab_size=4, embedding_dim=4, seed=0
    )
    opt = optim.Adam(model.parameters(), lr=0.05)
    TR.fit(
        model,
        (x, y),
        losses.CrossEntropyLoss(),
        opt,
        epochs=15,
        batch_size=8,
        bptt=(4, 8),
        seed=0,
        progress=False,
    )
    res = TR.evaluate(model, (x, y), losses.CrossEntropyLoss(), metrics=["accuracy"])
    assert res["accuracy"] > 0.95, res


# --------------------------------------------------------------------------------------------------
# TBPTT trainer path and stateful carry against manual constructions
# --------------------------------------------------------------------------------------------------


class RecordingOptimizer:
    """Records the gradients passed to step() and leaves the weights unchanged."""

    lr = 0.0

    def __init__(self) -> None:
        self.steps: list[dict[str, np.ndarray]] = []

    def step(self, grads: dict[str, np.ndarray]) -> None:
        self.steps.append({k: v.copy() for k, v in grads.items()})

    def state_dict(self) -> dict[str, Any]:
        return {}


@pytest.mark.parametrize("cell,k1,k2", [("rnn", 3, 5), ("lstm", 2, 2), ("gru", 4, 6)])
def test_fit_tbptt_equals_reference_tbptt_grads(cell: str, k1: int, k2: int) -> None:
    T, N, I, H, O = 11, 3, 2, 4, 2
    rng = np.random.default_rng(0)
    x = rng.standard_normal((T, N, I))
    y = rng.standard_normal((T, N, O))
    model = M.build_model(cell, I, H, O, mode="many_to_many", seed=1, dtype=np.float64)
    rec = RecordingOptimizer()
    loss = losses.MSELoss()
    TR.fit(model, (x, y), loss, rec, epochs=1, batch_size=N, bptt=(k1, k2), seed=0, progress=False)
    # manual: the order of the single batch is a permutation; use the same one
    order = np.random.default_rng(np.random.SeedSequence(0).spawn(2)[0]).permutation(N)
    xb, yb = x[:, order], y[:, order]
    p = model.parameters()
    w = {
        "w_ih": p["rnn.weight_ih_l0"],
        "w_hh": p["rnn.weight_hh_l0"],
        "b_ih": p["rnn.bias_ih_l0"],
        "b_hh": p["rnn.bias_hh_l0"],
    }
    state0 = (None, None) if cell == "lstm" else None
    ys = R.__dict__[f"{cell}_forward"](
        xb, *((None, None) if cell == "lstm" else (None,)), *w.values()
    )[0]
    pred = ys @ p["head.weight"].T + p["head.bias"]
    dy = np.zeros_like(ys)
    head_grads = []
    for a in range(0, T, k1):
        b = min(a + k1, T)
        _, dpred = loss(pred[a:b], yb[a:b])
        dy[a:b] = dpred @ p["head.weight"]
        head_grads.append(
            (dpred.reshape(-1, O).T @ ys[a:b].reshape(-1, H), dpred.reshape(-1, O).sum(0))
        )
    expected = R.tbptt_grads(cell, xb, state0, w, dy, k1, k2)
    assert len(rec.steps) == len(expected)
    for n, (g, e) in enumerate(zip(rec.steps, expected)):
        assert_close(g["rnn.weight_hh_l0"], e["w_hh"], 1e-10, f"update {n} w_hh")
        assert_close(g["rnn.weight_ih_l0"], e["w_ih"], 1e-10, f"update {n} w_ih")
        assert_close(g["rnn.bias_hh_l0"], e["b_hh"], 1e-10, f"update {n} b_hh")
        assert_close(g["head.weight"], head_grads[n][0], 1e-10, f"update {n} head.weight")
        assert_close(g["head.bias"], head_grads[n][1], 1e-10, f"update {n} head.bias")


def test_stateful_batches_layout_and_carry() -> None:
    series = np.arange(24.0)[:, None]
    x, y = TR.stateful_batches(series, series * 10, batch_size=2, seq_len=3)
    # 2 streams of 12 steps -> 4 segments of 3; batch j = columns 2j, 2j+1
    assert x.shape == (3, 8, 1)
    assert np.array_equal(x[:, 0, 0], [0, 1, 2]) and np.array_equal(x[:, 1, 0], [12, 13, 14])
    assert np.array_equal(x[:, 2, 0], [3, 4, 5]) and np.array_equal(x[:, 3, 0], [15, 16, 17])
    assert np.array_equal(y[:, 3, 0], [150, 160, 170])
    # the gradient of batch 2 is computed from the final state of batch 1 (detached)
    rng = np.random.default_rng(0)
    xs = rng.standard_normal((4, 6, 2))
    ys = rng.standard_normal((4, 6, 1))
    resets = np.array([False, False, False, True, False, False])
    model = M.build_model("lstm", 2, 3, 1, mode="many_to_many", seed=0, dtype=np.float64)
    rec = RecordingOptimizer()
    loss = losses.MSELoss()
    TR.fit(
        model,
        TR.Dataset(xs, ys, resets=resets),
        loss,
        rec,
        epochs=1,
        batch_size=2,
        stateful=True,
        progress=False,
    )
    assert len(rec.steps) == 3
    hx = None
    for j in range(3):
        cols = slice(2 * j, 2 * j + 2)
        if hx is not None and resets[cols].any():
            hx = tuple(np.where(resets[cols][None, :, None], 0.0, h) for h in hx)
        model.zero_grad()
        pred = model(xs[:, cols], hx=hx)
        _, dpred = loss(pred, ys[:, cols])
        model.backward(dpred)
        for k in ("rnn.weight_hh_l0", "head.weight"):
            assert_close(rec.steps[j][k], model.grads[k], 1e-10, f"stateful batch {j} {k}")
        hx = model.last_hidden
    model.zero_grad()


# --------------------------------------------------------------------------------------------------
# checkpoints, resume, SIGINT
# --------------------------------------------------------------------------------------------------


def _setup(kind: str) -> tuple[M.SequenceModel, Any, Any, dict[str, Any], tuple[Any, ...]]:
    rng = np.random.default_rng(0)
    if kind in ("many_to_one", "regularised"):
        x, y = adding_problem(48, 6, 0)
        reg = {"zoneout": (0.1, 0.2), "recurrent_dropout": 0.3} if kind == "regularised" else {}
        cell = "lstm" if reg else "gru"  # zoneout masks for h and c, dropout masks per sequence
        model = M.build_model(
            cell, 2, 6, 1, mode="many_to_one", seed=3, num_layers=2, dropout=0.2, **reg
        )
        kw: dict[str, Any] = {}
        data: tuple[Any, ...] = (x, y, rng.integers(1, 7, 48))
    else:
        x = rng.standard_normal((12, 8, 2))
        y = rng.standard_normal((12, 8, 1))
        model = M.build_model(
            "lstm", 2, 5, 1, mode="many_to_many", seed=3, num_layers=2, dropout=0.3
        )
        kw = {"bptt": (3, 5)} if kind == "tbptt" else {"stateful": True, "bptt": (2, 4)}
        data = (x, y)
    opt = optim.Adam(model.parameters(), lr=0.01)
    sched = optim.StepLR(opt, step_size=1, gamma=0.9)
    return model, opt, sched, kw, data


def _run(
    kind: str, epochs: int, ckpt: Any = None, resume: bool = False, callbacks: Any = ()
) -> Any:
    model, opt, sched, kw, data = _setup(kind)
    hist = TR.fit(
        model,
        data,
        losses.MSELoss(),
        opt,
        epochs=epochs,
        batch_size=4,
        seed=5,
        scheduler=sched,
        checkpoint=ckpt,
        resume=resume,
        callbacks=callbacks,
        progress=False,
        val_data=data[:2],
        early_stopping=TR.EarlyStopping(patience=10),
        **kw,
    )
    return model, opt, hist


def _assert_same_run(a: Any, b: Any) -> None:
    (ma, oa, ha), (mb, ob, hb) = a, b
    for k, v in ma.parameters().items():
        assert np.array_equal(v, mb.parameters()[k]), f"weights differ after resume: {k}"
    assert ha["loss"] == hb["loss"] and ha["val_loss"] == hb["val_loss"] and ha["lr"] == hb["lr"]
    sa, sb = oa.state_dict(), ob.state_dict()
    for k in sa["state"]:
        for kk, v in sa["state"][k].items():
            assert np.array_equal(np.asarray(v), np.asarray(sb["state"][k][kk])), (
                f"optimizer state {k}/{kk}"
            )


@pytest.mark.parametrize("kind", ["many_to_one", "tbptt", "stateful", "regularised"])
def test_resume_after_sigint_equals_uninterrupted(kind: str, tmp_path: Any) -> None:
    """An interrupted run resumed from its checkpoint equals the uninterrupted one bit for bit,
    including the zoneout / recurrent-dropout masks drawn from the stack's generator."""
    full = _run(kind, 3)
    ckpt = tmp_path / "ck.npz"
    calls = {"n": 0}

    class Interrupt(TR.Callback):
        def on_batch_end(self, step: int, logs: dict[str, Any]) -> None:
            calls["n"] += 1
            if calls["n"] == 7:  # mid-epoch (and mid-batch for the TBPTT kinds)
                os.kill(os.getpid(), signal.SIGINT)

    handler = signal.getsignal(signal.SIGINT)
    with pytest.raises(TR.TrainingInterrupted) as info:
        _run(kind, 3, ckpt, callbacks=[Interrupt()])
    assert signal.getsignal(signal.SIGINT) is handler, "fit must restore the SIGINT handler"
    assert info.value.checkpoint == str(ckpt) and ckpt.exists()
    assert io.load(ckpt).meta["fit"]["pos"]["step"] == 7
    resumed = _run(kind, 3, ckpt, resume=True)
    _assert_same_run(full, resumed)


def test_resume_at_epoch_boundary_and_best_checkpoint(tmp_path: Any) -> None:
    full = _run("many_to_one", 4)
    ckpt = tmp_path / "run.npz"
    _run("many_to_one", 2, ckpt)
    assert (tmp_path / "run.best.npz").exists()
    resumed = _run("many_to_one", 4, ckpt, resume=True)
    _assert_same_run(full, resumed)
    best = io.load(tmp_path / "run.best.npz")
    assert best.meta["loss"] == min(v for v in resumed[2]["val_loss"])


def test_deterministic_given_seed() -> None:
    a = _run("tbptt", 2)
    b = _run("tbptt", 2)
    _assert_same_run(a, b)


# --------------------------------------------------------------------------------------------------
# non-finite values, early stopping, callbacks, evaluate
# --------------------------------------------------------------------------------------------------


def test_nonfinite_loss_raises_or_skips() -> None:
    x, y = toy_sentiment(40)
    x = x.copy()
    x[2, 5, 0] = np.nan
    model = M.build_model("rnn", 3, 4, 1, mode="many_to_one", seed=0)
    opt = optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(TR.NonFiniteError, match=r"loss.*epoch 0, step \d+") as info:
        TR.fit(
            model,
            (x, y),
            losses.BCEWithLogitsLoss(),
            opt,
            epochs=1,
            batch_size=8,
            seed=0,
            progress=False,
        )
    assert isinstance(info.value, FloatingPointError) and info.value.name == "loss"
    hist = TR.fit(
        model,
        (x, y),
        losses.BCEWithLogitsLoss(),
        opt,
        epochs=2,
        batch_size=8,
        seed=0,
        progress=False,
        on_nonfinite="skip",
    )
    assert hist["skipped"] == [1, 1]
    assert all(np.all(np.isfinite(v)) for v in model.parameters().values())


def test_nonfinite_gradient_names_parameter() -> None:
    class BadGrad(losses.MSELoss):
        def __call__(self, pred: Any, target: Any, mask: Any = None) -> tuple[float, np.ndarray]:
            value, g = super().__call__(pred, target, mask)
            g = g.copy()
            g[0] = np.inf
            return value, g

    x, y = toy_sentiment(16)
    model = M.build_model("gru", 3, 4, 1, mode="many_to_one", seed=0)
    with pytest.raises(
        TR.NonFiniteError, match=r"gradient of parameter 'rnn\.weight_ih_l0'.*step 0"
    ):
        TR.fit(
            model,
            (x, y),
            BadGrad(),
            optim.SGD(model.parameters(), lr=0.1),
            epochs=1,
            batch_size=8,
            progress=False,
        )


def test_early_stopping_restores_best() -> None:
    scores = [3.0, 2.0, 2.5, 2.6, 2.7, 2.8]
    snapshots: list[dict[str, np.ndarray]] = []

    def score(epoch: int, logs: dict[str, Any]) -> None:
        logs["score"] = scores[epoch]
        snapshots.append(model.state_dict())

    x, y = toy_sentiment(32)
    model = M.build_model("rnn", 3, 4, 1, mode="many_to_one", seed=0)
    es = TR.EarlyStopping(monitor="score", patience=1)
    hist = TR.fit(
        model,
        (x, y),
        losses.BCEWithLogitsLoss(),
        optim.SGD(model.parameters(), lr=0.5),
        epochs=6,
        batch_size=8,
        callbacks=[score],
        early_stopping=es,
        progress=False,
    )
    assert len(hist) == 4 and hist.stop_reason == "early_stopping"
    assert es.best_epoch == 1
    for k, v in snapshots[1].items():
        assert np.array_equal(model.state_dict()[k], v), f"best weights not restored: {k}"


def test_history_fields_and_evaluate_weighting(capsys: Any) -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((7, 10, 2))
    y = rng.standard_normal((7, 10, 1))
    lengths = rng.integers(1, 8, 10)
    model = M.build_model("gru", 2, 4, 1, mode="many_to_many", seed=0, dtype=np.float64)
    hist = TR.fit(
        model,
        (x, y, lengths),
        losses.MSELoss(),
        optim.Adam(model.parameters(), lr=0.01),
        epochs=2,
        batch_size=3,
        clip_norm=1e-3,
        progress=True,
        val_data=(x, y, lengths),
    )
    assert capsys.readouterr().err == ""  # not a terminal: no progress bar
    rec = hist.epochs[-1]
    for key in ("loss", "val_loss", "grad_norm", "clip_fraction", "lr", "seq_per_s", "steps"):
        assert rec[key] is not None, key
    assert rec["clip_fraction"] == 1.0 and rec["steps"] == 4
    assert '"val_loss"' in hist.to_json()
    # evaluate over batches = the masked mean over the whole set in one pass
    model.eval()
    whole = losses.MSELoss().forward(model(x, lengths=lengths), y, losses.sequence_mask(lengths, 7))
    assert_close(
        TR.evaluate(model, (x, y, lengths), losses.MSELoss(), batch_size=3)["loss"],
        whole,
        1e-12,
        "evaluate loss",
    )


def test_fit_argument_errors() -> None:
    x = np.zeros((4, 6, 2))
    y = np.zeros((4, 6, 1))
    bi = M.build_model("gru", 2, 3, 1, mode="many_to_many", bidirectional=True)
    opt = optim.SGD(bi.parameters(), lr=0.1)
    with pytest.raises(ValueError, match="bidirectional"):
        TR.fit(bi, (x, y), losses.MSELoss(), opt, epochs=1, batch_size=2, bptt=(2, 2))
    m = M.build_model("gru", 2, 3, 1, mode="many_to_many")
    opt = optim.SGD(m.parameters(), lr=0.1)
    with pytest.raises(ValueError, match="bptt"):
        TR.fit(m, (x, y), losses.MSELoss(), opt, epochs=1, batch_size=2, bptt=(3, 2))
    with pytest.raises(ValueError, match="multiple of batch_size"):
        TR.fit(m, (x, y), losses.MSELoss(), opt, epochs=1, batch_size=4, stateful=True)
    with pytest.raises(ValueError, match="y"):
        TR.fit(m, (x, y[:, :5]), losses.MSELoss(), opt, epochs=1, batch_size=2)
    with pytest.raises(ValueError, match="resume"):
        TR.fit(m, (x, y), losses.MSELoss(), opt, epochs=1, batch_size=2, resume=True)


# --------------------------------------------------------------------------------------------------
# data arguments: Dataset, tuple, or a task's Split
# --------------------------------------------------------------------------------------------------


def _fit_gru(train: Any, val: Any) -> tuple[M.SequenceModel, TR.History]:
    model = M.build_model("gru", 2, 4, 1, mode="many_to_one", seed=0, dtype=np.float64)
    opt = optim.Adam(model.parameters(), lr=0.01)
    hist = TR.fit(model, train, losses.MSELoss(), opt, epochs=2, batch_size=5, seed=3,
                  val_data=val, progress=False)  # fmt: skip
    return model, hist


def test_fit_and_evaluate_accept_a_task_split() -> None:
    """A task's Split trains and evaluates exactly as its as_tuple() does."""
    from rnnfast.tasks import get_task

    train, val = get_task("adding").make_data(seed=0, seq_len=6, n_train=24, n_val=10)
    assert train.lengths is None
    m_split, h_split = _fit_gru(train, val)
    m_tuple, h_tuple = _fit_gru(train.as_tuple(), val.as_tuple())
    assert h_split["loss"] == h_tuple["loss"] and h_split["val_loss"] == h_tuple["val_loss"]
    for k, v in m_tuple.state_dict().items():
        np.testing.assert_array_equal(m_split.state_dict()[k], v, err_msg=k)
    loss = losses.MSELoss()
    assert TR.evaluate(m_split, val, loss) == TR.evaluate(m_split, val.as_tuple(), loss)


def test_fit_and_evaluate_use_the_lengths_of_a_split() -> None:
    from rnnfast.tasks import Split

    rng = np.random.default_rng(0)
    x = rng.standard_normal((6, 15, 2))
    y = rng.standard_normal((15, 1))
    lengths = rng.integers(1, 7, 15)
    ragged = Split(x, y, lengths, info={"note": "ignored by fit"})
    m_split, h_split = _fit_gru(ragged, ragged)
    m_tuple, h_tuple = _fit_gru((x, y, lengths), (x, y, lengths))
    assert h_split["loss"] == h_tuple["loss"] and h_split["val_loss"] == h_tuple["val_loss"]
    for k, v in m_tuple.state_dict().items():
        np.testing.assert_array_equal(m_split.state_dict()[k], v, err_msg=k)
    loss = losses.MSELoss()
    with_lengths = TR.evaluate(m_split, ragged, loss)["loss"]
    assert with_lengths == TR.evaluate(m_split, (x, y, lengths), loss)["loss"]
    assert with_lengths != TR.evaluate(m_split, Split(x, y), loss)["loss"]  # lengths do matter


@pytest.mark.parametrize(
    "bad,got",
    [
        ({"x": np.zeros((3, 4, 2)), "y": np.zeros((4, 1))}, "got dict"),
        (np.zeros((3, 4, 2)), "got ndarray"),
        ((np.zeros((3, 4, 2)),), "got a tuple of 1 items"),
        ([np.zeros((3, 4, 2)), np.zeros((4, 1)), None, None], "got a list of 4 items"),
        (7, "got int"),
    ],
)
def test_unsupported_data_types_name_the_argument(bad: Any, got: str) -> None:
    x, y = np.zeros((3, 4, 2)), np.zeros((4, 1))
    model = M.build_model("gru", 2, 3, 1, mode="many_to_one", seed=0)
    opt = optim.SGD(model.parameters(), lr=0.1)
    expected = r"expected a rnnfast\.Dataset, a task Split .* or a tuple .*, "
    kw: dict[str, Any] = dict(epochs=1, batch_size=2, progress=False)
    with pytest.raises(TypeError, match=rf"^train_data: {expected}{got}$"):
        TR.fit(model, bad, losses.MSELoss(), opt, **kw)
    with pytest.raises(TypeError, match=rf"^val_data: {expected}{got}$"):
        TR.fit(model, (x, y), losses.MSELoss(), opt, val_data=bad, **kw)
    with pytest.raises(TypeError, match=rf"^data: {expected}{got}$"):
        TR.evaluate(model, bad, losses.MSELoss())


# --------------------------------------------------------------------------------------------------
# TBPTT(k1 < k2) on the C++ stream: frozen weights, changing weights (stored activations)
# --------------------------------------------------------------------------------------------------


class _RecordingSGD:
    """SGD that records the gradients it is given and the weights they were computed with."""

    def __init__(self, params: dict[str, np.ndarray], lr: float) -> None:
        self.sgd = optim.SGD(params, lr=lr)
        self.params = params
        self.grads: list[dict[str, np.ndarray]] = []
        self.before: list[dict[str, np.ndarray]] = []

    @property
    def lr(self) -> float:
        return float(self.sgd.lr)

    def step(self, grads: dict[str, np.ndarray]) -> None:
        self.grads.append({k: v.copy() for k, v in grads.items()})
        self.before.append({k: v.copy() for k, v in self.params.items()})
        self.sgd.step(grads)

    def state_dict(self) -> dict[str, Any]:
        return self.sgd.state_dict()


def _cell_weights(p: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {
        "w_ih": p["rnn.weight_ih_l0"],
        "w_hh": p["rnn.weight_hh_l0"],
        "b_ih": p["rnn.bias_ih_l0"],
        "b_hh": p["rnn.bias_hh_l0"],
    }


def _fit_one_batch(
    cell: str, k1: int, k2: int, lr: float, lengths: Any = None, seed: int = 0
) -> tuple[Any, _RecordingSGD, np.ndarray, np.ndarray, Any]:
    T, N, I, H, O = 13, 3, 2, 4, 2
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((T, N, I))
    y = rng.standard_normal((T, N, O))
    model = M.build_model(cell, I, H, O, mode="many_to_many", seed=1, dtype=np.float64)
    opt = _RecordingSGD(model.parameters(), lr)
    data = (x, y) if lengths is None else (x, y, lengths)
    TR.fit(model, data, losses.MSELoss(), opt, epochs=1, batch_size=N, bptt=(k1, k2), seed=0,
           progress=False)  # fmt: skip
    order = np.random.default_rng(np.random.SeedSequence(0).spawn(2)[0]).permutation(N)
    lb = None if lengths is None else np.asarray(lengths)[order]
    return model, opt, x[:, order], y[:, order], lb


@pytest.mark.skipif(not FUNCTIONAL, reason="needs the compiled core")
@pytest.mark.parametrize(
    "cell,k1,k2,ragged",
    [("rnn", 3, 7, False), ("lstm", 2, 5, False), ("gru", 4, 9, False), ("lstm", 3, 8, True)],
)
def test_fit_tbptt_frozen_weights_equals_functional_tbptt_grads(
    cell: str, k1: int, k2: int, ragged: bool
) -> None:
    """lr = 0: every update of fit(bptt=(k1, k2)) is functional.tbptt_grads' update (k1 < k2, a last
    chunk shorter than k1, and ragged lengths whose padded steps must not change anything)."""
    from rnnfast import functional as F

    lengths = np.array([13, 6, 9]) if ragged else None
    model, opt, xb, yb, lb = _fit_one_batch(cell, k1, k2, 0.0, lengths)
    p = model.parameters()
    T = xb.shape[0]
    state0 = (None, None) if cell == "lstm" else None
    ys = R.__dict__[f"{cell}_forward"](
        xb, *((None, None) if cell == "lstm" else (None,)), *_cell_weights(p).values(), lengths=lb
    )[0]
    pred = ys @ p["head.weight"].T + p["head.bias"]
    dy = np.zeros_like(ys)
    for a in range(0, T, k1):
        b = min(a + k1, T)
        mask = None if lb is None else losses.sequence_mask(np.clip(lb - a, 0, b - a), b - a)
        _, dpred = losses.MSELoss()(pred[a:b], yb[a:b], mask)
        dy[a:b] = dpred @ p["head.weight"]
    # padded steps (zero dy) come after every valid step of their row, so the ragged stream's
    # gradients are those of the dense stream with the padded inputs anywhere
    expected = F.tbptt_grads(cell, xb, state0, _cell_weights(p), dy, k1, k2)
    assert len(opt.grads) == len(expected) == -(-T // k1)
    for n, (g, e) in enumerate(zip(opt.grads, expected)):
        for key, name in (("w_ih", "weight_ih"), ("w_hh", "weight_hh"), ("b_ih", "bias_ih")):
            assert_close(g[f"rnn.{name}_l0"], e[key], 1e-10, f"{cell} update {n} {key}")


def _window_cache(cell: str, caches: list[Any], offsets: list[int], s: int, e: int, w: Any) -> Any:
    """A reference cache for steps [s, e) from per-chunk caches (chunk j starts at offsets[j]),
    with the weights ``w`` (the current ones) in place of those the chunks ran with."""
    import dataclasses

    def cut(field: str, extra: int) -> Any:
        parts = []
        for c, o in zip(caches, offsets):
            v = getattr(c, field)
            if v is None:
                return None
            n = c.x.shape[0]
            a, b = max(s, o), min(e, o + n)
            if a < b:
                parts.append(v[a - o : b - o])
        out = np.concatenate(parts, axis=0)
        if extra:  # h / c hold T+1 states: append the state after the window
            last, o = next((c, o) for c, o in zip(caches, offsets) if o < e <= o + c.x.shape[0])
            out = np.concatenate([out, getattr(last, field)[e - o : e - o + 1]], axis=0)
        return out

    return dataclasses.replace(
        caches[0],
        x=cut("x", 0),
        mask=cut("mask", 0),
        h=cut("h", 1),
        c=cut("c", 1),
        act=cut("act", 0),
        ghn=cut("ghn", 0),
        w_ih=w["w_ih"],
        w_hh=w["w_hh"],
        b_ih=w["b_ih"],
        b_hh=w["b_hh"],
    )


@pytest.mark.parametrize("cell,k1,k2", [("rnn", 3, 7), ("lstm", 2, 5), ("gru", 4, 9)])
def test_fit_tbptt_changing_weights_uses_stored_activations(cell: str, k1: int, k2: int) -> None:
    """lr > 0: update n backpropagates its window through the activations each step got when it was
    run (chunk j ran with the weights after j updates) using the current weights W_n in the
    backward: Williams & Peng's TBPTT(k1, k2). Built here from the reference, chunk by chunk."""
    model, opt, xb, yb, _ = _fit_one_batch(cell, k1, k2, 0.2, seed=3)
    T = xb.shape[0]
    starts = list(range(0, T, k1))
    assert len(opt.before) == len(starts)
    fwd = R.__dict__[f"{cell}_forward"]
    caches: list[Any] = []
    differs: list[float] = []
    state: Any = (None, None) if cell == "lstm" else None
    for n, a in enumerate(starts):
        b = min(a + k1, T)
        p = opt.before[n]  # the weights chunk n runs and backpropagates with
        w = _cell_weights(p)
        out = fwd(xb[a:b], *(state if cell == "lstm" else (state,)), *w.values())
        ys, cache = out[0], out[-1]
        state = (out[1], out[2]) if cell == "lstm" else out[1]
        caches.append(cache)
        pred = ys @ p["head.weight"].T + p["head.bias"]
        _, dpred = losses.MSELoss()(pred, yb[a:b])
        s = max(0, b - k2)
        dyw = np.zeros((b - s,) + ys.shape[1:])
        dyw[b - s - (b - a) :] = dpred @ p["head.weight"]
        g = R.__dict__[f"{cell}_backward"](_window_cache(cell, caches, starts, s, b, w), dyw)
        got = opt.grads[n]
        for key, name in (("w_ih", "weight_ih"), ("w_hh", "weight_hh"), ("b_hh", "bias_hh")):
            assert_close(got[f"rnn.{name}_l0"], g[key], 1e-10, f"{cell} update {n} {key}")
        head_w = dpred.reshape(-1, dpred.shape[-1]).T @ ys.reshape(-1, ys.shape[-1])
        assert_close(got["head.weight"], head_w, 1e-10, f"{cell} update {n} head.weight")
        if s < a:  # the other reading (re-run the window with W_n, as the old streams did) differs
            wc = _window_cache(cell, caches, starts, s, b, w)
            st0 = (wc.h[0], wc.c[0]) if cell == "lstm" else (wc.h[0],)
            rerun = fwd(xb[s:b], *st0, *w.values())[-1]
            g2 = R.__dict__[f"{cell}_backward"](rerun, dyw)
            differs.append(float(np.max(np.abs(g2["w_hh"] - g["w_hh"]))))
    assert differs and max(differs) > 1e-6, f"history effect too small to test: {differs}"


def test_training_imports_no_tasks_and_trainer_is_what_callbacks_see() -> None:
    """rnnfast.training sits below rnnfast.tasks (no import cycle: Split lives in training.data);
    fit runs a Trainer, which callbacks see as ``self.trainer``."""
    import re
    import subprocess
    import sys
    from pathlib import Path

    fresh = "import sys, rnnfast.training; print('rnnfast.tasks' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", fresh], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False", out.stdout + out.stderr
    pkg = Path(TR.__file__).parent  # nor lazily, inside a function
    lazy = [
        p.name for p in pkg.glob("*.py") if re.search(r"^\s*from \S*tasks", p.read_text(), re.M)
    ]
    assert not lazy, f"rnnfast.training imports rnnfast.tasks in {lazy}"
    x, y = adding_problem(16, 6, 0)
    model = M.build_model("gru", 2, 4, 1, mode="many_to_one", seed=0)
    seen: list[Any] = []
    cb = TR.LambdaCallback(on_train_begin=lambda logs: seen.append(cb.trainer))
    TR.fit(model, (x, y), losses.MSELoss(), optim.SGD(model.parameters(), lr=0.1), epochs=1,
           batch_size=8, callbacks=[cb], progress=False)  # fmt: skip
    assert isinstance(seen[0], TR.Trainer) and seen[0].model is model and seen[0].state.epoch == 1
