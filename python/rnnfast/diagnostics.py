"""Make vanishing and exploding gradients visible: per-step gradient norms and their plots.

:func:`gradient_flow` runs one forward and backward pass of a model and returns, for every recurrent
layer (and direction) and every time step t, the batch-averaged norm ||dL/dh_t|| of the TOTAL
gradient
reaching that step's hidden state (through its output and through the recurrence). The numbers come
from the C++ backward (each module's ``last_state_grads``, the kernels' ``dh_all``); Python never
loops over time steps. For a loss on the last step only (many-to-one), ``norms[:, T-1-d]`` is the
gradient that survives ``d`` steps of backpropagation: it shrinks geometrically for a tanh RNN
(vanishing), stays usable for an LSTM whose forget gates are open, and grows geometrically when the
recurrent weights are too large (exploding).

Plots need matplotlib, the optional extra ``rnnfast[plot]``; it is imported only when plotting.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ._cells import CELLS, get_cell
from ._threads import with_single_thread_blas
from .testing import call_backward, call_forward, rel_max_error

__all__ = [
    "TOLERANCES",
    "GradientFlow",
    "exploding_case",
    "gradcheck",
    "gradient_flow",
    "plot_gradient_flow",
    "plot_history",
    "state_grad_norms",
    "train_steps",
    "vanishing_case",
]


@dataclass
class GradientFlow:
    """Per-step gradient norms of one backward pass.

    Attributes:
        norms: (L, T) float64, ``norms[l, t]`` = mean over the batch of ||dL/dh_t|| (2-norm over the
            hidden units) for layer/direction ``l``; sequences past their length are left out.
        names: L labels such as ``"layer 0"`` or ``"layer 1 reverse"``.
        loss: the loss value of the pass.
        label: free text for tables and plot legends (e.g. the cell name).
    """

    norms: np.ndarray
    names: list[str]
    loss: float = float("nan")
    label: str = ""
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def num_steps(self) -> int:
        return int(self.norms.shape[1])

    def by_distance(self, layer: int = -1) -> np.ndarray:
        """(T,) norms of ``layer`` ordered by distance from the last step: element d is step
        T-1-d."""
        return self.norms[layer, ::-1].copy()

    def ratio(self, distance: int, layer: int = -1) -> float:
        """||dL/dh_{T-1-distance}|| / ||dL/dh_{T-1}|| for ``layer`` (0 if the last step has
        none)."""
        if not 0 <= distance < self.num_steps:
            raise ValueError(f"distance: expected 0 <= distance < {self.num_steps}, got {distance}")
        d = self.by_distance(layer)
        return float(d[distance] / d[0]) if d[0] > 0 else 0.0


def state_grad_norms(dh_all: np.ndarray, lengths: Any = None) -> np.ndarray:
    """(T,) batch-mean of ||dh_all[t, b, :]|| over sequences b valid at step t (t < lengths[b]).

    ``dh_all`` is (T, B, H), the ``dh_all`` of a functional backward or a module's
    ``last_state_grads`` entry. Steps where no sequence is valid get 0.
    """
    d = np.asarray(dh_all, dtype=np.float64)
    if d.ndim != 3:
        raise ValueError(f"dh_all: expected shape (T, B, H), got {d.shape}")
    per = np.sqrt(np.sum(d * d, axis=2))  # (T, B)
    if lengths is None:
        return per.mean(axis=1)
    lens = np.asarray(lengths)
    if lens.shape != (d.shape[1],):
        raise ValueError(f"lengths: expected shape ({d.shape[1]},), got {lens.shape}")
    valid = np.arange(d.shape[0])[:, None] < lens[None, :]
    count = valid.sum(axis=1)
    return np.where(count > 0, (per * valid).sum(axis=1) / np.maximum(count, 1), 0.0)


def _state_grads(model: Any) -> list[np.ndarray]:
    for obj in (model, getattr(model, "rnn", None)):
        grads = getattr(obj, "last_state_grads", None) if obj is not None else None
        if grads is not None:
            return [np.asarray(g) for g in grads]
    raise TypeError(
        "model: expected a recurrent module or SequenceModel exposing last_state_grads after "
        "backward, "
        f"got {type(model).__name__}"
    )


def _layer_names(model: Any, count: int) -> list[str]:
    rnn = getattr(model, "rnn", model)
    bidir = bool(getattr(rnn, "bidirectional", False))
    if bidir and count % 2 == 0:
        return [f"layer {i // 2}" + (" reverse" if i % 2 else "") for i in range(count)]
    return [f"layer {i}" for i in range(count)]


def gradient_flow(
    model: Any,
    x: Any,
    y: Any,
    loss: Any,
    lengths: Any = None,
    *,
    label: str = "",
) -> GradientFlow:
    """||dL/dh_t|| per layer and step for one batch, from the C++ backward.

    Args:
        model: a :class:`rnnfast.SequenceModel` (or anything with ``__call__``, ``backward``,
            ``zero_grad`` and ``last_state_grads`` on itself or its ``.rnn``).
        x: input batch as the model takes it, e.g. (T, B, I) float or (T, B) token ids.
        y: targets for ``loss``.
        loss: a loss object, ``value, dpred = loss(pred, y)`` (e.g. :class:`rnnfast.MSELoss`).
        lengths: optional (B,) ints for ragged batches.
        label: stored in the result (used by tables and plot legends).

    Returns a :class:`GradientFlow` with ``norms`` (L, T) float64. The model's accumulated gradients
    are cleared (``zero_grad``) before and after the pass; its parameters are not changed.
    """
    model.zero_grad()
    pred = model(x, lengths=lengths)
    value, dpred = loss(pred, y)
    model.backward(dpred)
    grads = _state_grads(model)
    model.zero_grad()
    if not grads:
        raise TypeError("model: last_state_grads is empty after backward")
    norms = np.stack([state_grad_norms(g, lengths) for g in grads])
    return GradientFlow(norms, _layer_names(model, len(grads)), float(value), label)


# --------------------------------------------------------------------------------------------------
# plots (matplotlib: optional extra rnnfast[plot])
# --------------------------------------------------------------------------------------------------


def _figure(figsize: tuple[float, float]) -> Any:
    """A matplotlib Figure with an Agg canvas (no pyplot, no display needed)."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as exc:  # pragma: no cover - exercised only without matplotlib
        raise ImportError(
            "plotting needs matplotlib, the optional extra of rnnfast: pip install 'rnnfast[plot]'"
        ) from exc
    fig = Figure(figsize=figsize, dpi=110)
    FigureCanvasAgg(fig)
    return fig


