"""Tests of the command line (python -m rnnfast): subcommands with tiny settings, JSON output,
checkpoints and sampling, and user errors (exit status 2, a one-line message, no traceback)."""

from __future__ import annotations

import json
import math
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
