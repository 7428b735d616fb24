"""minGRU / minLSTM (rnnfast.MinGRU, rnnfast.MinLSTM) used as the other cells are: exported where
the other modules are, inside a SequenceModel (forward/backward against central finite differences
in float64), trained by fit on the adding task, saved and loaded by rnnfast.save/load, built by
build_model / model_from_config, and named by ``--cell`` on the command line. What the minimal
cells lack (ragged lengths, TBPTT streams, bidirectional, dropout, init presets, step) raises a
ValueError naming the argument and the cell; tasks that need it refuse them with a one-line error.
"""

from __future__ import annotations

import copy
import json
import pickle
import subprocess
import sys

import numpy as np
import pytest

import rnnfast
from rnnfast.cli import main
from rnnfast.tasks import CELLS, get_task, run_task

__all__: list[str] = []

MODULES = {"mingru": rnnfast.MinGRU, "minlstm": rnnfast.MinLSTM}


def _run(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "rnnfast", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def _main(args: list[str], capsys) -> tuple[int, str, str]:
    try:
        code = main(args)
    except SystemExit as exc:  # argparse's own errors
        code = int(exc.code or 0)
    cap = capsys.readouterr()
    return code, cap.out, cap.err


def _model(cell: str, mode: str, *, layers: int = 2, bias: bool = True, seed: int = 0):
    rnn = MODULES[cell](3, 4, num_layers=layers, bias=bias, dtype=np.float64, seed=seed)
    head = rnnfast.Linear(4, 2, dtype=np.float64, seed=seed + 1)
    return rnnfast.SequenceModel(rnn, head, mode=mode)


# --------------------------------------------------------------------------------------------------
# exports and registries
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["MinGRU", "MinLSTM"])
def test_exported_like_the_other_modules(name: str) -> None:
    cls = getattr(rnnfast, name)
    assert getattr(rnnfast.nn, name) is cls and getattr(rnnfast.modules, name) is cls
    assert (
        name in rnnfast.__all__ and name in rnnfast.nn.__all__ and name in rnnfast.modules.__all__
    )
    assert cls.__module__ == "rnnfast.modules"  # the class string checkpoints record
    assert rnnfast.io.registered_model_classes()[f"rnnfast.modules:{name}"] is cls


def test_cell_lists_name_the_minimal_cells() -> None:
    assert "mingru" in CELLS and "minlstm" in CELLS
    assert {"rnn", "lstm", "gru", "lstm_peephole"} <= set(CELLS)  # the registry's are kept
    from rnnfast.cli import build_parser

    args = build_parser().parse_args(["train", "--task", "adding", "--cell", "minlstm"])
    assert args.cell == "minlstm"


@pytest.mark.parametrize("cell", sorted(MODULES))
def test_build_model_and_model_from_config(cell: str) -> None:
    m = rnnfast.build_model(cell, 3, 5, 2, mode="many_to_one", num_layers=2, seed=3)
    assert type(m.rnn) is MODULES[cell] and m.rnn.num_layers == 2 and m.rnn.hidden_size == 5
    g = 2 if cell == "mingru" else 3
    assert m.state_dict()["rnn.weight_ih_l1"].shape == (g * 5, 5)
    again = rnnfast.model_from_config(m.config())  # same seeds: same weights
    assert type(again.rnn) is MODULES[cell]
    for k, v in m.state_dict().items():
        np.testing.assert_array_equal(again.state_dict()[k], v, err_msg=k)
    # the neutral values of what the cell lacks are accepted
    rnnfast.build_model(cell, 3, 5, 2, dropout=0.0, bidirectional=False, nonlinearity="tanh")
    rnnfast.build_model(cell, 3, 5, 2, vocab_size=7, embedding_dim=4, bias=False)


def test_model_from_config_rebuilds_a_peephole_lstm() -> None:
    """Every registered cell's module (here PeepholeLSTM) is rebuilt from its config too."""
    m = rnnfast.build_model("lstm_peephole", 2, 3, 1, seed=0)
    again = rnnfast.model_from_config(m.config())
    assert type(again.rnn) is rnnfast.PeepholeLSTM
    np.testing.assert_array_equal(
        again.state_dict()["rnn.weight_peep_l0"], m.state_dict()["rnn.weight_peep_l0"]
    )


