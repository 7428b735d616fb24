"""Built-in tasks: data generated in code (or shipped in the package), default hyperparameters,
baselines, and :func:`run_task` that trains a task end to end.

>>> from rnnfast.tasks import get_task, list_tasks
>>> task = get_task("adding")
>>> train, val = task.make_data(seed=0, seq_len=50)      # Split objects: x, y, lengths
>>> cfg = task.config(cell="gru", epochs=2)              # default_config with overrides
>>> result = run_task("adding", cell="gru", epochs=2)    # -> RunResult(model, history, final, ...)

Tasks: ``sine``, ``sentiment``, ``sentiment-large``, ``adding``, ``charlm``, ``speech``,
``caption``, ``suggest``, ``dates``, ``digits``,
``sunspots``, ``co2``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable

from .. import _precision
from .._cells import CELLS as _CELL_SPECS
from ..nn.minimal import MINIMAL_CELLS as _MINIMAL_CELLS
from ..optim import make_optimizer  # lives in rnnfast.optim; kept here for compatibility
from ._base import Split, Task
from .adding import AddingTask
from .caption import CaptionTask
from .charlm import CharLMTask
from .dates import DatesTask
from .forecast import CO2Task, SunspotsTask
from .sentiment import SentimentLargeTask, SentimentTask
from .seqdigits import SeqDigitsTask
from .sine import SineTask
from .speech import SpeechTask
from .suggest import SuggestTask

__all__ = [
    "CELLS",
    "RunResult",
    "Split",
    "Task",
    "get_task",
    "list_tasks",
    "make_optimizer",
    "run_task",
]

#: Cell names the tasks accept: tanh RNN, ReLU RNN with identity init (IRNN), LSTM, GRU, ...
#: From the registry: each cell's name, then "<name>-<nl>" for each further nonlinearity it accepts;
#: then the minimal cells (minGRU, minLSTM: no CellSpec, no recurrent weight), which the tasks that
#: need ragged batches, one-step decoding or truncated BPTT refuse (``Task.needs``); "lstm_proj"
#: is the LSTM with projection (``nn.LSTM(proj_size=cfg["proj"])``, default hidden // 2).
CELLS: tuple[str, ...] = (
    *(n for c in _CELL_SPECS for n in (c.name, *(f"{c.name}-{nl}" for nl in c.nonlinearities[1:]))),
    "lstm_proj",
    *_MINIMAL_CELLS,
)

_TASKS: dict[str, type[Task]] = {
    t.name: t
    for t in (
        SineTask,
        SentimentTask,
        SentimentLargeTask,
        AddingTask,
        CharLMTask,
        SpeechTask,
        CaptionTask,
        SuggestTask,
        DatesTask,
        SeqDigitsTask,
        SunspotsTask,
        CO2Task,
    )
}


def list_tasks() -> list[str]:
    """Names of the built-in tasks, in a fixed order."""
    return list(_TASKS)


def get_task(name: str) -> Task:
    """A fresh instance of the task called ``name``; ValueError listing the names if unknown."""
    if not isinstance(name, str):
        raise TypeError(f"name: expected a task name (str), got {type(name).__name__}")
    try:
        return _TASKS[name]()
    except KeyError:
        raise ValueError(f"name: unknown task {name!r} (choose from {', '.join(_TASKS)})") from None


@dataclass
class RunResult:
    """What :func:`run_task` returns: the trained ``model``, the fit ``history``, the ``final`` dict
    (``val_loss``, ``val_mse`` or ``val_accuracy``, and the task's baselines), the ``config`` used,
    the data ``train`` / ``val``, ``seconds`` of training (wall clock, data generation excluded)
    and ``cpu_seconds`` (CPU time of this process over the same span: the honest figure on a
    shared machine; equal to ``seconds`` on an idle core with one thread)."""

    task: str
    config: dict[str, Any]
    model: Any
    history: Any
    final: dict[str, Any]
    train: Split
    val: Split
    seconds: float
    cpu_seconds: float = float("nan")
    extra: dict[str, Any] = field(default_factory=dict)

    def history_list(self) -> list[dict[str, Any]]:
        """The history as a list of per-epoch dicts (JSON-able)."""
        return history_epochs(self.history)


def history_epochs(history: Any) -> list[dict[str, Any]]:
    """Per-epoch dicts of a :class:`rnnfast.History` (or of a plain list of dicts)."""
    epochs = getattr(history, "epochs", history)
    return [dict(e) for e in epochs]


def run_task(
    task: str | Task,
    *,
    progress: bool = False,
    callbacks: tuple[Any, ...] = (),
    on_model: Callable[[Any], None] | None = None,
    **overrides: Any,
) -> RunResult:
    """Generate a task's data, build its model, train it with :func:`rnnfast.fit`, and score it.

    ``overrides`` are config keys (see ``task.default_config``): cell, hidden, layers, seq_len,
    batch_size, epochs, lr, optimizer, clip_norm, bptt (a (k1, k2) pair or None), dtype, seed, init,
    early_stopping (a patience in epochs on val_loss, restoring the best epoch's weights; any task;
    default the task's, else none; False turns a task's default off), proj (the projection size of
    cell "lstm_proj"; default hidden // 2), zoneout and recurrent_dropout (rates of the recurrent
    stack's options, training only; see :class:`rnnfast.LSTM`), precision ("fp32" or "bf16": :func:`rnnfast.fit`'s,
    also used for the final evaluation), and task options. ``final`` holds ``val_loss`` (the training loss on val), the task's score
    (``val_mse`` for regression: the plain mean squared error; ``val_accuracy`` for classification)
    and every baseline of ``task.baseline``.
    """
    from ..training import EarlyStopping, evaluate, fit

    if isinstance(task, str):
        task = get_task(task)
    patience = overrides.pop("early_stopping", None)  # every task takes it
    proj = overrides.pop("proj", None)  # so does the projection size of cell "lstm_proj"
    regularise = {k: overrides.pop(k) for k in ("zoneout", "recurrent_dropout") if k in overrides}
    precision = _precision.check_precision(overrides.pop("precision", "fp32"))
    cfg = task.config(**overrides)
    if patience is not None:
        cfg["early_stopping"] = patience
    if proj is not None:
        if cfg["cell"] != "lstm_proj":
            raise ValueError(f"proj: only the 'lstm_proj' cell takes one, got cell {cfg['cell']!r}")
        cfg["proj"] = proj
    cfg.update({k: v for k, v in regularise.items() if v is not None})
    patience = cfg.get("early_stopping")
    if cfg["cell"] not in CELLS:
        raise ValueError(f"cell: expected one of {', '.join(CELLS)}, got {cfg['cell']!r}")
    opts = {k: cfg[k] for k in task.data_options if k in cfg}
    train, val = task.make_data(seed=int(cfg["seed"]), **opts)
    model = task.build_model(cfg, train)
    if on_model is not None:
        on_model(model)
    fit_model = getattr(task, "fit_model", None)
    if fit_model is not None and precision != "fp32":
        raise ValueError(f"precision: task {task.name!r} trains its own model (fp32 only)")
    if fit_model is not None:  # a model that rnnfast.fit does not train (e.g. a Seq2Seq)
        start = time.perf_counter()
        cpu_start = time.process_time()
        history, val_loss = fit_model(model, train, val, cfg, callbacks=callbacks)
        seconds = time.perf_counter() - start
        cpu_seconds = time.process_time() - cpu_start
        final: dict[str, Any] = {"val_loss": float(val_loss)}
        final.update(task.score(model, val))
        base = task.baseline(val, train)
        final.update({f"baseline_{k}": v for k, v in base.items()})
        return RunResult(task.name, cfg, model, history, final, train, val, seconds, cpu_seconds)
    loss = task.loss()
    opt = make_optimizer(str(cfg["optimizer"]), model.parameters(), float(cfg["lr"]))
    bptt = cfg.get("bptt")
    start = time.perf_counter()
    cpu_start = time.process_time()
    history = fit(
        model,
        train.as_tuple(),
        loss,
        opt,
        epochs=int(cfg["epochs"]),
        batch_size=int(cfg["batch_size"]),
        bptt=tuple(bptt) if bptt else None,
        clip_norm=cfg.get("clip_norm"),
        val_data=val.as_tuple(),
        progress=progress,
        seed=int(cfg["seed"]),
        metrics=task.metrics,
        callbacks=callbacks,
        # patience in epochs on val_loss, then the best epoch's weights are put back
        early_stopping=(
            None if patience is None or patience is False else EarlyStopping(patience=int(patience))
        ),
        precision=precision,
    )
    seconds = time.perf_counter() - start
    cpu_seconds = time.process_time() - cpu_start
    with _precision.precision(precision):
        ev = evaluate(
            model,
            val.as_tuple(),
            loss,
            batch_size=max(int(cfg["batch_size"]), 256),
            metrics=task.metrics,
        )
        score = task.score(model, val)
    final = {"val_loss": float(ev["loss"] if "loss" in ev else ev["val_loss"])}
    final.update(score)
    base = task.baseline(val, train)
    final.update({f"baseline_{k}": v for k, v in base.items()})
    return RunResult(task.name, cfg, model, history, final, train, val, seconds, cpu_seconds)
