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
    with pytest.raises(ValueError, match="n: expected an int >= 1, got 0"):
        rnnfast.set_num_threads(0)
    with pytest.raises(TypeError, match="n: expected an int"):
        rnnfast.set_num_threads(1.5)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="n: expected an int"):
        rnnfast.set_num_threads(True)
