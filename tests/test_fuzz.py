"""Bounded run of the binding fuzz harness (tests/fuzz/fuzz_bindings.py) in a subprocess.

A crash of the compiled core (segfault, abort) ends the child, not pytest, and fails this test with
the last logged input, which is the one that crashed. The long run is a documented command
(docs/RELIABILITY.md): ``python tests/fuzz/fuzz_bindings.py --examples 20000``.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

__all__: list[str] = []

HARNESS = Path(__file__).resolve().parent / "fuzz" / "fuzz_bindings.py"


def _describe(returncode: int) -> str:
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exit status {returncode}"


@pytest.mark.parametrize(("seed", "threads"), [(1, 1), (2, 2)])
def test_fuzz_bindings_bounded_run(seed: int, threads: int, tmp_path: Path) -> None:
    log = tmp_path / "fuzz.log"
    cmd = [sys.executable, "-W", "error", str(HARNESS), "--examples", "250", "--seed", str(seed),
           "--threads", str(threads), "--log", str(log)]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240)
    if proc.returncode != 0:
        lines = log.read_text().splitlines() if log.exists() else []
        last = "\n".join(lines[-8:])
        pytest.fail(
            f"fuzz harness failed ({_describe(proc.returncode)}); last inputs:\n{last}\n"
            f"--- stdout ---\n{proc.stdout[-4000:]}\n--- stderr ---\n{proc.stderr[-6000:]}"
        )
    assert "examples" in proc.stdout, proc.stdout
    checked = int(proc.stdout.split(" checked against the reference")[0].rsplit(" ", 1)[-1])
    assert checked >= 30, (
        f"too few accepted calls were checked against the reference: {proc.stdout}"
    )