def plot_gradient_flow(
    flows: GradientFlow | Sequence[GradientFlow] | Mapping[str, GradientFlow],
    path: str | Path | None = None,
    *,
    title: str = "Gradient flow: ||dL/dh_t|| vs distance from the loss",
    layer: int = -1,
) -> Any:
    """Plot ||dL/dh_t|| against the distance (T-1-t) from the last step, log scale, one line per
    flow.

    ``flows``: one :class:`GradientFlow`, a list (legend from each ``label``) or a dict
    label -> flow. Lines share a colour per family (first word of the label, e.g. the cell) and
    are dashed when the label mentions "init".
    Writes a PNG to ``path`` if given. Returns the matplotlib Figure. Raises ImportError naming the
    ``rnnfast[plot]`` extra if matplotlib is missing.
    """
    if isinstance(flows, GradientFlow):
        items = [(flows.label or "model", flows)]
    elif isinstance(flows, Mapping):
        items = list(flows.items())
    else:
        items = [(f.label or f"model {i}", f) for i, f in enumerate(flows)]
    if not items:
        raise ValueError("flows: expected at least one GradientFlow")
    fig = _figure((7.0, 4.2))
    ax = fig.add_subplot(1, 1, 1)
    floor = 1e-40  # log scale: exact zeros (or underflow) drawn at the floor
    colors: dict[str, str] = {}
    for name, flow in items:
        if not isinstance(flow, GradientFlow):
            raise TypeError(f"flows: expected GradientFlow values, got {type(flow).__name__}")
        d = flow.by_distance(layer)
        # one colour per model family (first word of the label), dashed at initialisation
        family = str(name).split(" ")[0].rstrip(",:")
        color = colors.setdefault(family, f"C{len(colors) % 10}")
        style = "--" if "init" in str(name) else "-"
        ax.semilogy(
            np.arange(len(d)), np.maximum(d, floor), style, color=color, label=name, linewidth=1.8
        )
    ax.set_xlabel("distance from the loss (steps back, T-1-t)")
    ax.set_ylabel("mean ||dL/dh_t||")
    ax.set_title(title, fontsize=11)
    ax.grid(True, which="major", alpha=0.35)
    ax.legend(fontsize=9, loc="best")
    fig.tight_layout()
    if path is not None:
        fig.savefig(str(path))
    return fig