# --------------------------------------------------------------------------------------------------
# SequenceModel forward/backward vs central finite differences (float64)
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("cell", sorted(MODULES))
@pytest.mark.parametrize("mode", ["many_to_many", "many_to_one", "one_to_one"])
def test_sequence_model_gradients_match_finite_differences(cell: str, mode: str) -> None:
    model = _model(cell, mode, bias=mode != "one_to_one")
    rng = np.random.default_rng(7)
    t, b = 5, 2
    x = rng.standard_normal((b, 3) if mode == "one_to_one" else (t, b, 3))
    hx = rng.uniform(0.1, 1.0, (2, b, 4))  # the minimal cells take states >= 0
    out_shape = (t, b, 2) if mode == "many_to_many" else (b, 2)
    w = rng.standard_normal(out_shape)  # L = sum(w * pred): dL/dpred = w

    model.train()
    model.zero_grad()
    pred = model(x, hx=hx)
    assert pred.shape == out_shape and pred.dtype == np.float64
    dx = model.backward(w)
    grads = {k: v.copy() for k, v in model.grads.items()}
    dhx = model.rnn.grad_hx.copy()

    model.eval()

    def loss() -> float:
        return float(np.sum(w * model(x, hx=hx)))

    eps = 1e-6

    def fd(a: np.ndarray) -> np.ndarray:
        g = np.zeros_like(a)
        for i in range(a.size):
            old = a.flat[i]
            a.flat[i] = old + eps
            up = loss()
            a.flat[i] = old - eps
            down = loss()
            a.flat[i] = old
            g.flat[i] = (up - down) / (2 * eps)
        return g

    checks = [(f"param {k}", grads[k], fd(p)) for k, p in model.parameters().items()]
    checks += [("x", dx, fd(x)), ("hx", dhx, fd(hx))]
    for name, got, want in checks:
        err = np.abs(got - want)
        tol = 1e-6 * (1.0 + np.abs(want))
        i = np.unravel_index(int(np.argmax(err - tol)), err.shape)
        assert np.all(err <= tol), (
            f"{cell} {mode} d{name}: max error {err.max():.3g} at {i} "
            f"(analytic {got[i]:.8g}, finite differences {want[i]:.8g})"
        )


# --------------------------------------------------------------------------------------------------
# training, saving, loading
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("cell", sorted(MODULES))
def test_fit_on_the_adding_task_lowers_the_loss(cell: str) -> None:
    r = run_task(
        "adding",
        cell=cell,
        hidden=16,
        layers=2,
        seq_len=20,
        n_train=2048,
        n_val=256,
        epochs=8,
        batch_size=32,
        lr=0.01,
        seed=0,
    )  # under 1 s of CPU per cell; at these settings both reach val MSE ~0.001 (solved: < 0.01)
    assert type(r.model.rnn) is MODULES[cell]
    losses = [e["loss"] for e in r.history_list()]
    assert len(losses) == 8 and all(np.isfinite(losses))
    assert losses[-1] < 0.5 * losses[0], losses
    # well below predicting the constant 1 (MSE 1/6) on held-out sequences
    assert r.final["val_mse"] < 0.5 * r.final["baseline_constant_mse"], r.final


