"""The feed-forward layers: :class:`Linear` and :class:`Embedding` (``torch.nn.Linear`` /
``torch.nn.Embedding``)."""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from typing import Any

import numpy as np

from ._util import Array, _as_float, _check_allocatable, _check_dtype, _check_int
from .module import (
    _NO_CACHE_MSG,
    _PUBLIC_MODULE,
    _FlatParams,
    _getstate,
    _Guard,
    _private,
    _setstate,
)

__all__ = ["Linear", "Embedding"]


class Linear(_FlatParams):
    """``y = x W^T + b`` over the last axis (any leading dims), like ``torch.nn.Linear``.

    weight (out_features, in_features), bias (out_features,); init U(-1/sqrt(in), 1/sqrt(in)) (PyTorch's
    default). ``backward(dy) -> dx`` accumulates into :attr:`grads` ("weight", "bias").
    """

    __module__ = _PUBLIC_MODULE
    _pending = ("_x",)

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        dtype: Any = np.float32,
        seed: int | None = None,
    ) -> None:
        self.in_features = _check_int("in_features", in_features, 1)
        self.out_features = _check_int("out_features", out_features, 1)
        if not isinstance(bias, (bool, np.bool_)):
            raise TypeError(f"bias: expected a bool, got {type(bias).__name__}")
        self.bias = bool(bias)
        self.dtype = _check_dtype(dtype)
        if seed is not None:
            seed = _check_int("seed", seed, 0)
        self.seed = seed
        _check_allocatable(
            "in_features, out_features",
            f"Linear({self.in_features}, {self.out_features})",
            self.out_features * (self.in_features + self.bias),
            self.dtype,
        )
        rng = np.random.default_rng(seed)
        k = 1.0 / math.sqrt(self.in_features)
        self._params: dict[str, Array] = OrderedDict()
        self._params["weight"] = rng.uniform(-k, k, (self.out_features, self.in_features)).astype(
            self.dtype
        )
        if self.bias:
            self._params["bias"] = rng.uniform(-k, k, self.out_features).astype(self.dtype)
        self.grads: dict[str, Array] = OrderedDict()
        self._flatten()
        self.training = True
        self._x: Array | None = None
        self._guard = _Guard()

    def config(self) -> dict[str, Any]:
        """JSON-able constructor arguments."""
        return {
            "type": "Linear",
            "in_features": self.in_features,
            "out_features": self.out_features,
            "bias": self.bias,
            "dtype": self.dtype.name,
            "seed": self.seed,
        }

    def __call__(self, x: Any) -> Array:
        return self.forward(x)

    def forward(self, x: Any) -> Array:
        """x (..., in_features) -> (..., out_features)."""
        return self._forward(x, private=False)

    def _forward(self, x: Any, private: bool) -> Array:
        """forward; ``private``: the caller guarantees that nobody else holds ``x`` (no copy)."""
        xa = _as_float("x", x, self.dtype)
        if xa.ndim < 1 or xa.shape[-1] != self.in_features:
            raise ValueError(f"x: expected shape (..., {self.in_features}), got {xa.shape}")
        if self.training:  # backward reads x (dW): keep it safe from in-place changes
            keep = xa if private else _private(xa, x)
            g = self._guard
            g.enter(self, "forward")
            try:
                g.check_forward(self, "forward", self._x is not None)
                self._x = keep
                g.owner = threading.current_thread()
            finally:
                g.exit()
        # One 2-D GEMM over all leading axes: NumPy runs a 3-D matmul as one small GEMM per
        # leading index (measured 1.3x slower with one BLAS thread, ~5x with several).
        lead = xa.shape[:-1]
        y = (xa.reshape(-1, self.in_features) @ self._params["weight"].T).reshape(
            *lead, self.out_features
        )
        if self.bias:
            y += self._params["bias"]
        return y

    def backward(self, grad_output: Any) -> Array:
        """dL/dy (..., out_features) -> dL/dx (..., in_features); accumulates weight/bias grads."""
        g = self._guard
        g.enter(self, "backward")
        try:
            g.check_backward(self, "backward", self._x is not None)
            return self._backward(grad_output)
        finally:
            g.exit()

    def _backward(self, grad_output: Any) -> Array:
        x = self._x
        if x is None:
            raise ValueError(_NO_CACHE_MSG)
        dy = _as_float("grad_output", grad_output, self.dtype)
        if dy.shape != x.shape[:-1] + (self.out_features,):
            raise ValueError(
                f"grad_output: expected shape {x.shape[:-1] + (self.out_features,)}, got {dy.shape}"
            )
        self._x = None
        dy2 = dy.reshape(-1, self.out_features)
        x2 = x.reshape(-1, self.in_features)
        self.grads["weight"] += dy2.T @ x2  # dL/dW = sum over rows dy^T x
        if self.bias:
            self.grads["bias"] += dy2.sum(axis=0)  # dL/db = sum over rows dy
        return (dy2 @ self._params["weight"]).reshape(x.shape)  # dL/dx = dy W

    def __repr__(self) -> str:
        return f"Linear(in_features={self.in_features}, out_features={self.out_features}, bias={self.bias})"

    def __getstate__(self) -> dict[str, Any]:
        """``copy.deepcopy`` / ``pickle`` state (not the input kept for a pending backward)."""
        return _getstate(self, Linear, ("_x",))

    def __setstate__(self, d: dict[str, Any]) -> None:
        _setstate(self, Linear, d)


