"""The package surface: build_info, thread count, and the choice of SIMD variant."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

import rnnfast
from rnnfast import _loader


def _run(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    full_env = dict(os.environ)
    full_env.update(env)
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=full_env, timeout=120
    )


def test_build_info_fields() -> None:
    info = rnnfast.build_info()
    for key in (
        "variant",
        "variants_available",
        "variants_built",
        "eigen_version",
        "compiler",
        "num_threads",
    ):
        assert key in info, f"build_info() lacks {key!r}: {info}"
    assert info["variant"] in info["variants_available"]
    assert set(info["variants_available"]) <= set(info["variants_built"])
    assert info["eigen_version"].startswith("3.4"), info["eigen_version"]
    assert info["num_threads"] >= 1


def test_best_variant_is_chosen_by_default() -> None:
    available = _loader.available_variants()
    assert "baseline" in available
    proc = _run("import json, rnnfast; print(json.dumps(rnnfast.build_info()))", RNNFAST_SIMD="")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["variant"] == available[-1]


def test_cpu_features_decide_availability() -> None:
    # The loader must never offer a variant the CPU lacks the instructions for.
    feats = _loader.load_variant("baseline").cpu_features()
    avail = _loader.available_variants()
    if "avx512" in avail:
        assert feats["avx512f"] and feats["avx512bw"] and feats["avx512dq"] and feats["avx512vl"]
    if "avx2" in avail:
        assert feats["avx2"] and feats["fma"]


@pytest.mark.parametrize("variant", _loader.available_variants())
def test_env_override_selects_variant(variant: str) -> None:
    proc = _run("import rnnfast; print(rnnfast.build_info()['variant'])", RNNFAST_SIMD=variant)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == variant


def test_env_override_rejects_unknown_variant() -> None:
    proc = _run("import rnnfast", RNNFAST_SIMD="sse9")
    assert proc.returncode != 0
    assert "RNNFAST_SIMD" in proc.stderr and "sse9" in proc.stderr


def test_num_threads_env_default() -> None:
    proc = _run("import rnnfast; print(rnnfast.get_num_threads())", RNNFAST_NUM_THREADS="1")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "1"


def test_set_num_threads_roundtrip_and_errors() -> None:
    old = rnnfast.get_num_threads()
    try:
        rnnfast.set_num_threads(1)
        assert rnnfast.get_num_threads() == 1
        rnnfast.set_num_threads(2)
        assert rnnfast.get_num_threads() == 2
    finally:
        rnnfast.set_num_threads(old)
    with pytest.raises(ValueError, match=r"n: expected an int in 1\.\.\d+ .*, got 0"):
        rnnfast.set_num_threads(0)
    with pytest.raises(TypeError, match="n: expected an int"):
        rnnfast.set_num_threads(1.5)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="n: expected an int"):
        rnnfast.set_num_threads(True)


_MEMORY_SCRIPT = r"""
import json
import numpy as np
import rnnfast
from rnnfast import functional as F

rng = np.random.default_rng(0)
T, B, H = 50, 32, 64  # y: 50*32*64*4 = 400 KiB, above the pooled-block threshold (256 KiB)
x = rng.standard_normal((T, B, H)).astype(np.float32)
w = (rng.standard_normal((H, H)) * 0.1).astype(np.float32)
out = {"start": rnnfast.memory_info()}
y, h_n, _ = F.rnn_forward(x, None, w, w, None, None, training=False)
out["live"] = rnnfast.memory_info()
nbytes = int(y.nbytes)
del y
out["dropped"] = rnnfast.memory_info()
y2, _, _ = F.rnn_forward(x, None, w, w, None, None, training=False)
out["reused"] = rnnfast.memory_info()
del y2
rnnfast.release_memory()
out["released"] = rnnfast.memory_info()
out["nbytes"] = nbytes
print(json.dumps(out))
"""


@pytest.mark.parametrize("limit_mb", [None, "0"])
def test_memory_cache_keeps_reuses_and_releases(limit_mb: str | None) -> None:
    env = {} if limit_mb is None else {"RNNFAST_CACHE_MB": limit_mb}
    proc = _run(_MEMORY_SCRIPT, **env)
    assert proc.returncode == 0, proc.stderr
    r = json.loads(proc.stdout)
    if limit_mb == "0":
        assert r["start"]["limit"] == 0
        assert all(r[k]["cached_bytes"] == 0 for k in ("live", "dropped", "reused", "released"))
        return
    assert r["start"]["limit"] == 256 << 20
    assert r["live"]["cached_bytes"] == r["start"]["cached_bytes"]
    # dropping the result returns its block to the cache; the next call of that shape takes it back
    assert r["dropped"]["cached_bytes"] >= r["start"]["cached_bytes"] + r["nbytes"]
    assert r["reused"]["cached_bytes"] == r["start"]["cached_bytes"]
    assert r["released"]["cached_bytes"] == 0
