"""Typing stub of the compiled core (rnnfast._core_baseline / _core_avx2 / _core_avx512).

The same API is compiled once per SIMD variant; rnnfast._loader.core is the one in use. Arrays are
checked for exact dtype (float32 or float64, the dtype of ``x``), C order and shape; violations
raise TypeError / ValueError naming the argument. Use rnnfast.functional rather than calling these
directly.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

_F = npt.npt.NDArray[np.floating[Any]]

# ---- build and thread info (register_info.cpp) ----
variant: str
eigen_version: str
compiler: str
openmp: bool
simd_instruction_sets: str

def cpu_features() -> dict[str, bool]: ...
def get_num_threads() -> int: ...
def set_num_threads(n: int) -> None: ...
def read_bandwidth(nbytes: int, threads: int = 1, seconds: float = 0.05) -> float:
    """Read bandwidth in bytes/s of ``threads`` threads each re-reading its own ``nbytes`` buffer
    (the yardstick of the cache level a buffer of that size lives in)."""

def barrier_probe(threads: int = 2, rounds: int = 2000) -> dict[str, Any]:
    """Seconds per round of libgomp's barrier and of the time loop's StepBarrier in a running team:
    {"threads", "omp_barrier_s", "step_barrier_s"}."""

def max_threads() -> int: ...
def barrier_cost() -> float: ...
def free_cpus() -> int: ...
def _force_loop_threads(n: int) -> None:
    """Testing only: time loops run teams of n threads whatever the load (0: automatic)."""

def _force_product_threads(n: int) -> None:
    """Testing only: the large products (input projection, dx, dW_ih, dW_hh) run teams of n
    threads whatever their size and the load (0: automatic)."""

def memory_cached_bytes() -> int: ...
def memory_cache_limit() -> int: ...
def release_memory() -> None: ...

# ---- sequence kernels (register_kernels.cpp) ----
class SeqCacheFloat32:
    """Activations a float32 training forward keeps for its backward (opaque)."""
    @property
    def nbytes(self) -> int: ...
    @property
    def dtype(self) -> np.dtype[Any]: ...
    @property
    def cell(self) -> str: ...

class SeqCacheFloat64:
    """Activations a float64 training forward keeps for its backward (opaque)."""
    @property
    def nbytes(self) -> int: ...
    @property
    def dtype(self) -> np.dtype[Any]: ...
    @property
    def cell(self) -> str: ...

_Cache = SeqCacheFloat32 | SeqCacheFloat64

def cells() -> list[dict[str, Any]]:
    """The registered cells (cpp/include/rnnfast/cells/all.hpp): dicts with name, gates,
    has_cell_state and extra_params ((name, per_unit), ...): a per_unit*H vector each."""

def sequence_forward(
    cell: str,
    x: _F,
    h0: _F | None,
    c0: _F | None,
    w_ih: _F,
    w_hh: _F,
    b_ih: _F | None,
    b_hh: _F | None,
    extra: Sequence[_F] | None,
    lengths: npt.npt.NDArray[np.int64] | None,
    nonlinearity: str,
    training: bool,
) -> tuple[Any, ...]:
    """Forward of a registered cell: x (T, B, I), h0 / c0 (B, H) | None (c0 only for cells with a
    cell state), w_ih (G*H, I), w_hh (G*H, H), b_* (G*H,) | None, extra: the cell's own parameters
    in its order, lengths (B,) int64 | None -> (y (T, B, H), h_n (B, H), c_n (B, H), cache) for
    cells with a cell state, else (y, h_n, cache); cache is None when training is False."""

def sequence_backward(
    cell: str,
    cache: _Cache,
    x: _F,
    w_ih: _F,
    w_hh: _F,
    b_ih: _F | None,
    b_hh: _F | None,
    dy: _F | None,
    dh_n: _F | None,
    dc_n: _F | None,
    need_dx: bool = True,
    extra: Sequence[_F] | None = None,
) -> dict[str, _F | None]:
    """Full BPTT through a forward's cache (x and weights must be the forward's).

    Returns x (None when need_dx is False: its product is skipped), h0, (c0), w_ih, w_hh, b_ih,
    b_hh (None without bias), one entry per extra parameter of the cell, dh_all (T, B, H)."""

def tbptt_grads(
    cell: str,
    x: _F,
    h0: _F | None,
    c0: _F | None,
    w_ih: _F,
    w_hh: _F,
    b_ih: _F | None,
    b_hh: _F | None,
    dy: _F,
    k1: int,
    k2: int,
    nonlinearity: str,
    extra: Sequence[_F] | None = None,
) -> list[dict[str, Any]]:
    """Per-update TBPTT(k1, k2) gradients: dicts with w_ih, w_hh, b_ih, b_hh, state0."""

class _TBPTTStreamBase:
    def __init__(
        self,
        cell: str,
        nonlinearity: str,
        batch: int,
        input_size: int,
        hidden_size: int,
        k1: int,
        k2: int,
        has_bias: bool,
    ) -> None: ...
    @property
    def position(self) -> int: ...
    @property
    def window(self) -> tuple[int, int]:
        """(start, stop), global steps, half-open."""
    def set_params(
        self,
        w_ih: _F,
        w_hh: _F,
        b_ih: _F | None,
        b_hh: _F | None,
        extra: Sequence[_F] | None = None,
    ) -> None: ...
    def get_state(self) -> _F | tuple[_F, _F]: ...
    def set_state(self, h: _F | None, c: _F | None) -> None: ...
    def reset_rows(self, mask: npt.npt.NDArray[np.uint8]) -> None: ...
    def forward(self, x: _F) -> _F:
        """x (L, B, I), 1 <= L <= k1 -> y (L, B, H)."""
    def backward(self, dy: _F, want_dx: bool = True) -> dict[str, Any]:
        """dy (W, B, H) over the window -> w_ih, w_hh, b_ih, b_hh, x (W, B, I) | None,
        state0 | None."""

class TBPTTStreamFloat32(_TBPTTStreamBase): ...
class TBPTTStreamFloat64(_TBPTTStreamBase): ...

# ---- fused optimizer updates and gradient statistics (register_optim.cpp) ----
# Every array: C-contiguous, the dtype (float32 or float64) and shape of p (any shape: a flat
# buffer or one parameter); updated in place. Bitwise the NumPy formulas of rnnfast.optim.

def sgd_update(
    p: _F,
    g: _F,
    buf: _F | None,
    lr: float,
    momentum: float,
    one_minus_dampening: float,
    weight_decay: float,
    nesterov: bool,
    maximize: bool,
    first: bool,
) -> None:
    """SGD step; buf None: no momentum; first: the momentum buffer is set to the gradient."""

def adam_update(
    p: _F,
    g: _F,
    exp_avg: _F,
    exp_avg_sq: _F,
    max_exp_avg_sq: _F | None,
    one_minus_beta1: float,
    beta2: float,
    one_minus_beta2: float,
    neg_step_size: float,
    bias_correction2_sqrt: float,
    eps: float,
    wd_mode: int,
    wd_value: float,
    maximize: bool,
) -> None:
    """Adam/AdamW step; wd_mode 0 none, 1 L2 (wd_value = wd), 2 decoupled (wd_value = 1 - lr*wd)."""

def rmsprop_update(
    p: _F,
    g: _F,
    square_avg: _F,
    grad_avg: _F | None,
    momentum_buffer: _F | None,
    alpha: float,
    one_minus_alpha: float,
    eps: float,
    weight_decay: float,
    momentum: float,
    neg_lr: float,
    maximize: bool,
) -> None:
    """RMSprop step; grad_avg None: not centered; momentum_buffer None: no momentum."""

def grad_stats(g: _F) -> tuple[float, float]:
    """(sum of squares accumulated in float64 in a fixed order, max |g| or NaN) in one pass."""

def grad_scale(g: _F, coef: float) -> None:
    """g *= coef in place."""

def grad_clip(g: _F, value: float) -> None:
    """np.clip(g, -value, value, out=g) in place."""

def embedding_backward(dw: _F, ids: npt.npt.NDArray[np.int64], dy: _F) -> None:
    """np.add.at(dw, ids, dy) for dw (V, D), ids (N,) in [0, V), dy (N, D): same order and sums."""

# ---- one-step forward for streaming inference (register_step.cpp) ----
class _StepPlanBase:
    """A unidirectional stack's weights, checked once (held by the plan)."""
    @property
    def num_layers(self) -> int: ...
    def forward(self, x: _F, h0: _F | None, c0: _F | None) -> tuple[_F, _F, _F | None]:
        """x (B, I), h0 / c0 (L, B, H) or None (zeros) -> y (B, H), h_n (L, B, H), c_n (L, B, H)
        (LSTM; None otherwise). New arrays; GIL released; no allocation besides the outputs."""

