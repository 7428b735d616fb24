"""Tests of the command line (python -m rnnfast): subcommands with tiny settings, JSON output,
checkpoints and sampling, and user errors (exit status 2, a one-line message, no traceback)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest

from rnnfast.cli import main, parse_bptt

__all__: list[str] = []


def _run(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "rnnfast", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_train_writes_json_with_history_and_final_metrics(tmp_path) -> None:
    out = tmp_path / "run.json"
    plot = tmp_path / "loss.png"
    r = _run(
        "train",
        "--task",
        "sine",
        "--cell",
        "gru",
        "--hidden",
        "8",
        "--seq-len",
        "10",
        "--epochs",
        "2",
        "--batch-size",
        "64",
        "--seed",
        "1",
        "--threads",
        "1",
        "--no-progress",
        "--json",
        str(out),
        "--plot",
        str(plot),
    )
    assert r.returncode == 0, r.stderr
    assert "validation MSE" in r.stdout
    data = json.loads(out.read_text())
    assert data["task"] == "sine" and data["cell"] == "gru"
    assert [e["epoch"] for e in data["history"]] == [1, 2]
    for e in data["history"]:
        assert math.isfinite(e["loss"]) and math.isfinite(e["val_loss"])
    final = data["final"]
    for key in ("val_loss", "val_mse", "baseline_persistence_mse"):
        assert isinstance(final[key], float) and math.isfinite(final[key]), key
    # MSELoss is half the mean squared error: the reported val_loss and val_mse must agree
    assert final["val_loss"] == pytest.approx(0.5 * final["val_mse"], rel=1e-4)
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_train_classification_reports_accuracy(tmp_path, capsys) -> None:
    out = tmp_path / "s.json"
    code = main(
        ["train", "--task", "sentiment", "--epochs", "1", "--no-progress", "--json", str(out)]
    )
    assert code == 0
    final = json.loads(out.read_text())["final"]
    assert 0.0 <= final["val_accuracy"] <= 1.0
    assert "validation accuracy" in capsys.readouterr().out


def test_charlm_checkpoint_and_sample(tmp_path) -> None:
    ckpt = tmp_path / "charlm.npz"
    r = _run(
        "train",
        "--task",
        "charlm",
        "--hidden",
        "16",
        "--seq-len",
        "16",
        "--epochs",
        "1",
        "--bptt",
        "8,16",
        "--n-train",
        "200",
        "--no-progress",
        "--save",
        str(ckpt),
    )
    assert r.returncode == 0, r.stderr
    assert ckpt.is_file()
    r = _run(
        "sample",
        str(ckpt),
        "--prime",
        "The sea",
        "--length",
        "50",
        "--temperature",
        "0.5",
        "--seed",
        "3",
    )
    assert r.returncode == 0, r.stderr
    text = r.stdout.rstrip("\n")
    assert text.startswith("The sea") and len(text) == len("The sea") + 50
    again = _run(
        "sample",
        str(ckpt),
        "--prime",
        "The sea",
        "--length",
        "50",
        "--temperature",
        "0.5",
        "--seed",
        "3",
    )
    assert again.stdout == r.stdout, "sampling with the same seed must repeat"


def test_gradcheck_passes() -> None:
    r = _run("gradcheck")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "all within tolerance" in r.stdout
    for cell in ("rnn-tanh", "rnn-relu", "lstm", "gru"):
        assert cell in r.stdout


def test_diagnose_prints_the_decay_table(capsys) -> None:
    code = main(
        [
            "diagnose",
            "--cell",
            "rnn,lstm",
            "--seq-len",
            "30",
            "--train-steps",
            "0",
            "--explode-steps",
            "3",
        ]
    )
    assert code == 0
    out = capsys.readouterr().out
    assert "rnn (init)" in out and "lstm (init)" in out and "d=29" in out
    assert "exploding" in out and "clip_norm=1" in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["train", "--task", "nope"], "invalid choice: 'nope'"),
        (["train", "--task", "charlm", "--bptt", "8,4"], "k2 >= k1"),
        (["train", "--task", "charlm", "--bptt", "a,b"], "expected k1,k2"),
        (["train", "--task", "adding", "--bptt", "5,10"], "many-to-many"),
        (["train", "--task", "sine", "--lr", "-1"], "--lr"),
        (["train", "--task", "sine", "--json", "/nonexistent/dir/x.json"], "does not exist"),
        (["diagnose", "--cell", "rnn,transformer"], "--cell"),
        (["sample", "/nonexistent/ckpt.npz"], "no such checkpoint"),
        (["diagnose", "--seq-len", "1"], "--seq-len"),
        (["diagnose", "--plot", "x.unknownext"], "unknown image format"),
        (["train", "--task", "sine", "--threads", "99999999999"], "--threads"),
        (["gradcheck", "--threads", "99999999999"], "--threads"),
        (["train", "--task", "sine", "--save", "/"], "is a directory"),
        ([], "required"),
    ],
)
def test_user_errors_exit_2_with_a_message(args: list[str], message: str, capsys) -> None:
    try:
        code = main(args)
    except SystemExit as exc:  # argparse's own errors
        code = exc.code
    assert code == 2
    err = capsys.readouterr().err
    assert message in err, err
    assert "Traceback" not in err


def test_errors_in_a_subprocess_have_no_traceback() -> None:
    r = _run("train", "--task", "adding", "--bptt", "5,10")
    assert r.returncode == 2
    assert "error:" in r.stderr and "Traceback" not in r.stderr


def test_parse_bptt() -> None:
    assert parse_bptt("20,40") == (20, 40)
    assert parse_bptt("8") == (8, 8)


# --------------------------------------------------------------------------------------------------
# nothing trained is lost: outputs checked before training, the checkpoint written first
# --------------------------------------------------------------------------------------------------

TINY = [
    "--task",
    "sine",
    "--hidden",
    "4",
    "--seq-len",
    "8",
    "--n-train",
    "32",
    "--batch-size",
    "16",
    "--epochs",
    "1",
    "--seed",
    "0",
    "--no-progress",
]


def _main(args: list[str], capsys) -> tuple[int, str, str]:
    try:
        code = main(args)
    except SystemExit as exc:  # argparse's own errors
        code = int(exc.code or 0)
    cap = capsys.readouterr()
    return code, cap.out, cap.err


@pytest.fixture()
def no_training(monkeypatch):
    """Training must not start: any call fails the test."""
    import rnnfast.tasks as tasks

    def trained(*args, **kwargs):
        raise AssertionError("training started before the output paths were checked")

    monkeypatch.setattr(tasks, "run_task", trained)


@pytest.mark.parametrize(
    ("flag", "value", "message"),
    [
        ("--save", "{dir}", "is a directory"),
        ("--json", "{dir}", "is a directory"),
        ("--plot", "{dir}", "is a directory"),
        ("--plot", "{dir}/loss.unknownext", "unknown image format '.unknownext'"),
        ("--plot", "{dir}/loss.v2", "unknown image format"),
        ("--save", "{dir}/missing/m.npz", "does not exist"),
        ("--json", "{dir}/m.npz", "is also the --save file"),
        ("--save", "/dev/null", "not a regular file"),
    ],
)
def test_train_checks_every_output_before_training(
    flag: str, value: str, message: str, tmp_path, capsys, no_training
) -> None:
    args = ["train", *TINY, flag, value.replace("{dir}", str(tmp_path))]
    if flag != "--save":  # with a checkpoint asked for as well
        args += ["--save", str(tmp_path / "m.npz")]
    code, _, err = _main(args, capsys)
    assert code == 2, err
    assert message in err and flag in err, err
    assert "Traceback" not in err


def test_train_refuses_a_directory_that_takes_no_files(
    tmp_path, capsys, monkeypatch, no_training
) -> None:
    """The parent is probed by creating a file (os.access is wrong for root and read-only mounts)."""
    import errno

    from rnnfast import io as rio  # the probe lives in rnnfast.io.check_writable

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(rio.tempfile, "mkstemp", read_only)
    code, _, err = _main(["train", *TINY, "--save", str(tmp_path / "m.npz")], capsys)
    assert code == 2 and "--save: cannot create files in" in err and "Read-only" in err, err
    if os.name == "posix":
        existing = tmp_path / "h.json"
        existing.write_text("{}")
        existing.chmod(0o400)
        monkeypatch.setattr(rio.os, "access", lambda *a, **k: False)
        code, _, err = _main(["train", *TINY, "--json", str(existing)], capsys)
        assert code == 2 and "--json" in err and "not writable" in err, err


def test_train_plot_without_extension_reports_the_file_it_writes(tmp_path, capsys) -> None:
    code, out, err = _main(["train", *TINY, "--plot", str(tmp_path / "loss")], capsys)
    assert code == 0, err
    assert (tmp_path / "loss.png").read_bytes()[:4] == b"\x89PNG"
    assert f"wrote {tmp_path / 'loss.png'}" in out, out
    assert not (tmp_path / "loss").exists()


def test_train_plot_needs_matplotlib(tmp_path, capsys, monkeypatch, no_training) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib.backend_bases", None)  # import fails
    code, _, err = _main(["train", *TINY, "--plot", str(tmp_path / "p.png")], capsys)
    assert code == 2 and "--plot: needs matplotlib" in err and "rnnfast[plot]" in err, err


def test_failing_extras_never_cost_the_checkpoint(tmp_path, capsys, monkeypatch) -> None:
    """JSON and plot fail after training (disk full, say): the checkpoint is already written."""
    from rnnfast import diagnostics
    from rnnfast.cli import train  # the module of `rnnfast train --task`, which writes the JSON

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(train, "_write_json", disk_full)
    monkeypatch.setattr(diagnostics, "plot_history", disk_full)
    ck = tmp_path / "m.npz"
    code, out, err = _main(
        [
            "train",
            *TINY,
            "--save",
            str(ck),
            "--json",
            str(tmp_path / "h.json"),
            "--plot",
            str(tmp_path / "p.png"),
        ],
        capsys,
    )
    assert code == 2, err
    assert "--json: cannot write" in err and "--plot: cannot write" in err, err
    assert f"the model was saved to {ck}" in err, err
    assert "Traceback" not in err
    import rnnfast as rf

    model = rf.load(ck).build_model()
    assert model.rnn.hidden_size == 4


def test_sine_many_to_many_takes_bptt(capsys) -> None:
    # the check used the task's default mode (many_to_one), not the requested one
    args = ["train", *TINY, "--mode", "many_to_many", "--bptt", "4,8"]
    code, out, err = _main(args, capsys)
    assert code == 0, err
    assert "bptt=[4, 8]" in out, out
    code, _, err = _main(["train", *TINY, "--bptt", "4,8"], capsys)
    assert code == 2 and "'sine' is many_to_one" in err and "--mode many_to_many" in err, err


# --------------------------------------------------------------------------------------------------
# one-line errors, exit status 2
# --------------------------------------------------------------------------------------------------


def _charlm_checkpoint(path, vocab: str = "abcd", vocab_size: int = 4, edit=None):
    import rnnfast as rf

    m = rf.build_model("gru", 3, 5, vocab_size, mode="many_to_many", vocab_size=vocab_size, seed=0)
    rf.save(path, m, meta={"task": "charlm", "vocab": vocab})
    if edit is not None:
        import zipfile

        with zipfile.ZipFile(path) as zf:
            members = {n: zf.read(n) for n in zf.namelist()}
        import io

        import numpy as np

        header = json.loads(np.load(io.BytesIO(members["__metadata__.npy"])).tobytes())
        edit(header)
        buf = io.BytesIO()
        np.save(buf, np.frombuffer(json.dumps(header).encode(), np.uint8))
        members["__metadata__.npy"] = buf.getvalue()
        with zipfile.ZipFile(path, "w") as zf:
            for n, data in members.items():
                zf.writestr(n, data)
    return path


def test_sample_works_on_a_good_checkpoint(tmp_path, capsys) -> None:
    ck = _charlm_checkpoint(tmp_path / "c.npz")
    code, out, err = _main(["sample", str(ck), "--prime", "ab", "--length", "5"], capsys)
    assert code == 0, err
    assert out.startswith("ab") and len(out.rstrip("\n")) == 7 and set(out.strip()) <= set("abcd")


@pytest.mark.filterwarnings("ignore::rnnfast._precision.Bf16PathWarning")
def test_sample_precision(tmp_path, capsys) -> None:
    """--precision bf16 samples through the bf16 kernels (same length and alphabet); fp32 is the
    default's text exactly; a float64 model refuses bf16 in one line; an unknown value is argparse's
    error."""
    ck = _charlm_checkpoint(tmp_path / "c.npz")
    base = ["sample", str(ck), "--prime", "ab", "--length", "12"]
    code, out_default, err = _main(base, capsys)
    assert code == 0, err
    code, out32, err = _main([*base, "--precision", "fp32"], capsys)
    assert code == 0 and out32 == out_default, err
    code, out16, err = _main([*base, "--precision", "bf16"], capsys)
    assert code == 0, err
    assert out16.startswith("ab") and len(out16.rstrip("\n")) == 14, out16
    assert set(out16.strip()) <= set("abcd")
    import numpy as np

    import rnnfast as rf

    m64 = rf.build_model(
        "gru", 3, 5, 4, mode="many_to_many", vocab_size=4, seed=0, dtype=np.float64
    )
    ck64 = tmp_path / "c64.npz"
    rf.save(ck64, m64, meta={"task": "charlm", "vocab": "abcd"})
    code, _, err = _main(["sample", str(ck64), "--precision", "bf16"], capsys)
    assert code == 2 and "--precision" in err and "float32" in err, err
    assert len(err.strip().splitlines()) == 1, err
    code, _, err = _main([*base, "--precision", "fp16"], capsys)
    assert code == 2 and "--precision" in err and "fp16" in err, err


@pytest.mark.parametrize(
    ("vocab", "edit", "message"),
    [
        ("aabc", None, "meta.vocab"),  # repeated characters
        ("", None, "meta.vocab"),
        ("abc", None, "meta.vocab has 3 characters but the model's embedding size is 4"),
        ("abcd", lambda h: h["model"]["config"].update(type="Nope"), "model.config"),
        (
            "abcd",
            lambda h: h["model"]["config"]["rnn"].update(hidden_size="five"),
            "model.config",
        ),
        ("abcd", lambda h: h["model"]["config"].update(embedding=None), "embedding"),
        ("abcd", lambda h: h["model"].update(config=None), "no model config"),
        ("abcd", lambda h: h["model"].update(**{"class": "os:system"}), "'os:system'"),
    ],
)
def test_sample_bad_checkpoint_is_a_one_line_error(
    vocab: str, edit, message: str, tmp_path, capsys
) -> None:
    ck = _charlm_checkpoint(tmp_path / "c.npz", vocab=vocab, edit=edit)
    code, _, err = _main(["sample", str(ck), "--prime", "a", "--length", "3"], capsys)
    assert code == 2, err
    assert message in err and "Traceback" not in err, err
    assert len(err.strip().splitlines()) == 1, err


def test_diagnose_plot_is_checked_before_the_experiment(tmp_path, capsys, monkeypatch) -> None:
    import rnnfast.diagnostics as d

    def ran(*args, **kwargs):
        raise AssertionError("the experiment ran before --plot was checked")

    monkeypatch.setattr(d, "vanishing_case", ran)
    for plot, message in [
        (str(tmp_path / "x.unknownext"), "unknown image format"),
        (str(tmp_path), "is a directory"),
        (str(tmp_path / "no" / "x.png"), "does not exist"),
    ]:
        code, _, err = _main(["diagnose", "--seq-len", "5", "--plot", plot], capsys)
        assert code == 2 and message in err and "--plot" in err, err


def test_diagnose_plot_reports_the_file_it_writes(tmp_path, capsys) -> None:
    args = ["diagnose", "--seq-len", "5", "--train-steps", "0", "--explode-steps", "1"]
    code, out, err = _main([*args, "--cell", "rnn", "--plot", str(tmp_path / "flow")], capsys)
    assert code == 0, err
    assert f"wrote {tmp_path / 'flow.png'}" in out
    assert (tmp_path / "flow.png").is_file()


def test_train_zoneout_and_recurrent_dropout_reach_the_stack(capsys) -> None:
    """--zoneout / --recurrent-dropout (run_task's zoneout=, recurrent_dropout=) set the recurrent
    stack's options; bad rates and cells without recurrent weights are user errors."""
    from rnnfast.tasks import run_task

    seen: list = []
    res = run_task(
        "sine", cell="lstm", hidden=6, zoneout=0.1, recurrent_dropout=0.2, epochs=1, n_train=32,
        n_val=16, on_model=seen.append,
    )  # fmt: skip
    assert seen[0].rnn.zoneout == (0.1, 0.1) and seen[0].rnn.recurrent_dropout == 0.2
    assert math.isfinite(res.final["val_mse"])
    code, out, err = _main(["train", *TINY, "--cell", "gru", "--zoneout", "0.05"], capsys)
    assert code == 0, err
    assert "zoneout=0.05" in out
    code, _, err = _main(["train", *TINY, "--recurrent-dropout", "1.0"], capsys)
    assert code == 2 and "--recurrent-dropout: expected a rate in [0, 1), got '1.0'" in err
    code, _, err = _main(["train", *TINY, "--cell", "mingru", "--zoneout", "0.1"], capsys)
    assert code == 2 and "zoneout: the minimal cell 'mingru' has no recurrent weights" in err
    assert "Traceback" not in err