def plot_history(
    histories: Mapping[str, Any],
    path: str | Path | None = None,
    *,
    title: str = "Loss curves",
    baseline: float | None = None,
    baseline_label: str = "baseline",
) -> Any:
    """Plot train (dashed) and validation (solid) loss per epoch for each named history.

    ``histories``: label -> :class:`rnnfast.History` or list of per-epoch dicts with ``loss`` and
    optionally ``val_loss``. ``baseline``: an optional horizontal reference line (same loss units).
    Writes a PNG to ``path`` if given; returns the Figure.
    """
    fig = _figure((7.0, 4.2))
    ax = fig.add_subplot(1, 1, 1)
    for i, (name, hist) in enumerate(histories.items()):
        epochs = [dict(e) for e in getattr(hist, "epochs", hist)]
        color = f"C{i % 10}"
        xs = [int(e.get("epoch", j + 1)) for j, e in enumerate(epochs)]
        ax.plot(
            xs,
            [e["loss"] for e in epochs],
            "--",
            marker="o",
            markersize=3,
            color=color,
            label=f"{name} train",
        )
        if epochs and epochs[0].get("val_loss") is not None:
            ax.plot(
                xs,
                [e["val_loss"] for e in epochs],
                "-",
                marker="o",
                markersize=3,
                color=color,
                label=f"{name} val",
            )
    if baseline is not None:
        ax.axhline(baseline, color="grey", linestyle=":", label=baseline_label)
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax.set_yscale("log")
    ax.set_title(title, fontsize=11)
    ax.grid(True, alpha=0.35)
    ax.legend(fontsize=9)
    fig.tight_layout()
    if path is not None:
        fig.savefig(str(path))
    return fig


# --------------------------------------------------------------------------------------------------
# the experiments behind `python -m rnnfast diagnose`
# --------------------------------------------------------------------------------------------------


def _adding_model(cell: str, hidden: int, seed: int, init: str | None = None) -> Any:
    from .tasks import Split, get_task

    task = get_task("adding")
    cfg = task.config(cell=cell, hidden=hidden, seed=seed, init=init)
    dummy = Split(np.zeros((2, 1, 2), np.float32), np.zeros((1, 1), np.float32))  # sizes only
    return task.build_model(cfg, dummy)


def _global_norm(grads: Mapping[str, Any]) -> float:
    total = 0.0
    for g in grads.values():
        if g is not None:
            total += float(np.sum(np.asarray(g, dtype=np.float64) ** 2))
    return math.sqrt(total)


@with_single_thread_blas  # NumPy's BLAS pool would fight the kernels' threads
def train_steps(
    model: Any,
    steps: int,
    t_steps: int,
    *,
    batch: int = 64,
    lr: float = 0.005,
    optimizer: str = "adam",
    clip_norm: float | None = 1.0,
    seed: int = 0,
) -> list[dict[str, float]]:
    """``steps`` optimizer steps of ``model`` on fresh adding-problem batches of length ``t_steps``.

    Returns one dict per step: ``loss`` (half MSE), ``grad_norm`` (global 2-norm before clipping).
    A plain loop over batches; every time step runs in the compiled core.
    """
    from .losses import MSELoss
    from .optim import clip_grad_norm_, make_optimizer
    from .tasks.adding import make_adding

    rng = np.random.default_rng(seed)
    loss_fn = MSELoss()
    opt = make_optimizer(optimizer, model.parameters(), lr)
    model.train()
    log = []
    for _ in range(steps):
        x, y = make_adding(batch, t_steps, rng)
        model.zero_grad()
        value, dpred = loss_fn(model(x), y)
        model.backward(dpred)
        grads = model.grads
        norm = _global_norm(grads)
        if clip_norm is not None and math.isfinite(norm):
            clip_grad_norm_(grads, clip_norm)
        log.append({"loss": float(value), "grad_norm": norm})
        if not (math.isfinite(norm) and math.isfinite(value)):
            break
        opt.step(grads)
    model.zero_grad()
    return log