class StepPlanFloat32(_StepPlanBase): ...
class StepPlanFloat64(_StepPlanBase): ...

def step_plan(
    cell: str,
    nonlinearity: str,
    dtype: str,
    input_size: int,
    hidden_size: int,
    layers: list[tuple[_F, _F, _F | None, _F | None]],
) -> StepPlanFloat32 | StepPlanFloat64:
    """Per layer (w_ih (G*H, I or H), w_hh (G*H, H), b_ih, b_hh (G*H,) | None), C-contiguous,
    dtype 'float32' or 'float64'."""

# ---- prepacked inference stacks (register_frozen.cpp; wrapped by rnnfast.nn.frozen) ----
class _FrozenStackBase:
    """A stack's weights copied and packed once in one precision (immutable; thread-safe calls)."""
    @property
    def nbytes(self) -> int: ...
    @property
    def precision(self) -> str: ...
    @property
    def num_layers(self) -> int: ...
    def forward(
        self, index: int, x: _F, h0: _F | None, c0: _F | None, lengths: npt.NDArray[np.int64] | None
    ) -> tuple[_F, _F, _F | None]:
        """Layer-direction ``index`` over x (T, B, I_l) -> y (T, B, H), h_n (B, H), c_n (B, H) or
        None; bitwise the sequence forward (inference) at the stack's precision."""
    def step(self, x: _F, h0: _F | None, c0: _F | None) -> tuple[_F, _F, _F | None]:
        """One step of the unidirectional stack: x (B, I), h0 / c0 (L, B, H) or None -> y (B, H),
        h_n (L, B, H), c_n (L, B, H) or None."""

