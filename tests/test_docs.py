"""The documentation runs: every ```python block of README.md and docs/TUTORIAL.md is executed (in
document order, in one scratch directory per file, each block in a fresh subprocess with a
timeout), and every ``python -m rnnfast ...`` line of the ```bash blocks is parsed by the CLI's own
parser (a dry run: unknown options, bad values and missing arguments fail); the bash blocks of the
CSV walkthrough are run for real. Blocks that would take long run a smaller version (``SHRINK``),
shown here next to the reason, so the README keeps the real numbers; ``train --help`` states every
option's default.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", ROOT / "docs" / "TUTORIAL.md"]
TIMEOUT_S = 120  # per block; the blocks are sized to take a few seconds each

#: (a line unique to the block, text to replace, replacement): smaller runs of the long examples
SHRINK: list[tuple[str, str, str]] = [
    # the dates translator trains for ~30 s CPU; one epoch shows the snippet works
    ("train_seq2seq(model", "epochs=8", "epochs=1"),
]

_FENCE = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```", re.S | re.M)


def _blocks(path: Path) -> list[tuple[str, int, str]]:
    """(language, first line number, code) of every fenced block."""
    text = path.read_text(encoding="utf-8")
    out = []
    for m in _FENCE.finditer(text):
        line = text.count("\n", 0, m.start(2)) + 1
        out.append((m.group(1), line, m.group(2)))
    return out


def _shrink(code: str) -> str:
    for marker, old, new in SHRINK:
        if marker in code:
            code = code.replace(old, new)
    return code


def _needs(code: str) -> list[str]:
    mods = []
    if re.search(r"^\s*(import torch|from torch|import rnnfast\.torch)", code, re.M):
        mods.append("torch")
    if "plot" in code and ("png" in code or "--plot" in code):
        mods.append("matplotlib")
    if "rnnfast.jax" in code:
        mods.append("jax")
    if "load_digits" in code or "caption" in code:
        mods.append("sklearn")
    if "mpiexec" in code:
        mods.append("mpi4py")
    return [m for m in mods if importlib.util.find_spec(m) is None]


def _cases() -> list[object]:
    cases = []
    for path in DOCS:
        if not path.exists():
            continue
        for lang, line, code in _blocks(path):
            if lang not in ("python", "bash"):
                continue
            name = f"{path.name}:{line}"
            cases.append(pytest.param(path, lang, line, code, id=name))
    return cases


@pytest.fixture(scope="module")
def workdirs(tmp_path_factory: pytest.TempPathFactory) -> dict[Path, Path]:
    """One scratch directory per document: later blocks may read what earlier ones wrote."""
    return {p: tmp_path_factory.mktemp(p.stem.lower()) for p in DOCS}


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(RNNFAST_NUM_THREADS="1", OMP_NUM_THREADS="1", MPLBACKEND="Agg")
    return env


def _rnnfast_commands(code: str) -> list[list[str]]:
    """The argv of every ``python -m rnnfast ...`` command in a shell block (continuations joined,
    comments dropped; several commands joined by && are split)."""
    joined = code.replace("\\\n", " ")
    cmds = []
    for raw in joined.splitlines():
        line = raw.split(" #", 1)[0].strip()
        for part in line.split("&&"):
            m = re.search(r"python3? -m rnnfast\b(.*)$", part.strip())
            if m:
                cmds.append(shlex.split(m.group(1)))
    return cmds


def _run_for_real(cmds: list[list[str]]) -> bool:
    """A block of only ``train --csv`` commands (the CSV walkthrough) is cheap: it is run, not
    only parsed (the quick start mentions --csv before the file exists: parsed only)."""
    return bool(cmds) and all("--csv" in argv for argv in cmds)


@pytest.mark.parametrize("path, lang, line, code", _cases())
def test_snippet(path: Path, lang: str, line: int, code: str, workdirs: dict[Path, Path]) -> None:
    missing = _needs(code)
    if missing:
        pytest.skip(f"needs {', '.join(missing)}")
    cwd = workdirs[path]
    code = _shrink(code)
    if lang == "bash":
        from rnnfast.cli import build_parser

        cmds = _rnnfast_commands(code)
        for argv in cmds:
            if _run_for_real(cmds):
                r = subprocess.run(
                    [sys.executable, "-m", "rnnfast", *argv, "--no-progress"]
                    if argv[0] == "train"
                    else [sys.executable, "-m", "rnnfast", *argv],
                    cwd=cwd,
                    env=_env(),
                    capture_output=True,
                    text=True,
                    timeout=TIMEOUT_S,
                )
                assert r.returncode == 0, f"{path.name}:{line}: {argv}\n{r.stdout}\n{r.stderr}"
                assert "vs persistence" in r.stdout, r.stdout
                continue
            try:
                build_parser().parse_args(argv)
            except SystemExit as exc:  # argparse: a bad option or value
                pytest.fail(
                    f"{path.name}:{line}: `rnnfast {shlex.join(argv)}` does not parse ({exc})"
                )
        return
    r = subprocess.run(
        [sys.executable, "-c", code],
        cwd=cwd,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
    )
    assert r.returncode == 0, (
        f"{path.name}:{line}: the snippet failed\n--- code\n{code}\n--- stdout\n{r.stdout}"
        f"\n--- stderr\n{r.stderr[-4000:]}"
    )


def test_docs_have_snippets() -> None:
    assert sum(lang == "python" for lang, _, _ in _blocks(DOCS[0])) >= 8


def test_train_help_states_every_default() -> None:
    """``train --help``: every option has a help text that gives its default (or is a switch)."""
    from rnnfast.cli import build_parser

    parser = build_parser()
    train = next(
        a for a in parser._subparsers._group_actions[0].choices.items() if a[0] == "train"
    )[1]
    for action in train._actions:
        if action.dest == "help":
            continue
        text = action.help or ""
        assert text, f"--{action.dest}: no help text"
        assert "default" in text.lower() or action.dest in ("task", "csv", "target"), (
            f"--{action.dest}: help {text!r} does not say its default"
        )
