"""Builds the GoogleTest unit tests of the C++ kernels (cpp/tests) with CMake + Ninja and runs them
with ctest: once as a plain Release build and once with ``-DRNNFAST_SANITIZE=ON``
(AddressSanitizer + UndefinedBehaviorSanitizer, leak checking on).

Skipped only when GoogleTest is not installed (Debian: ``apt-get install libgtest-dev``), with that
reason; CI installs it, so there the tests run. The builds live in a per-checkout directory under
the system temp dir (``RNNFAST_CPP_TEST_BUILD_DIR`` overrides it), so a second run only rebuilds
what changed. Only the baseline SIMD variant and no Python extension are built, with at most 2 jobs.

The same commands by hand are in docs/RELIABILITY.md.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

import pytest

__all__: list[str] = []

ROOT = Path(__file__).resolve().parents[1]

# Where find_package(GTest) would look on Debian/Ubuntu and common prefixes.
_GTEST_CONFIGS = [
    "/usr/lib/x86_64-linux-gnu/cmake/GTest/GTestConfig.cmake",
    "/usr/lib/aarch64-linux-gnu/cmake/GTest/GTestConfig.cmake",
    "/usr/lib/cmake/GTest/GTestConfig.cmake",
    "/usr/lib64/cmake/GTest/GTestConfig.cmake",
    "/usr/local/lib/cmake/GTest/GTestConfig.cmake",
    "/usr/local/lib64/cmake/GTest/GTestConfig.cmake",
]


def _tool(name: str) -> str | None:
    """A build tool from PATH or from the venv of this interpreter (pip's cmake/ninja wheels)."""
    found = shutil.which(name)
    if found:
        return found
    cand = Path(sys.executable).parent / name
    return str(cand) if cand.exists() else None


def _gtest_installed() -> bool:
    if any(os.path.exists(p) for p in _GTEST_CONFIGS):
        return True
    return os.path.exists("/usr/include/gtest/gtest.h") and any(
        os.path.exists(os.path.join(d, "libgtest.a"))
        or os.path.exists(os.path.join(d, "libgtest.so"))
        for d in ("/usr/lib", "/usr/lib/x86_64-linux-gnu", "/usr/local/lib", "/usr/lib64")
    )


CMAKE = _tool("cmake")
CTEST = _tool("ctest")
NINJA = _tool("ninja")

pytestmark = [
    pytest.mark.skipif(
        not _gtest_installed(), reason="GoogleTest not installed (apt-get install libgtest-dev)"
    ),
]


def _build_root() -> Path:
    env = os.environ.get("RNNFAST_CPP_TEST_BUILD_DIR")
    if env:
        return Path(env)
    tag = hashlib.sha256(str(ROOT).encode()).hexdigest()[:12]
    return Path(tempfile.gettempdir()) / f"rnnfast-cpp-tests-{tag}"


def _run(
    cmd: list[str], timeout: float, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    if proc.returncode != 0:
        tail = (proc.stdout[-6000:] + "\n--- stderr ---\n" + proc.stderr[-4000:]).strip()
        pytest.fail(f"command failed with exit code {proc.returncode}: {' '.join(cmd)}\n{tail}")
    return proc


def _build_and_test(name: str, extra: list[str]) -> str:
    assert CMAKE and CTEST, "cmake/ctest are required to build the C++ tests (pip install cmake)"
    build = _build_root() / name
    site = sysconfig.get_paths()["purelib"]  # cmeel-eigen installs Eigen under <site>/cmeel.prefix
    configure = [
        CMAKE, "-S", str(ROOT), "-B", str(build),
        "-DRNNFAST_BUILD_TESTS=ON", "-DRNNFAST_BUILD_PYTHON=OFF", "-DRNNFAST_VARIANTS=baseline",
        f"-DCMAKE_PREFIX_PATH={site}", f"-DPython_EXECUTABLE={sys.executable}", *extra,
    ]  # fmt: skip
    if NINJA and not (build / "CMakeCache.txt").exists():
        configure += ["-G", "Ninja", f"-DCMAKE_MAKE_PROGRAM={NINJA}"]
    _run(configure, timeout=300)
    _run([CMAKE, "--build", str(build), "-j2"], timeout=900)
    env = dict(os.environ)
    # Leak checking on; any sanitizer report fails the test binary (exit code != 0).
    env["ASAN_OPTIONS"] = "detect_leaks=1:abort_on_error=0:halt_on_error=1"
    env["UBSAN_OPTIONS"] = "print_stacktrace=1:halt_on_error=1"
    proc = _run(
        [CTEST, "--test-dir", str(build), "--output-on-failure", "--timeout", "300"],
        timeout=900,
        env=env,
    )
    return proc.stdout


def _assert_clean(out: str) -> None:
    assert "100% tests passed" in out, out[-3000:]
    for marker in ("runtime error:", "AddressSanitizer", "LeakSanitizer"):
        assert marker not in out, f"sanitizer report in the ctest output:\n{out[-3000:]}"
    n = int(out.split("tests passed out of ")[1].split()[0])
    assert n >= 50, f"expected the full GoogleTest suite (>= 50 tests), ctest ran {n}"


def test_cpp_unit_tests_release() -> None:
    out = _build_and_test("release", ["-DCMAKE_BUILD_TYPE=Release", "-DRNNFAST_SANITIZE=OFF"])
    _assert_clean(out)
    # test_cells_generic.cpp is a typed suite over the C++ RegisteredCells (ctest names its cases
    # by C++ type): every cell of the registry (test_cell_registry.py checks that the Python one
    # agrees with it) has its generic cases, named by cell in the binary's own listing.
    from rnnfast._cells import CELLS

    exe = _build_root() / "release" / "cpp" / "tests" / "rnnfast_kernel_tests"
    listing = _run([str(exe), "--gtest_filter=CellsGeneric*", "--gtest_list_tests"], 60).stdout
    for cell in CELLS:
        assert f"CellsGeneric/{cell.name}." in listing, f"{cell.name}: no generic C++ tests"


def test_cpp_unit_tests_address_undefined_sanitizers() -> None:
    # -O1 keeps the sanitizer build quick and the reports readable.
    out = _build_and_test(
        "sanitize",
        ["-DCMAKE_BUILD_TYPE=Debug", "-DCMAKE_CXX_FLAGS_DEBUG=-O1 -g1", "-DRNNFAST_SANITIZE=ON"],
    )
    _assert_clean(out)
    exe = _build_root() / "sanitize" / "cpp" / "tests" / "rnnfast_kernel_tests"
    assert b"__asan_init" in exe.read_bytes(), f"{exe} is not instrumented by AddressSanitizer"
