"""SIGINT (Ctrl-C) during :func:`rnnfast.fit`: the first one stops training at the next
optimizer-step boundary (with a final checkpoint) and raises :class:`TrainingInterrupted`; a second one interrupts
at once."""

from __future__ import annotations

import signal
import threading
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .callbacks import History

__all__ = ["TrainingInterrupted"]


class TrainingInterrupted(KeyboardInterrupt):
    """SIGINT stopped ``fit`` at a step boundary. ``history`` holds the completed epochs;
    ``checkpoint`` is the path of the final checkpoint (None if none was asked for)."""

    def __init__(self, history: History, checkpoint: str | None) -> None:
        super().__init__(
            "training interrupted" + (f"; checkpoint written to {checkpoint}" if checkpoint else "")
        )
        self.history = history
        self.checkpoint = checkpoint


class _Stop(Exception):
    """Internal: SIGINT seen at a step boundary."""


class _SigintFlag:
    """Records a SIGINT while installed (main thread only: signal handlers live there).

    ``flag``: a SIGINT arrived on this process. ``synced``: distributed, the ranks agreed to stop
    (set by the trainer after each step's Allreduce)."""

    def __init__(self) -> None:
        self.flag = False
        self.synced = False
        self._installed = False
        self._old: Any = None

    def _on_sigint(self, signum: int, frame: Any) -> None:
        if self.flag:  # second Ctrl-C: stop now
            raise KeyboardInterrupt
        self.flag = True

    def install(self) -> None:
        """Replace the SIGINT handler (from the main thread; elsewhere a no-op)."""
        if threading.current_thread() is threading.main_thread():
            self._old = signal.signal(signal.SIGINT, self._on_sigint)
            self._installed = True

    def restore(self) -> None:
        """Put back the handler that :meth:`install` replaced."""
        if self._installed:
            signal.signal(signal.SIGINT, self._old)
            self._installed = False