def vanishing_case(
    cells: Sequence[str],
    t_steps: int,
    *,
    seed: int = 0,
    train_steps_: int = 1500,
    hidden: int = 64,
    batch: int = 32,
    lr: float = 0.01,
    init: str | None = None,
) -> list[GradientFlow]:
    """Gradient flow on one adding-problem batch (64 sequences of length ``t_steps``) for each
    cell, at initialisation and (if ``train_steps_`` > 0) after that many Adam steps (``batch``,
    ``lr``, clip norm 1) on fresh adding batches. ``init`` None = the adding task's default
    preset ("orthogonal": orthogonal recurrent weights, LSTM forget-gate bias 1).

    Returns GradientFlow objects labelled ``"<cell> (init)"`` / ``"<cell> (trained N steps)"``
    with ``meta["when"]``, ``meta["cell"]`` and (trained) ``meta["train_loss_last"]`` (half MSE
    of the last training batch) and ``meta["train_mse_recent"]`` (plain MSE over the last 50).
    """
    from .losses import MSELoss
    from .tasks.adding import make_adding

    probe_x, probe_y = make_adding(64, t_steps, np.random.default_rng(seed + 12345))
    flows = []
    for cell in cells:
        model = _adding_model(cell, hidden, seed, init)
        f0 = gradient_flow(model, probe_x, probe_y, MSELoss(), label=f"{cell} (init)")
        f0.meta.update({"when": "init", "cell": cell})
        flows.append(f0)
        if train_steps_ > 0:
            log = train_steps(model, train_steps_, t_steps, batch=batch, lr=lr, seed=seed)
            f1 = gradient_flow(
                model, probe_x, probe_y, MSELoss(), label=f"{cell} (trained {len(log)} steps)"
            )
            f1.meta.update(
                {
                    "when": f"trained {len(log)} steps",
                    "cell": cell,
                    "train_loss_last": log[-1]["loss"] if log else float("nan"),
                    # plain MSE over the last 50 training batches: has the model learned the task?
                    "train_mse_recent": 2.0 * float(np.mean([e["loss"] for e in log[-50:]])),
                }
            )
            flows.append(f1)
    return flows


def exploding_case(
    t_steps: int,
    *,
    seed: int = 0,
    steps: int = 30,
    gain: float = 2.0,
    hidden: int = 64,
    lr: float = 0.1,
    clip_norm: float = 1.0,
) -> dict[str, Any]:
    """A tanh RNN whose recurrent weights are ``gain`` x an orthogonal matrix (spectral radius
    ``gain`` > 1): the gradient grows geometrically with distance. Trains two copies with plain SGD
    for ``steps`` steps on the adding task, without and with clipping by global norm.

    Returns ``{"flow": GradientFlow at init, "ratio": ||dL/dh_0|| / ||dL/dh_{T-1}||, "gain", "lr",
    "steps", "runs": {name: {"grad_norm_first", "grad_norm_max", "loss_first", "loss_max",
    "loss_last", "finite", "log"}}}``. Training stops early at a non-finite loss or gradient.
    """
    from .losses import MSELoss
    from .tasks.adding import make_adding

    def make() -> Any:
        m = _adding_model("rnn", hidden, seed, init="orthogonal")
        params = m.parameters()
        for name, p in params.items():
            if name.startswith("rnn.weight_hh"):
                p *= p.dtype.type(gain)
        return m

    probe_x, probe_y = make_adding(64, t_steps, np.random.default_rng(seed + 12345))
    flow = gradient_flow(
        make(),
        probe_x,
        probe_y,
        MSELoss(),
        label=f"exploding: rnn, W_hh = {gain:g} x orthogonal (init)",
    )
    flow.meta.update({"when": "init", "cell": "rnn"})
    runs: dict[str, Any] = {}
    for name, clip in (("no clipping", None), (f"clip_norm={clip_norm:g}", clip_norm)):
        with np.errstate(all="ignore"):
            log = train_steps(
                make(), steps, t_steps, lr=lr, optimizer="sgd", clip_norm=clip, seed=seed
            )
        norms = [e["grad_norm"] for e in log]
        losses = [e["loss"] for e in log]
        finite = all(math.isfinite(v) for v in norms + losses) and len(log) == steps
        runs[name] = {
            "grad_norm_first": norms[0],
            "grad_norm_max": float(np.nanmax(norms)),
            "loss_first": losses[0],
            "loss_max": float(np.nanmax(losses)),
            "loss_last": losses[-1],
            "finite": finite,
            "log": log,
        }
    return {
        "flow": flow,
        "ratio": flow.ratio(t_steps - 1, 0),
        "gain": gain,
        "lr": lr,
        "steps": steps,
        "runs": runs,
    }


