"""Weights in and out: PyTorch modules and Keras weight arrays <-> rnnfast.

PyTorch (optional dependency, imported only inside the functions that need it):

- :func:`from_torch` turns a ``torch.nn.RNN`` / ``LSTM`` / ``GRU`` (any ``num_layers``,
  ``bidirectional``, ``batch_first``, ``nonlinearity``, ``bias``; float32 or float64) or a
  ``torch.nn.Linear`` into the equivalent rnnfast module holding the same weights;
- :func:`to_torch` is the inverse; ``to_torch(from_torch(m))`` reproduces ``m``'s weights exactly;
- :func:`state_dict_to_numpy` converts a torch ``state_dict`` (or any mapping of tensors / arrays)
  to NumPy arrays, without copying CPU tensors (the arrays share memory with the tensors).

rnnfast uses PyTorch's layout and names (``weight_ih_l{k}[_reverse]`` of shape (G*H, I), gate order
i, f, g, o for LSTM and r, z, n for GRU), so no reordering is needed between the two.

Keras (no TensorFlow needed; works on the raw arrays of ``layer.get_weights()``):

- :func:`from_keras_weights` converts the ``kernel`` (I, G*H), ``recurrent_kernel`` (H, G*H) and
  ``bias`` of a Keras ``SimpleRNN`` / ``LSTM`` / ``GRU`` layer to PyTorch's layout (a dict with
  ``weight_ih_l0``, ``weight_hh_l0``, ``bias_ih_l0``, ``bias_hh_l0``);
- :func:`to_keras_weights` is the inverse.

Keras conventions handled here: the kernels are transposed relative to PyTorch (inputs on rows);
Keras LSTM gate order i, f, c, o is PyTorch's i, f, g, o; Keras GRU gate order z, r, h becomes
PyTorch's r, z, n; Keras SimpleRNN and LSTM have a single bias (PyTorch's ``b_ih + b_hh``, so the
converted ``bias_hh`` is zero); a Keras GRU with ``reset_after=True`` (the Keras 2/3 default) has a
bias of shape (2, 3H): row 0 is the input bias (``b_ih``), row 1 the recurrent bias (``b_hh``), and
computes exactly PyTorch's GRU. A GRU with ``reset_after=False`` applies the reset gate before the
recurrent matrix product, a different function (PyTorch has no such module): its weights convert to
rnnfast's :class:`~rnnfast.modules.ResetBeforeGRU` (``from_keras_weights(..., reset_after=False)``,
one bias of shape (3H,) that becomes ``bias_ih``, ``bias_hh`` zero). Keras activations must be the defaults (``tanh`` and ``sigmoid`` recurrent activation;
for SimpleRNN ``tanh`` or ``relu``, chosen with rnnfast's ``nonlinearity``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from ._cells import CELL_NAMES, CELLS

__all__ = [
    "TORCH_REQUIREMENT",
    "from_keras_weights",
    "from_torch",
    "state_dict_to_numpy",
    "to_keras_weights",
    "to_torch",
]

#: The pip requirement named in the ImportError when torch is missing.
TORCH_REQUIREMENT = "torch==2.13.0"

# kind (a Keras class name or an rnnfast cell name, lower case) -> cell name, and gates per cell
_KERAS_CELLS = [c for c in CELLS if c.keras_name is not None]  # cells Keras has a layer for
_KINDS = {
    **{c.keras_name.lower(): c.name for c in _KERAS_CELLS},
    **{c.name: c.name for c in _KERAS_CELLS},
}
_GATES = {c.name: c.gates for c in CELLS}  # gate count per cell, from the registry


# --------------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------------


def _import_torch() -> Any:
    """Import torch, or raise an ImportError saying how to install it."""
    try:
        import torch
    except ImportError as exc:  # pragma: no cover - exercised only without torch
        raise ImportError(
            "rnnfast's PyTorch interop needs PyTorch, an optional dependency: "
            f"pip install {TORCH_REQUIREMENT}  (or pip install 'rnnfast[torch]')"
        ) from exc
    return torch


def _to_numpy(name: str, value: Any) -> np.ndarray:
    """A NumPy view of ``value`` (ndarray, torch tensor, array-like), without a copy where possible.

    torch tensors are detached and moved to the CPU first (``.detach()`` never copies; ``.cpu()``
    copies only tensors that live on another device).
    """
    if isinstance(value, np.ndarray):
        return value
    if hasattr(value, "detach") and hasattr(value, "cpu") and hasattr(value, "numpy"):
        return value.detach().cpu().numpy()  # shares memory with a CPU tensor
    try:
        return np.asarray(value)
    except Exception as exc:
        raise TypeError(
            f"{name}: expected an array or a tensor, got {type(value).__name__}"
        ) from exc


def _kind(kind: Any) -> str:
    if not isinstance(kind, str) or kind.lower() not in _KINDS:
        raise ValueError(
            "kind: expected one of 'SimpleRNN', 'LSTM', 'GRU' (or 'rnn', 'lstm', 'gru'), "
            f"got {kind!r}"
        )
    return _KINDS[kind.lower()]


def _float_array(name: str, value: Any, ndim: int) -> np.ndarray:
    arr = _to_numpy(name, value)
    if arr.dtype.kind != "f":
        raise TypeError(f"{name}: expected a floating-point array, got dtype {arr.dtype}")
    if arr.ndim != ndim:
        raise ValueError(f"{name}: expected a {ndim}-D array, got shape {arr.shape}")
    return arr


def _result_dtype(dtype: Any, *arrays: np.ndarray | None) -> np.dtype:
    """The dtype of the converted arrays: ``dtype`` if given, else that of the inputs.

    float32 and float64 are kept; other floating types (e.g. float16) become float32.
    """
    if dtype is not None:
        dt = np.dtype(dtype)
        if dt not in (np.dtype(np.float32), np.dtype(np.float64)):
            raise TypeError(f"dtype: expected float32 or float64, got {dt}")
        return dt
    dt = np.result_type(*[a.dtype for a in arrays if a is not None])
    return dt if dt in (np.dtype(np.float32), np.dtype(np.float64)) else np.dtype(np.float32)


def _suffix(layer: int, reverse: bool) -> str:
    if isinstance(layer, bool) or not isinstance(layer, (int, np.integer)) or layer < 0:
        raise ValueError(f"layer: expected an int >= 0, got {layer!r}")
    return f"_l{int(layer)}" + ("_reverse" if reverse else "")


def _keras_to_torch_gates(kind: str, hidden: int) -> np.ndarray:
    """Column permutation p: torch layout = keras[..., p] (identity but for GRU z,r,h -> r,z,n)."""
    idx = np.arange(_GATES[kind] * hidden)
    perm = CELL_NAMES[kind].keras_perm
    if perm == sorted(perm):
        return idx
    return np.concatenate([idx[b * hidden : (b + 1) * hidden] for b in perm])


# --------------------------------------------------------------------------------------------------
# Keras
# --------------------------------------------------------------------------------------------------


def from_keras_weights(
    kind: str,
    kernel: Any,
    recurrent_kernel: Any,
    bias: Any = None,
    *,
    reset_after: bool = True,
    layer: int = 0,
    reverse: bool = False,
    dtype: Any = None,
) -> dict[str, np.ndarray]:
    """Convert the weights of one Keras recurrent layer to PyTorch's (and rnnfast's) layout.

    Args:
        kind: ``"SimpleRNN"``, ``"LSTM"`` or ``"GRU"`` (case-insensitive; ``"rnn"`` also accepted).
        kernel: (I, G*H) Keras input kernel; G = 1, 4 (gates i, f, c, o), 3 (gates z, r, h).
        recurrent_kernel: (H, G*H).
        bias: SimpleRNN / LSTM (G*H,); GRU with ``reset_after=True`` (2, 3H) (row 0 input bias, row
            1 recurrent bias); GRU with ``reset_after=False`` (3H,); None for a layer built with
            ``use_bias=False``.
        reset_after: GRU only: True (the Keras default) converts to :class:`GRU` (PyTorch's GRU);
            False (reset gate before the recurrent product) to :class:`ResetBeforeGRU`.
        layer, reverse: name the result for layer ``layer`` (and the reverse direction of a
            bidirectional stack, e.g. the ``backward_layer`` of ``keras.layers.Bidirectional``).
        dtype: float32 or float64 for the result; default: the inputs' dtype.

    Returns:
        ``{"weight_ih_l0": (G*H, I), "weight_hh_l0": (G*H, H), "bias_ih_l0": (G*H,),
        "bias_hh_l0": (G*H,)}`` (new C-contiguous arrays; bias keys only when ``bias`` is given).
        For SimpleRNN and LSTM the Keras bias becomes ``bias_ih`` and ``bias_hh`` is zeros.
    """
    k = _kind(kind)
    g = _GATES[k]
    if not isinstance(reset_after, (bool, np.bool_)):
        raise TypeError(f"reset_after: expected a bool, got {type(reset_after).__name__}")
    two_biases = k == "gru" and bool(reset_after)  # (2, 3H): input and recurrent bias rows
    kern = _float_array("kernel", kernel, 2)
    rec = _float_array("recurrent_kernel", recurrent_kernel, 2)
    if kern.shape[1] % g != 0 or kern.shape[1] == 0:
        raise ValueError(f"kernel: expected shape (I, {g}*H) for {kind}, got {kern.shape}")
    hidden = kern.shape[1] // g
    n_in = kern.shape[0]
    if rec.shape != (hidden, g * hidden):
        raise ValueError(
            f"recurrent_kernel: expected shape {(hidden, g * hidden)}, got {rec.shape}"
        )
    b = None
    if bias is not None:
        expected_ndim = 2 if two_biases else 1
        b = _float_array("bias", bias, expected_ndim)
        expected = (2, 3 * hidden) if two_biases else (g * hidden,)
        if b.shape != expected:
            raise ValueError(f"bias: expected shape {expected}, got {b.shape}")
    dt = _result_dtype(dtype, kern, rec, b)
    perm = _keras_to_torch_gates(k, hidden)
    sfx = _suffix(layer, reverse)
    out = {
        f"weight_ih{sfx}": np.ascontiguousarray(kern[:, perm].T, dtype=dt),
        f"weight_hh{sfx}": np.ascontiguousarray(rec[:, perm].T, dtype=dt),
    }
    assert out[f"weight_ih{sfx}"].shape == (g * hidden, n_in)
    if b is not None:
        if two_biases:
            out[f"bias_ih{sfx}"] = np.ascontiguousarray(b[0, perm], dtype=dt)
            out[f"bias_hh{sfx}"] = np.ascontiguousarray(b[1, perm], dtype=dt)
        else:
            out[f"bias_ih{sfx}"] = np.ascontiguousarray(b[perm], dtype=dt)
            out[f"bias_hh{sfx}"] = np.zeros(g * hidden, dtype=dt)
    return out


def to_keras_weights(
    kind: str,
    weights: Mapping[str, Any],
    *,
    layer: int = 0,
    reverse: bool = False,
    dtype: Any = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Convert PyTorch-layout weights of one layer (and direction) to a Keras layer's arrays.

    Args:
        kind: ``"SimpleRNN"``, ``"LSTM"`` or ``"GRU"``.
        weights: a mapping with ``weight_ih_l{layer}[_reverse]``, ``weight_hh_...`` and optionally
            ``bias_ih_...``, ``bias_hh_...``: an rnnfast ``state_dict()``, a torch ``state_dict()``
            or the result of :func:`from_keras_weights`. Extra keys are ignored.
        layer, reverse: which layer / direction to take.
        dtype: float32 or float64 for the result; default: the weights' dtype.

    Returns:
        ``(kernel (I, G*H), recurrent_kernel (H, G*H), bias)`` for ``layer.set_weights([...])``;
        bias is (G*H,) = ``b_ih + b_hh`` for SimpleRNN / LSTM, (2, 3H) for GRU (reset_after=True),
        and None when the weights have no bias (build the Keras layer with ``use_bias=False``).
    """
    k = _kind(kind)
    g = _GATES[k]
    if not isinstance(weights, Mapping):
        raise TypeError(f"weights: expected a mapping (a state_dict), got {type(weights).__name__}")
    sfx = _suffix(layer, reverse)
    names = [f"weight_ih{sfx}", f"weight_hh{sfx}"]
    for n in names:
        if n not in weights:
            raise ValueError(f"weights: missing key {n!r} (has {sorted(weights)})")
    w_ih = _float_array(names[0], weights[names[0]], 2)
    w_hh = _float_array(names[1], weights[names[1]], 2)
    if w_ih.shape[0] % g != 0 or w_ih.shape[0] == 0:
        raise ValueError(f"{names[0]}: expected shape ({g}*H, I) for {kind}, got {w_ih.shape}")
    hidden = w_ih.shape[0] // g
    if w_hh.shape != (g * hidden, hidden):
        raise ValueError(f"{names[1]}: expected shape {(g * hidden, hidden)}, got {w_hh.shape}")
    has_ih, has_hh = f"bias_ih{sfx}" in weights, f"bias_hh{sfx}" in weights
    if has_ih != has_hh:
        raise ValueError(f"weights: expected both bias_ih{sfx} and bias_hh{sfx} or neither")
    b_ih = b_hh = None
    if has_ih:
        b_ih = _float_array(f"bias_ih{sfx}", weights[f"bias_ih{sfx}"], 1)
        b_hh = _float_array(f"bias_hh{sfx}", weights[f"bias_hh{sfx}"], 1)
        for n, b in ((f"bias_ih{sfx}", b_ih), (f"bias_hh{sfx}", b_hh)):
            if b.shape != (g * hidden,):
                raise ValueError(f"{n}: expected shape {(g * hidden,)}, got {b.shape}")
    dt = _result_dtype(dtype, w_ih, w_hh, b_ih, b_hh)
    # The GRU permutation r, z, n -> z, r, h is its own inverse (a swap of the first two blocks).
    perm = _keras_to_torch_gates(k, hidden)
    kernel = np.ascontiguousarray(w_ih[perm].T, dtype=dt)
    recurrent = np.ascontiguousarray(w_hh[perm].T, dtype=dt)
    bias: np.ndarray | None = None
    if b_ih is not None and b_hh is not None:
        if k == "gru":
            bias = np.ascontiguousarray(np.stack([b_ih[perm], b_hh[perm]]), dtype=dt)
        else:
            bias = np.ascontiguousarray(b_ih.astype(dt) + b_hh.astype(dt), dtype=dt)
    return kernel, recurrent, bias


# --------------------------------------------------------------------------------------------------
# PyTorch
# --------------------------------------------------------------------------------------------------


def state_dict_to_numpy(state_dict: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Convert a mapping of torch tensors (or arrays) to NumPy arrays, keeping the keys and order.

    CPU tensors are not copied: each array shares memory with its tensor
    (``tensor.detach().numpy()``), so writing to one changes the other. Tensors on another device
    are copied to the CPU.
    """
    if not isinstance(state_dict, Mapping):
        raise TypeError(
            f"state_dict: expected a mapping of names to tensors, got {type(state_dict).__name__}"
        )
    return {str(k): _to_numpy(str(k), v) for k, v in state_dict.items()}


def _numpy_dtype(torch: Any, tdtype: Any) -> Any:
    if tdtype == torch.float32:
        return np.float32
    if tdtype == torch.float64:
        return np.float64
    raise TypeError(f"module: expected float32 or float64 parameters, got {tdtype}")


def from_torch(module: Any) -> Any:
    """The rnnfast module equivalent to a torch module, holding (a copy of) the same weights.

    Supported: ``torch.nn.RNN`` (tanh or relu), ``torch.nn.LSTM`` (``proj_size`` included: the
    ``weight_hr_l{k}`` projections are carried), ``torch.nn.GRU`` -- any ``num_layers``, ``bidirectional``, ``batch_first``, ``bias``,
    ``dropout`` -- and ``torch.nn.Linear``. The dtype (float32 / float64) is the module's.
    Modules on another device are read through the CPU. Training/eval mode is carried over.

    Returns:
        ``rnnfast.RNN`` / ``LSTM`` / ``GRU`` / ``Linear``.
    """
    torch = _import_torch()
    from . import modules as rf

    if isinstance(module, torch.nn.Linear):
        dt = _numpy_dtype(torch, module.weight.dtype)
        out = rf.Linear(
            module.in_features, module.out_features, bias=module.bias is not None, dtype=dt
        )
        out.load_state_dict(state_dict_to_numpy(module.state_dict()))
        _set_mode(out, module.training)
        return out
    if not isinstance(module, (torch.nn.RNN, torch.nn.LSTM, torch.nn.GRU)):
        raise TypeError(
            "module: expected torch.nn.RNN, torch.nn.LSTM, torch.nn.GRU or torch.nn.Linear, "
            f"got {type(module).__name__}"
        )
    dt = _numpy_dtype(torch, module.weight_ih_l0.dtype)
    common = {
        "num_layers": module.num_layers,
        "bias": module.bias,
        "batch_first": module.batch_first,
        "dropout": float(module.dropout),
        "bidirectional": module.bidirectional,
        "dtype": dt,
    }
    if isinstance(module, torch.nn.LSTM):
        proj = int(getattr(module, "proj_size", 0))
        out = rf.LSTM(module.input_size, module.hidden_size, proj_size=proj, **common)
    elif isinstance(module, torch.nn.GRU):
        out = rf.GRU(module.input_size, module.hidden_size, **common)
    else:
        out = rf.RNN(
            module.input_size, module.hidden_size, nonlinearity=module.nonlinearity, **common
        )
    out.load_state_dict(state_dict_to_numpy(module.state_dict()))
    _set_mode(out, module.training)
    return out


def _set_mode(module: Any, training: bool) -> None:
    if training:
        module.train()
    else:
        module.eval()


def _attr(model: Any, name: str) -> Any:
    if not hasattr(model, name):
        raise TypeError(
            f"model: {type(model).__name__} has no attribute {name!r}; "
            "expected an rnnfast RNN, LSTM, GRU or Linear"
        )
    return getattr(model, name)


def to_torch(model: Any) -> Any:
    """The torch module equivalent to an rnnfast ``RNN`` / ``LSTM`` / ``GRU`` / ``Linear``.

    The torch module gets the same configuration, dtype, weights (copied) and training/eval mode.
    """
    torch = _import_torch()
    from . import modules as rf

    params = state_dict_to_numpy(model.state_dict()) if hasattr(model, "state_dict") else None
    if isinstance(model, rf.Linear):
        first = params["weight"]
        tdt = torch.float64 if first.dtype == np.float64 else torch.float32
        out = torch.nn.Linear(
            _attr(model, "in_features"),
            _attr(model, "out_features"),
            bias="bias" in params,
            dtype=tdt,
        )
    elif isinstance(model, (rf.RNN, rf.LSTM, rf.GRU)):
        assert params is not None
        first = params["weight_ih_l0"]
        tdt = torch.float64 if first.dtype == np.float64 else torch.float32
        common = {
            "num_layers": int(_attr(model, "num_layers")),
            "bias": bool(_attr(model, "bias")),
            "batch_first": bool(_attr(model, "batch_first")),
            "dropout": float(_attr(model, "dropout")),
            "bidirectional": bool(_attr(model, "bidirectional")),
            "dtype": tdt,
        }
        n_in, hidden = int(_attr(model, "input_size")), int(_attr(model, "hidden_size"))
        if isinstance(model, rf.LSTM):
            proj = int(getattr(model, "proj_size", 0))
            out = torch.nn.LSTM(n_in, hidden, proj_size=proj, **common)
        elif isinstance(model, rf.GRU):
            out = torch.nn.GRU(n_in, hidden, **common)
        else:
            out = torch.nn.RNN(
                n_in, hidden, nonlinearity=str(_attr(model, "nonlinearity")), **common
            )
    else:
        raise TypeError(
            f"model: expected an rnnfast RNN, LSTM, GRU or Linear, got {type(model).__name__}"
        )
    assert params is not None
    with torch.no_grad():
        tensors = {k: torch.from_numpy(np.array(v, copy=True)) for k, v in params.items()}
        out.load_state_dict(tensors, strict=True)
    _set_mode(out, bool(getattr(model, "training", True)))
    return out