class Embedding(_FlatParams):
    """Lookup table ``weight[ids]`` (``torch.nn.Embedding``): weight (num_embeddings, embedding_dim), N(0, 1) init.

    ``forward(ids)``: integer array of any shape -> (*ids.shape, embedding_dim). ``backward(dy)``
    scatters dy into grads["weight"] (returns None: integer inputs have no gradient).
    """

    __module__ = _PUBLIC_MODULE
    _pending = ("_ids",)

    def __init__(
        self,
        num_embeddings: int,
        embedding_dim: int,
        dtype: Any = np.float32,
        seed: int | None = None,
    ) -> None:
        self.num_embeddings = _check_int("num_embeddings", num_embeddings, 1)
        self.embedding_dim = _check_int("embedding_dim", embedding_dim, 1)
        self.dtype = _check_dtype(dtype)
        if seed is not None:
            seed = _check_int("seed", seed, 0)
        self.seed = seed
        _check_allocatable(
            "num_embeddings, embedding_dim",
            f"Embedding({self.num_embeddings}, {self.embedding_dim})",
            self.num_embeddings * self.embedding_dim,
            self.dtype,
        )
        rng = np.random.default_rng(seed)
        self._params: dict[str, Array] = OrderedDict(
            weight=rng.standard_normal((self.num_embeddings, self.embedding_dim)).astype(self.dtype)
        )
        self.grads: dict[str, Array] = OrderedDict()
        self._flatten()
        self.training = True
        self._ids: Array | None = None
        self._guard = _Guard()

    def config(self) -> dict[str, Any]:
        """JSON-able constructor arguments."""
        return {
            "type": "Embedding",
            "num_embeddings": self.num_embeddings,
            "embedding_dim": self.embedding_dim,
            "dtype": self.dtype.name,
            "seed": self.seed,
        }

    def _check_ids(self, ids: Any) -> Array:
        arr = np.asarray(ids)
        if arr.dtype.kind not in "iu":
            raise TypeError(f"ids: expected an integer array of token ids, got dtype {arr.dtype}")
        if arr.size and (arr.min() < 0 or arr.max() >= self.num_embeddings):
            raise ValueError(
                f"ids: expected values in [0, {self.num_embeddings}), got min {arr.min()}, "
                f"max {arr.max()}"
            )
        return arr.astype(np.int64)

    def __call__(self, ids: Any) -> Array:
        return self.forward(ids)

    def forward(self, ids: Any) -> Array:
        """ids (...) int -> (..., embedding_dim)."""
        arr = self._check_ids(ids)  # a copy: in-place changes of ids cannot reach backward
        if self.training:
            g = self._guard
            g.enter(self, "forward")
            try:
                g.check_forward(self, "forward", self._ids is not None)
                self._ids = arr
                g.owner = threading.current_thread()
            finally:
                g.exit()
        return self._params["weight"][arr]

    def backward(self, grad_output: Any) -> None:
        """Scatter-add dL/d(output) into grads["weight"]."""
        g = self._guard
        g.enter(self, "backward")
        try:
            g.check_backward(self, "backward", self._ids is not None)
            ids = self._ids
            if ids is None:
                raise ValueError(_NO_CACHE_MSG)
            self._ids = None
            self.backward_ids(ids, grad_output)
        finally:
            g.exit()

    def backward_ids(self, ids: Array, grad_output: Any) -> None:
        """Scatter-add ``grad_output`` (*ids.shape, dim) at rows ``ids`` (used by streaming)."""
        dy = _as_float("grad_output", grad_output, self.dtype)
        if dy.shape != ids.shape + (self.embedding_dim,):
            raise ValueError(
                f"grad_output: expected shape {ids.shape + (self.embedding_dim,)}, got {dy.shape}"
            )
        from .._loader import core

        # np.add.at(grads["weight"], ids, dy) in one compiled pass (same order, same sums)
        core.embedding_backward(
            self.grads["weight"],
            np.ascontiguousarray(ids.reshape(-1), dtype=np.int64),
            np.ascontiguousarray(dy.reshape(-1, self.embedding_dim)),
        )

    def __repr__(self) -> str:
        return f"Embedding({self.num_embeddings}, {self.embedding_dim})"

    def __getstate__(self) -> dict[str, Any]:
        """``copy.deepcopy`` / ``pickle`` state (not the ids kept for a pending backward)."""
        return _getstate(self, Embedding, ("_ids",))

    def __setstate__(self, d: dict[str, Any]) -> None:
        _setstate(self, Embedding, d)