# --------------------------------------------------------------------------------------------------
# gradcheck: C++ kernels vs the NumPy reference vs central finite differences
# --------------------------------------------------------------------------------------------------

#: Max relative error allowed per dtype: C++ vs reference (forward and gradients) and vs finite
#: differences (computed in float64 on the reference). The reference itself is checked against
#: finite differences with tolerance 1e-6.
TOLERANCES: dict[str, dict[str, float]] = {
    "float64": {"cpp_ref": 1e-10, "fd": 1e-6},
    "float32": {"cpp_ref": 1e-4, "fd": 1e-4},
}
_FD_TOL = 1e-6

#: (cell, nonlinearity) pairs gradcheck covers: every registered cell with each nonlinearity.
_GC_CELLS: tuple[tuple[str, str], ...] = tuple(
    (c.name, nl) for c in CELLS for nl in c.nonlinearities
)


def _rel_err(a: Any, b: Any) -> float:
    return rel_max_error(a, b)[0]


def _gc_call(
    mod: Any, cell: str, nl: str, arrs: Mapping[str, Any], lengths: Any
) -> tuple[list[Any], Any]:
    """[y, h_n(, c_n)] and the cache of one forward call."""
    y, h, c, cache = call_forward(mod, cell, arrs, nonlinearity=nl, lengths=lengths)
    return [y, h] + ([] if c is None else [c]), cache


def _gc_backward(mod: Any, cell: str, cache: Any, seeds: Mapping[str, Any]) -> dict[str, Any]:
    return call_backward(mod, cell, cache, seeds["dy"], seeds["dh_n"], seeds["dc_n"])


