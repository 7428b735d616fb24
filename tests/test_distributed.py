"""Tests of rnnfast.distributed: data-parallel training over MPI.

The MPI tests launch ``mpiexec -n 2`` on this machine (loopback, fork launcher, one kernel thread
per rank) with the scripts in tests/mpi_scripts/. Equivalence: N=2 ranks with global batch B must
give the weights (and optimizer state) that the plain single-process ``fit`` gives with batch B --
the oracle is that run, made by rank 0 of the same launch -- in float64 within 1e-10, for full
BPTT, TBPTT and stateful streams. Failure: an exception on one rank must end the whole job
(non-zero exit, the error shown) well within a timeout.

Skipped when mpi4py or mpiexec is missing (``pip install rnnfast[mpi]`` installs both).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("mpi4py")

from rnnfast import distributed as dist  # noqa: E402
from rnnfast import losses  # noqa: E402

__all__: list[str] = []

SCRIPTS = Path(__file__).parent / "mpi_scripts"
TOL = 1e-10
TIMEOUT_S = 120


def _mpiexec() -> str | None:
    # Prefer the launcher installed next to this interpreter (the mpich wheel), which matches the
    # MPI library mpi4py loads; a system mpiexec may belong to another implementation.
    local = Path(sys.executable).parent / "mpiexec"
    if local.exists():
        return str(local)
    return shutil.which("mpiexec")


MPIEXEC = _mpiexec()
needs_mpiexec = pytest.mark.skipif(MPIEXEC is None, reason="mpiexec not found")


def _launch(script: str, *args: str, n: int = 2) -> subprocess.CompletedProcess[str]:
    assert MPIEXEC is not None
    env = dict(os.environ, RNNFAST_NUM_THREADS="1", OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    cmd = [MPIEXEC, "-n", str(n), "-launcher", "fork", "-host", "localhost"]
    cmd += [sys.executable, str(SCRIPTS / script), *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT_S, env=env)


# --------------------------------------------------------------------------------------------------
# in-process pieces (no mpiexec)
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [0, 1, 2, 5, 7, 64, 65])
@pytest.mark.parametrize("size", [1, 2, 3, 8])
def test_shard_bounds_partition_like_array_split(n: int, size: int) -> None:
    expected = np.array_split(np.arange(n), size)
    got = [np.arange(n)[slice(*dist.shard_bounds(n, size, r))] for r in range(size)]
    for r in range(size):
        assert np.array_equal(got[r], expected[r]), f"rank {r}: {got[r]} != {expected[r]}"


@pytest.mark.parametrize(
    "args, match",
    [((3, 2, 2), "rank"), ((3, 0, 0), "size"), ((-1, 2, 0), "n"), ((3, 2, -1), "rank")],
)
def test_shard_bounds_rejects_bad_arguments(args: tuple[int, int, int], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        dist.shard_bounds(*args)


def _denominator(loss: Any, pred: np.ndarray, y: np.ndarray, mask: np.ndarray | None) -> float:
    """The normaliser a mean loss divides by, measured from the loss itself: sum / mean."""
    kind = type(loss)
    kw = {}
    if kind is losses.CrossEntropyLoss:
        kw = {"ignore_index": loss.ignore_index, "weight": loss.weight}
    mean = kind(reduction="mean", **kw).forward(pred, y, mask)
    total = kind(reduction="sum", **kw).forward(pred, y, mask)
    return total / mean


@pytest.mark.parametrize("with_mask", [False, True])
@pytest.mark.parametrize("kind", ["mse", "bce", "ce", "ce_weighted"])
def test_loss_share_is_the_losses_own_denominator(kind: str, with_mask: bool) -> None:
    rng = np.random.default_rng(1)
    t, b, o = 5, 4, 3
    mask = (rng.random((t, b)) < 0.7) if with_mask else None
    if kind in ("mse", "bce"):
        pred = rng.standard_normal((t, b, o))
        y = rng.random((t, b, o))
        loss: Any = losses.MSELoss() if kind == "mse" else losses.BCEWithLogitsLoss()
    else:
        pred = rng.standard_normal((t, b, o))
        y = rng.integers(0, o, size=(t, b))
        y[rng.random((t, b)) < 0.3] = -7
        weight = np.array([0.5, 2.0, 1.25]) if kind == "ce_weighted" else None
        loss = losses.CrossEntropyLoss(ignore_index=-7, weight=weight)
    w, d = dist.loss_share(loss, pred, y, mask)
    ref = _denominator(loss, pred, y, mask)
    assert w == d
    assert abs(w - ref) <= 1e-12 * ref, f"{kind}: loss_share {w}, loss's own denominator {ref}"


def test_loss_share_of_sum_losses_and_custom_normalizer() -> None:
    pred = np.zeros((3, 2))
    assert dist.loss_share(losses.MSELoss(reduction="sum"), pred, pred, None) == (1.0, -1.0)

    class Custom:
        reduction = "mean"

        def normalizer(self, pred: np.ndarray, target: np.ndarray, mask: Any) -> float:
            return 42.0

    assert dist.loss_share(Custom(), pred, pred, None) == (42.0, 42.0)


def test_resolve_and_defaults_without_init() -> None:
    assert dist.resolve(False) is None
    if dist.current() is None:
        assert dist.resolve(None) is None
        assert (dist.rank(), dist.size(), dist.is_root()) == (0, 1, True)
    with pytest.raises(TypeError, match="distributed"):
        dist.resolve("yes")


# --------------------------------------------------------------------------------------------------
# 2 ranks under mpiexec
# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def equivalence_results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    if MPIEXEC is None:
        pytest.skip("mpiexec not found")
    proc = _launch("equivalence.py", "--tmp", str(tmp_path_factory.mktemp("mpi_ckpt")))
    assert proc.returncode == 0, (
        f"mpiexec failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    )
    out = {}
    for line in proc.stdout.splitlines():
        if line.startswith("{"):
            d = json.loads(line)
            out[d["case"]] = d
    return out


@needs_mpiexec
@pytest.mark.mpi
@pytest.mark.parametrize("case", ["full_bptt", "ce_tokens", "tbptt", "stateful", "resume"])
def test_two_ranks_match_one_rank(
    equivalence_results: dict[str, dict[str, Any]], case: str
) -> None:
    assert case in equivalence_results, f"no result for {case}: {sorted(equivalence_results)}"
    r = equivalence_results[case]
    assert r["size"] == 2
    assert r["weights_moved"] > 1e-3, f"{case}: training did not move the weights ({r})"
    assert r["steps_dist"] == r["steps_ref"], f"{case}: optimizer steps differ: {r}"
    assert r["weights_max_err"] <= TOL, (
        f"{case}: 2 ranks vs 1 rank weights differ by {r['weights_max_err']:.3e} at "
        f"{r['weights_max_err_at']}"
    )
    assert r["optimizer_state_max_err"] <= TOL, (
        f"{case}: optimizer state differs by {r['optimizer_state_max_err']:.3e}"
    )
    # identical reduced gradients -> identical steps on every rank, bit for bit
    assert r["ranks_max_divergence"] == 0.0, (
        f"{case}: ranks diverged by {r['ranks_max_divergence']}"
    )
    loss_err = max(abs(a - b) for a, b in zip(r["loss_dist"], r["loss_ref"]))
    assert loss_err <= TOL, f"{case}: epoch losses {r['loss_dist']} vs {r['loss_ref']}"
    if r["accuracy_ref"][0] is not None:
        assert r["accuracy_dist"] == r["accuracy_ref"], f"{case}: accuracy {r}"
    # one Allreduce per optimizer step
    assert r["comm_steps"] == sum(r["steps_dist"]), f"{case}: {r['comm_steps']} reductions"
    # checkpoints (resume case: latest + best per epoch) are written by rank 0 only
    assert r["saves_other_ranks"] == 0, f"{case}: ranks > 0 wrote {r['saves_other_ranks']} files"
    if case == "resume":
        assert r["saves_rank0"] > 0, f"{case}: rank 0 wrote no checkpoint"


@needs_mpiexec
@pytest.mark.mpi
@pytest.mark.parametrize("how", ["excepthook", "context"])
def test_failure_on_one_rank_brings_all_down(how: str) -> None:
    try:
        proc = _launch("fail_rank.py", how)
    except subprocess.TimeoutExpired as exc:  # pragma: no cover - the failure this test guards
        pytest.fail(
            f"a rank failure hung the job for {exc.timeout} s: {exc.stdout!r} {exc.stderr!r}"
        )
    text = proc.stdout + proc.stderr
    assert proc.returncode != 0, f"expected a non-zero exit, got 0:\n{text}"
    assert "injected failure on rank 1" in text, f"the error is not shown:\n{text}"
    assert "aborting all ranks" in text, text
    assert "finished (should not happen)" not in text, text


def _json_objects(text: str) -> list[dict]:
    """Every JSON object in ``text``: mpiexec merges the ranks' stdout, and two ranks' lines can
    arrive joined without a newline between them."""
    dec = json.JSONDecoder()
    out, i = [], text.find("{")
    while i != -1:
        obj, end = dec.raw_decode(text, i)
        out.append(obj)
        i = text.find("{", end)
    return out


@needs_mpiexec
@pytest.mark.mpi
def test_sigint_on_one_rank_stops_every_rank_at_the_same_step(tmp_path: Path) -> None:
    ckpt = tmp_path / "ckpt.npz"
    proc = _launch("sigint.py", str(ckpt))
    text = proc.stdout + proc.stderr
    assert proc.returncode == 130, (
        f"expected exit 130 (interrupted), got {proc.returncode}:\n{text}"
    )
    rows = _json_objects(proc.stdout)
    assert sorted(r["rank"] for r in rows) == [0, 1], text
    assert len({r["last_step"] for r in rows}) == 1, f"ranks stopped at different steps: {rows}"
    assert all(r["divergence"] == 0.0 for r in rows), rows
    assert ckpt.exists(), f"rank 0 wrote no final checkpoint:\n{text}"


@needs_mpiexec
@pytest.mark.mpi
def test_cli_train_distributed_matches_one_process(tmp_path: Path) -> None:
    common = ["train", "--task", "sine", "--epochs", "2", "--seed", "0", "--hidden", "8"]
    common += ["--seq-len", "10", "--n-train", "200", "--dtype", "float64", "--no-progress"]
    assert MPIEXEC is not None
    env = dict(os.environ, RNNFAST_NUM_THREADS="1", OMP_NUM_THREADS="1")
    one = subprocess.run(
        [sys.executable, "-m", "rnnfast", *common, "--json", str(tmp_path / "one.json")],
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        env=env,
    )
    assert one.returncode == 0, one.stdout + one.stderr
    cmd = [MPIEXEC, "-n", "2", "-launcher", "fork", "-host", "localhost", sys.executable, "-m"]
    cmd += ["rnnfast", *common, "--distributed", "--json", str(tmp_path / "two.json")]
    two = subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT_S, env=env)
    assert two.returncode == 0, two.stdout + two.stderr
    assert two.stdout.count("rnnfast: task sine") == 1, f"only rank 0 prints:\n{two.stdout}"
    h1 = json.loads((tmp_path / "one.json").read_text())["history"]
    h2 = json.loads((tmp_path / "two.json").read_text())["history"]
    for key in ("loss", "val_loss"):
        a, b = [e[key] for e in h1], [e[key] for e in h2]
        assert np.allclose(a, b, rtol=1e-10, atol=0), f"{key}: 1 process {a}, 2 ranks {b}"
