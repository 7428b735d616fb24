"""NumPy's BLAS pool inside rnnfast's own loops.

The Python layer (heads, embeddings, losses, optimizers) calls NumPy, whose BLAS (OpenBLAS in the
NumPy wheels) runs its own thread pool. Its threads busy-wait after each call, on the same cores as
the kernels' OpenMP team: measured on 2 cores, `fit` ran 2.5-9x slower with both pools than with
one thread. Inside :func:`rnnfast.fit`, :func:`rnnfast.evaluate`, the CLI and the diagnostics the
BLAS pool is therefore limited to one thread (with threadpoolctl) and restored afterwards; the small
products of the Python layer lose nothing by it, and the kernels keep the cores.

If threadpoolctl is missing or fails, the loops run unchanged (``blas_limit_active()`` says which).
"""

from __future__ import annotations

import functools
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

__all__ = ["blas_limit_active", "single_thread_blas", "with_single_thread_blas"]

F = TypeVar("F", bound=Callable[..., Any])

_lock = threading.Lock()
_depth = 0  # nesting depth of single_thread_blas over all threads
_limiter: Any = None  # while _depth > 0: a callable that restores the original limits
_controller: Any = None  # threadpoolctl.ThreadpoolController, or False when unavailable
_controller_modules = -1  # len(sys.modules) when _controller was built


def _get_controller() -> Any:
    """threadpoolctl's view of the loaded BLAS libraries, rebuilt (~1 ms) when modules were imported
    since the last one: a library loaded later (SciPy brings its own OpenBLAS) is limited too."""
    global _controller, _controller_modules
    if _controller is False or (
        _controller is not None and len(sys.modules) == _controller_modules
    ):
        return _controller
    try:
        from threadpoolctl import ThreadpoolController

        _controller = ThreadpoolController()
        _controller_modules = len(sys.modules)
    except Exception:  # noqa: BLE001 - missing or broken: run without the limit
        _controller = False
    return _controller


def blas_limit_active() -> bool:
    """True while a :func:`single_thread_blas` block holds NumPy's BLAS at one thread."""
    return _limiter is not None


@contextmanager
def single_thread_blas() -> Iterator[None]:
    """Hold NumPy's BLAS pool at one thread for the block, then restore it (reentrant, thread-safe).

    Nested and concurrent blocks share one limit, set by the first to enter and restored by the last
    to leave. The limit is process-wide (BLAS pools are): NumPy calls in other threads during the
    block run single-threaded too.
    """
    global _depth, _limiter
    with _lock:
        _depth += 1
        if _depth == 1:
            ctl = _get_controller()
            if ctl:
                try:
                    _limiter = _limit_to_one(ctl)
                except Exception:  # noqa: BLE001 - a BLAS threadpoolctl cannot drive: no limit
                    _limiter = None
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0 and _limiter is not None:
                try:
                    _limiter()
                finally:
                    _limiter = None


def _limit_to_one(ctl: Any) -> Callable[[], None]:
    """Set every BLAS library of ``ctl`` to one thread; returns the restore. Through the library
    controllers themselves (~7 us for set and restore, ~11 us for the whole block: cheap enough for
    the inference calls to hold the limit on every call), else threadpoolctl's own limiter."""
    libs = [
        c
        for c in getattr(ctl, "lib_controllers", None) or ()
        if getattr(c, "user_api", "") == "blas"
    ]
    if not libs or not all(
        hasattr(type(c), "set_num_threads") and hasattr(type(c), "num_threads") for c in libs
    ):
        limiter = ctl.select(user_api="blas").limit(limits=1)
        return limiter.restore_original_limits  # type: ignore[no-any-return]
    saved = [(c, c.num_threads) for c in libs]
    for c, n in saved:
        if n != 1:
            c.set_num_threads(1)

    def restore() -> None:
        for c, n in saved:
            if n != 1:
                c.set_num_threads(n)

    return restore


def with_single_thread_blas(fn: F) -> F:
    """Decorator: run ``fn`` inside :func:`single_thread_blas`."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with single_thread_blas():
            return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]