@with_single_thread_blas  # NumPy's BLAS pool would fight the kernels' threads
def gradcheck(
    seed: int = 0, *, t_steps: int = 5, batch: int = 3, n_in: int = 4, hidden: int = 5
) -> tuple[list[dict[str, Any]], bool]:
    """Check every cell's compiled kernels against :mod:`rnnfast.reference` and finite differences.

    For each cell (rnn-tanh, rnn-relu, lstm, gru, ..., and lstm_proj) and dtype (float32, float64), on a small ragged
    batch (lengths T, T-2, 1): forward outputs and all gradients (x, h0, c0, weights, biases) of
    L = <y, dy> + <h_n, dh_n> (+ <c_n, dc_n>) from :mod:`rnnfast.functional` vs the reference; the
    gradients vs central finite differences of the reference's L in float64; the reference vs those
    finite differences; and ``tbptt_grads`` (k1=2, k2=3) vs the reference. Errors are max relative
    errors (max |a - b| / max |b|) over all arrays.

    Returns (rows, ok): one dict per (cell, dtype) with the errors and ``ok``; ``ok`` overall.
    """
    from . import functional as F
    from . import reference as R

    rows: list[dict[str, Any]] = []
    all_ok = True
    lengths = np.array([t_steps, max(t_steps - 2, 1), 1][:batch] + [t_steps] * max(0, batch - 3))
    for cell, nl in _GC_CELLS:
        spec = get_cell(cell)
        rng = np.random.default_rng(seed)
        base, seeds = _gc_inputs(spec, rng, t_steps, batch, n_in, hidden)
        keys = [k for k in _GC_ARRAYS if base[k] is not None] + [n for n, _ in spec.extra_params]

        # reference (float64) and its finite differences
        ref_out, ref_cache = _gc_call(R, cell, nl, base, lengths)
        ref_grad = _gc_backward(R, cell, ref_cache, seeds)
        fd = _gc_finite_differences(R, cell, nl, base, seeds, keys, lengths)
        ref_fd = max(_rel_err(ref_grad[k], fd[k]) for k in keys)

        for dtype in ("float32", "float64"):
            dt = np.dtype(dtype)
            arrs = {k: (None if v is None else v.astype(dt)) for k, v in base.items()}
            sd = {k: (None if v is None else v.astype(dt)) for k, v in seeds.items()}
            outs, cache = _gc_call(F, cell, nl, arrs, lengths)
            grads = _gc_backward(F, cell, cache, sd)
            fwd_err = max(_rel_err(o, r) for o, r in zip(outs, ref_out))
            grad_err = max(_rel_err(grads[k], ref_grad[k]) for k in keys + ["dh_all"])
            fd_err = max(_rel_err(grads[k], fd[k]) for k in keys)
            tb_err = _gc_tbptt_err(F, R, spec, nl, arrs, sd["dy"], base, seeds["dy"])
            name = cell if cell != "rnn" else f"rnn-{nl}"
            row = _gc_row(
                name, dtype, fwd_err, grad_err, fd_err, ref_fd, tb_err, TOLERANCES, _FD_TOL
            )
            all_ok &= row["ok"]
            rows.append(row)
    # the LSTM with projection runs beside the registry (rnnfast._proj): its rows
    from ._gradcheck_proj import gradcheck_rows

    proj = gradcheck_rows(seed, t_steps, batch, n_in, hidden, lengths, TOLERANCES, _FD_TOL)
    rows += proj
    return rows, bool(all_ok and all(r["ok"] for r in proj))


#: the arrays every cell's call takes (c0 None without a cell state)
_GC_ARRAYS = ("x", "h0", "c0", "w_ih", "w_hh", "b_ih", "b_hh")


def _gc_inputs(
    spec: Any, rng: np.random.Generator, t_steps: int, batch: int, n_in: int, hidden: int
) -> tuple[dict[str, Any], dict[str, Any]]:
    """float64 inputs (x (T, B, I), h0 [, c0] (B, H), weights (G*H, I | H), biases (G*H,), then the
    cell's extra parameters (per_unit*H,)) and the loss seeds (dy (T, B, H), dh_n [, dc_n] (B, H))
    of one cell, drawn from ``rng`` (the extra parameters last, after the seeds)."""
    g = spec.gates
    base = {
        "x": rng.standard_normal((t_steps, batch, n_in)),
        "h0": rng.uniform(-0.5, 0.5, (batch, hidden)),
        "c0": rng.uniform(-0.5, 0.5, (batch, hidden)) if spec.has_cell_state else None,
        "w_ih": rng.uniform(-0.5, 0.5, (g * hidden, n_in)),
        "w_hh": rng.uniform(-0.5, 0.5, (g * hidden, hidden)),
        "b_ih": rng.uniform(-0.5, 0.5, g * hidden),
        "b_hh": rng.uniform(-0.5, 0.5, g * hidden),
    }
    seeds = {
        "dy": rng.standard_normal((t_steps, batch, hidden)),
        "dh_n": rng.standard_normal((batch, hidden)),
        "dc_n": rng.standard_normal((batch, hidden)) if spec.has_cell_state else None,
    }
    for name, per_unit in spec.extra_params:
        base[name] = rng.uniform(-0.5, 0.5, per_unit * hidden)
    return base, seeds