class FrozenStackFloat32(_FrozenStackBase): ...
class FrozenStackFloat64(_FrozenStackBase): ...

def frozen_stack(
    cell: str,
    nonlinearity: str,
    dtype: str,
    precision: str,
    input_size: int,
    hidden_size: int,
    num_directions: int,
    layers: list[tuple[_F | None, ...]],
) -> FrozenStackFloat32 | FrozenStackFloat64:
    """Per layer and direction, layer-major: (w_ih, w_hh, b_ih | None, b_hh | None, *extra), copied.
    precision 'fp32' or 'bf16' (bf16: float32 only)."""

# ---- minGRU / minLSTM log-space scan kernels (register_scan.cpp; wrapped by rnnfast.minimal) ----
class _ScanCacheBase:
    """Activations a minGRU/minLSTM training forward keeps for its backward (opaque)."""
    @property
    def nbytes(self) -> int: ...
    @property
    def dtype(self) -> np.dtype[Any]: ...
    @property
    def cell(self) -> str: ...

class ScanCacheFloat32(_ScanCacheBase): ...
class ScanCacheFloat64(_ScanCacheBase): ...

def mingru_forward(
    x: _F, h0: _F | None, w_ih: _F, b_ih: _F | None, training: bool, chunk: int = 0
) -> tuple[_F, _F, ScanCacheFloat32 | ScanCacheFloat64 | None]:
    """x (T, B, I); h0 (B, H) >= 0 or None; w_ih (2H, I) = [W_z; W_h]; b_ih (2H,) or None;
    chunk 0 = automatic. Returns y (T, B, H), h_n (B, H), cache (None unless training)."""