@pytest.mark.parametrize("cell", sorted(MODULES))
def test_checkpoint_round_trip(cell: str, tmp_path) -> None:
    model = rnnfast.build_model(cell, 2, 6, 1, mode="many_to_one", num_layers=2, seed=1)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((7, 3, 2)).astype(np.float32)
    model.flat_parameters[:] += rng.standard_normal(model.flat_parameters.size).astype(
        np.float32
    ) * np.float32(0.1)  # weights unlike the config's seed: loaded, not re-drawn
    opt = rnnfast.Adam(model.parameters(), lr=0.01)
    path = tmp_path / "m.npz"
    rnnfast.save(path, model, opt)
    ck = rnnfast.load(path)
    again = ck.build_model()
    assert type(again.rnn) is MODULES[cell]
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(again.state_dict()[k], v, err_msg=k)
    np.testing.assert_array_equal(again.eval()(x), model.eval()(x))

    # a bare module too
    rnn = MODULES[cell](2, 3, seed=0)
    rnnfast.save(tmp_path / "r.npz", rnn)
    back = rnnfast.load(tmp_path / "r.npz").build_model()
    assert type(back) is MODULES[cell]
    np.testing.assert_array_equal(
        back.state_dict()["weight_ih_l0"], rnn.state_dict()["weight_ih_l0"]
    )


@pytest.mark.parametrize("cell", sorted(MODULES))
def test_copies_keep_the_model_working(cell: str) -> None:
    model = rnnfast.build_model(cell, 2, 4, 1, mode="many_to_many", seed=0)
    x = np.random.default_rng(1).standard_normal((5, 2, 2)).astype(np.float32)
    for other in (copy.deepcopy(model), pickle.loads(pickle.dumps(model))):
        assert type(other.rnn) is MODULES[cell]
        np.testing.assert_array_equal(other.eval()(x), model.eval()(x))
        other.train()
        pred = other(x)
        other.backward(np.ones_like(pred))
        assert np.any(other.flat_grads != 0)


# --------------------------------------------------------------------------------------------------
# the command line
# --------------------------------------------------------------------------------------------------


def test_cli_trains_and_saves_the_adding_task_with_mingru(tmp_path) -> None:
    out, ckpt = tmp_path / "run.json", tmp_path / "m.npz"
    r = _run(
        "train",
        "--task",
        "adding",
        "--cell",
        "mingru",
        "--epochs",
        "1",
        "--hidden",
        "8",
        "--seq-len",
        "20",
        "--n-train",
        "128",
        "--batch-size",
        "32",
        "--threads",
        "1",
        "--no-progress",
        "--json",
        str(out),
        "--save",
        str(ckpt),
    )
    assert r.returncode == 0, r.stderr
    data = json.loads(out.read_text())
    assert data["cell"] == "mingru" and len(data["history"]) == 1
    assert np.isfinite(data["history"][0]["loss"])
    model = rnnfast.load(ckpt).build_model()
    assert type(model.rnn) is rnnfast.MinGRU and model.rnn.hidden_size == 8


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--task", "sentiment", "--cell", "mingru"], ("sentiment", "lengths", "mingru")),
        (["--task", "caption", "--cell", "minlstm"], ("caption", "step()", "minlstm")),
        (["--task", "dates", "--cell", "mingru"], ("dates", "lengths", "mingru")),
        (
            ["--task", "sine", "--mode", "many_to_many", "--cell", "mingru", "--bptt", "4,8"],
            ("bptt", "mingru"),
        ),
        (["--task", "adding", "--cell", "minlstm", "--init", "identity"], ("init", "minlstm")),
    ],
)
def test_cli_refuses_what_the_minimal_cells_lack(args, words, capsys, monkeypatch) -> None:
    import rnnfast.training as training

    def no_fit(*a, **k):  # the refusal comes before any training
        raise AssertionError("training started")

    monkeypatch.setattr(training, "fit", no_fit)
    code, _, err = _main(["train", *args, "--threads", "1", "--no-progress"], capsys)
    assert code == 2, err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and "error:" in lines[0] and "Traceback" not in err, err
    for w in words:
        assert w in lines[0], (w, lines[0])