def _gc_finite_differences(
    ref: Any,
    cell: str,
    nl: str,
    base: Mapping[str, Any],
    seeds: Mapping[str, Any],
    keys: list[str],
    lengths: Any,
) -> dict[str, np.ndarray]:
    """Central differences (eps = 1e-6) of the reference's L = <y, dy> + <h_n, dh_n> (+ <c_n,
    dc_n>) with respect to every array of ``keys``, in float64."""

    def objective(arrs: Mapping[str, Any]) -> float:
        outs, _ = _gc_call(ref, cell, nl, arrs, lengths)
        total = float(np.sum(outs[0] * seeds["dy"]) + np.sum(outs[1] * seeds["dh_n"]))
        if len(outs) == 3:  # a cell with a cell state: + <c_n, dc_n>
            total += float(np.sum(outs[2] * seeds["dc_n"]))
        return total

    return _central_differences(objective, base, keys)


def _central_differences(
    objective: Callable[[Mapping[str, Any]], float], base: Mapping[str, Any], keys: Sequence[str]
) -> dict[str, np.ndarray]:
    """Central differences (eps = 1e-6) of ``objective`` with respect to every element of the
    float64 arrays ``base[k]``, k in ``keys`` (each perturbed in a copy; ``base`` is not changed).
    Shared with rnnfast._gradcheck_proj."""
    fd: dict[str, np.ndarray] = {}
    eps = 1e-6
    for k in keys:
        arr = base[k].copy()
        grad = np.zeros_like(arr)
        flat, gflat = arr.reshape(-1), grad.reshape(-1)
        pert = dict(base)
        pert[k] = arr
        for i in range(flat.size):
            old = flat[i]
            flat[i] = old + eps
            f_plus = objective(pert)
            flat[i] = old - eps
            f_minus = objective(pert)
            flat[i] = old
            gflat[i] = (f_plus - f_minus) / (2 * eps)  # central difference, O(eps^2) error
        fd[k] = grad
    return fd


def _gc_row(
    cell: str,
    dtype: str,
    fwd_err: float,
    grad_err: float,
    fd_err: float,
    ref_fd: float,
    tb_err: float,
    tolerances: Mapping[str, Mapping[str, float]],
    fd_tol: float,
) -> dict[str, Any]:
    """One gradcheck row: the errors and ``ok`` (each within its tolerance). Shared with
    rnnfast._gradcheck_proj."""
    tol = tolerances[dtype]
    ok = (
        fwd_err <= tol["cpp_ref"]
        and grad_err <= tol["cpp_ref"]
        and fd_err <= tol["fd"]
        and ref_fd <= fd_tol
        and tb_err <= tol["cpp_ref"]
    )
    return {
        "cell": cell,
        "dtype": dtype,
        "fwd_cpp_ref": fwd_err,
        "grad_cpp_ref": grad_err,
        "grad_cpp_fd": fd_err,
        "grad_ref_fd": ref_fd,
        "tbptt_cpp_ref": tb_err,
        "ok": bool(ok),
    }


def _gc_tbptt_err(
    fn: Any,
    ref: Any,
    spec: Any,
    nl: str,
    arrs: Mapping[str, Any],
    dy: Any,
    base: Mapping[str, Any],
    base_dy: Any,
) -> float:
    """Max relative error of the kernels' ``tbptt_grads`` (k1=2, k2=3) on ``arrs`` / ``dy`` against
    the reference's on the float64 ``base`` / ``base_dy`` (inf when the update counts differ)."""
    cell = spec.name
    names = ("w_ih", "w_hh", "b_ih", "b_hh", *(n for n, _ in spec.extra_params))
    params = {k: arrs[k] for k in names}
    state0: Any = (arrs["h0"], arrs["c0"]) if spec.has_cell_state else arrs["h0"]
    kw = {"nonlinearity": nl}
    tb = fn.tbptt_grads(cell, arrs["x"], state0, params, dy, 2, 3, **kw)
    tb_ref = ref.tbptt_grads(
        cell,
        base["x"],
        (base["h0"], base["c0"]) if spec.has_cell_state else base["h0"],
        {k: base[k] for k in names},
        base_dy,
        2,
        3,
        **kw,
    )
    if len(tb) != len(tb_ref):
        return float("inf")
    tb_err = 0.0
    for a, b in zip(tb, tb_ref):
        for k in names:
            tb_err = max(tb_err, _rel_err(a[k], b[k]))
    return tb_err