def minlstm_forward(
    x: _F, h0: _F | None, w_ih: _F, b_ih: _F | None, training: bool, chunk: int = 0
) -> tuple[_F, _F, ScanCacheFloat32 | ScanCacheFloat64 | None]:
    """As mingru_forward with w_ih (3H, I) = [W_f; W_i; W_h], b_ih (3H,) or None."""

def minimal_backward(
    cell: str,
    cache: ScanCacheFloat32 | ScanCacheFloat64,
    x: _F,
    w_ih: _F,
    b_ih: _F | None,
    dy: _F | None,
    dh_n: _F | None,
    need_dx: bool = True,
    chunk: int = 0,
) -> dict[str, _F | None]:
    """cell 'mingru' or 'minlstm'; x and the weights must be the forward's. Returns "x" (or None
    when need_dx is False), "h0", "w_ih", "b_ih" (None without bias), "dh_all" (T, B, H)."""

def scan_chunk_length(T: int, B: int, H: int) -> int:
    """The chunk length the scan kernels use for chunk=0."""

# ---- LSTM with projection (register_proj.cpp; wrapped by rnnfast._proj) ----
class _ProjCacheBase:
    """Activations an lstm_proj training forward keeps for its backward (opaque)."""
    @property
    def nbytes(self) -> int: ...
    @property
    def dtype(self) -> np.dtype[Any]: ...
    @property
    def shape(self) -> tuple[int, int, int, int, int]:
        """(T, B, I, H, P)."""

class ProjCacheFloat32(_ProjCacheBase): ...
class ProjCacheFloat64(_ProjCacheBase): ...

def lstm_proj_forward(
    x: _F,
    h0: _F | None,
    c0: _F | None,
    w_ih: _F,
    w_hh: _F,
    b_ih: _F | None,
    b_hh: _F | None,
    w_hr: _F,
    lengths: np.ndarray | None,
    training: bool,
) -> tuple[_F, _F, _F, ProjCacheFloat32 | ProjCacheFloat64 | None]:
    """x (T, B, I); h0 (B, P), c0 (B, H) or None; w_ih (4H, I); w_hh (4H, P); biases (4H,) or
    None; w_hr (P, H); lengths int64 (B,) or None. Returns y (T, B, P), h_n (B, P), c_n (B, H),
    cache (None unless training)."""

def lstm_proj_backward(
    cache: ProjCacheFloat32 | ProjCacheFloat64,
    x: _F,
    w_ih: _F,
    w_hh: _F,
    b_ih: _F | None,
    b_hh: _F | None,
    w_hr: _F,
    dy: _F | None,
    dh_n: _F | None,
    dc_n: _F | None,
    need_dx: bool = True,
) -> dict[str, _F | None]:
    """x and the weights must be the forward's. Returns "x" (None unless need_dx), "h0" (B, P),
    "c0" (B, H), "w_ih", "w_hh", "b_ih", "b_hh" (None without bias), "w_hr" (P, H), "dh_all"
    (T, B, P)."""

# bf16 (register_bf16.cpp; issue 18)
def _bf16_bits(x: npt.NDArray[np.float32]) -> npt.NDArray[np.uint16]:
    """float32 -> bf16 bit patterns, round to nearest even (NaN kept NaN)."""

def _bf16_round(x: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """The float32 values of x's bf16 rounding."""

def _set_precision(precision: str) -> None:
    """This thread's precision of the sequence kernels' products: 'fp32' or 'bf16'."""

def _get_precision() -> str: ...
def bf16_info() -> dict[str, Any]:
    """cpu_avx512_bf16, cpu_amx_bf16 (cpuid), path ('portable'), native (False)."""
