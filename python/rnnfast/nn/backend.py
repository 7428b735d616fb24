"""The functional backend every layer runs on: :mod:`rnnfast.functional` (the compiled core), or
for tests :mod:`rnnfast.reference` (:func:`set_backend`)."""

from __future__ import annotations

from typing import Any

__all__ = ["set_backend", "get_backend"]


_backend: Any = None
_functional: Any = None  # rnnfast.functional, once imported


def set_backend(module: Any = None) -> None:
    """Select the functional backend used by every module (``None`` = :mod:`rnnfast.functional`).

    Meant for tests: ``set_backend(rnnfast.reference)`` runs the same modules on the NumPy oracle.
    The module must provide the functional API (``rnn_forward`` ... ``gru_backward``).
    """
    global _backend
    if module is not None:
        for name in (
            "rnn_forward",
            "rnn_backward",
            "lstm_forward",
            "lstm_backward",
            "gru_forward",
            "gru_backward",
        ):
            if not callable(getattr(module, name, None)):
                raise TypeError(f"module: expected the functional API, {name!r} is missing")
    _backend = module


def get_backend() -> Any:
    """The functional backend in use (:mod:`rnnfast.functional` unless :func:`set_backend` changed it)."""
    global _functional
    if _backend is not None:
        return _backend
    if _functional is None:
        from .. import (
            functional,  # the compiled core; imported lazily so this module imports without it
        )

        _functional = functional
    return _functional