# --------------------------------------------------------------------------------------------------
# what the minimal cells lack: clear ValueErrors
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("cell", sorted(MODULES))
def test_unsupported_features_raise_clear_errors(cell: str) -> None:
    m = rnnfast.build_model(cell, 2, 4, 2, mode="many_to_many", seed=0)
    x = np.zeros((5, 3, 2), np.float32)
    with pytest.raises(ValueError, match=rf"^lengths: .*{cell}"):
        m(x, lengths=np.array([5, 3, 2]))
    with pytest.raises(ValueError, match=rf"^lengths: .*{cell}"):
        m.predict(x, lengths=np.array([5, 3, 2]))
    with pytest.raises(ValueError, match=rf"^step: .*{cell}"):
        m.step(x[0])
    with pytest.raises(ValueError, match=rf"^step: .*{cell}"):
        m.rnn.step(x[0])
    with pytest.raises(ValueError, match=rf"^generate: .*{cell}"):
        m.generate(x[0], 3)
    with pytest.raises(ValueError, match=rf"^generate: .*{cell}"):
        m.forecast(x, 2)  # many_to_many feeds predictions back one step at a time
    for call in (
        lambda: m.stream_begin(3, 2, 4),
        lambda: m.stream_forward(x[:2]),
        lambda: m.stream_backward(np.zeros((2, 3, 2), np.float32)),
        lambda: m.stream_reset(),
        lambda: m.stream_export(),
    ):
        with pytest.raises(ValueError, match=rf"^bptt/stateful: .*{cell}"):
            call()
    assert m.stream_state is None
    m.stream_end()  # nothing to end: no error
    with pytest.raises(ValueError, match=r"^hx: expected finite values >= 0"):
        m(x, hx=-np.ones((1, 3, 4), np.float32))

    # build_model names the argument and the cell
    for kwargs, arg in (
        ({"bidirectional": True}, "bidirectional"),
        ({"dropout": 0.2}, "dropout"),
        ({"init": "orthogonal"}, "init"),
    ):
        with pytest.raises(ValueError, match=rf"^{arg}: the {cell} cell"):
            rnnfast.build_model(cell, 2, 4, 1, **kwargs)


@pytest.mark.parametrize("stateful", [False, True])
def test_fit_refuses_truncated_and_stateful_training(stateful: bool) -> None:
    m = rnnfast.build_model("mingru", 1, 4, 1, mode="many_to_many", seed=0)
    x = np.zeros((6, 4, 1), np.float32)
    opt = rnnfast.SGD(m.parameters(), lr=0.1)
    with pytest.raises(ValueError, match=r"^bptt/stateful: .*MinGRU \(cell 'mingru'\)"):
        rnnfast.fit(
            m,
            (x, x),
            rnnfast.MSELoss(),
            opt,
            epochs=1,
            batch_size=4,
            bptt=None if stateful else (2, 4),
            stateful=stateful,
        )
    # the model is left usable: full BPTT trains
    hist = rnnfast.fit(m, (x, x), rnnfast.MSELoss(), opt, epochs=1, batch_size=4)
    assert len(hist.epochs) == 1


@pytest.mark.parametrize(
    ("task", "need"),
    [("sentiment", "lengths"), ("sentiment-large", "lengths"), ("caption", "step()")],
)
def test_tasks_that_need_what_the_cells_lack_refuse_them(task: str, need: str) -> None:
    t = get_task(task)
    cfg = t.config(cell="minlstm")
    with pytest.raises(ValueError, match=rf"^cell: the {task} task needs .*{need}.*minlstm"):
        t.build_model(cfg, None)  # refused before the data is looked at


def test_tasks_without_needs_build_minimal_models() -> None:
    for name in ("adding", "sine", "digits", "speech"):
        t = get_task(name)
        assert t.needs == ()
    t = get_task("adding")
    train, _ = t.make_data(seed=0, seq_len=4, n_train=8, n_val=4)
    model = t.build_model(t.config(cell="minlstm", hidden=4), train)  # task init -> "torch"
    assert type(model.rnn) is rnnfast.MinLSTM


def test_check_cell_needs() -> None:
    from rnnfast.tasks._base import check_cell

    assert check_cell("gru", "sentiment", ("lengths", "step")) == "gru"  # the stacks have all
    assert check_cell("mingru", "adding") == "mingru"
    with pytest.raises(ValueError, match=r"^needs: expected keys of .*got 'bogus'"):
        check_cell("gru", "adding", ("bogus",))
    with pytest.raises(ValueError, match=r"^cell: the adding task takes .*mingru or minlstm"):
        check_cell("minrnn", "adding")
