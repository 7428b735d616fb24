"""The :class:`Task` base class shared by every built-in task, and the data containers it returns.

A task bundles four things: a deterministic data generator (NumPy only, nothing downloaded), a model
shape (input/output sizes and sequence mode), a loss with its metrics, and the baselines the trained
model is judged against. ``default_config`` holds hyperparameters measured to reach the task's
stated
result quickly on one core (see each task's docstring for the measured figures).

Data layout (time-major, as the rest of rnnfast): ``x`` is (T, N, I) float32 features or (T, N)
int64
token ids; ``y`` is (N, O) (many-to-one regression), (N, 1) float 0/1 (binary), (N,) int64 class
ids,
(T, N, O) (many-to-many regression) or (T, N) int64 ids (many-to-many classification); ``lengths``
is
(N,) int64 or None.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np

from .._cells import CELL_NAMES
from ..nn.minimal import MINIMAL_CELLS
from ..training.data import Split  # the data container of fit, re-exported here

__all__ = [
    "NEEDS",
    "Split",
    "Task",
    "check_cell",
    "check_fraction",
    "check_seed",
    "random_split",
    "task_config",
]


#: What a task may need of its recurrent stack beyond forward/backward over dense batches (the
#: entries of :attr:`Task.needs`), and how to say it in an error: the minimal cells (``mingru``,
#: ``minlstm``: :class:`rnnfast.MinGRU` / :class:`rnnfast.MinLSTM`) have none of them.
NEEDS: dict[str, str] = {
    "lengths": "ragged batches (lengths)",
    "step": "one-step decoding (step())",
    "bptt": "truncated BPTT (bptt)",
}


def check_cell(cell: Any, task: str, needs: tuple[str, ...] = ()) -> Any:
    """Validate that ``cell`` is a cell name a task can build (a registered cell, ``rnn``,
    ``lstm``, ``gru``, ``lstm_peephole``, ..., or a minimal cell ``mingru``, ``minlstm``) and
    return it.

    ``task`` names the task in the error (``"cell: the <task> task takes rnn, lstm, ..."``);
    ``needs`` (keys of :data:`NEEDS`): what the task needs of the stack; a minimal cell, which
    has none of them, is refused with a ValueError naming the first one.
    """
    names = (*CELL_NAMES, *MINIMAL_CELLS)
    if cell not in names:
        choices = f"{', '.join(names[:-1])} or {names[-1]}" if len(names) > 1 else names[0]
        raise ValueError(f"cell: the {task} task takes {choices}, got {cell!r}")
    bad = [n for n in needs if n not in NEEDS]
    if bad:
        raise ValueError(f"needs: expected keys of {tuple(NEEDS)}, got {bad[0]!r}")
    if cell in MINIMAL_CELLS and needs:
        raise ValueError(
            f"cell: the {task} task needs {NEEDS[needs[0]]}, which the {cell} cell lacks "
            f"(use one of {', '.join(CELL_NAMES)})"
        )
    return cell


def check_seed(seed: Any) -> int:
    """Validate a seed (a non-negative int) and return it as an int."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"seed: expected a non-negative int, got {type(seed).__name__} {seed!r}")
    if seed < 0:
        raise ValueError(f"seed: expected a non-negative int, got {seed}")
    return int(seed)


def check_positive_int(name: str, value: Any, minimum: int = 1) -> int:
    """Validate an int option >= ``minimum`` and return it."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(
            f"{name}: expected an int >= {minimum}, got {type(value).__name__} {value!r}"
        )
    if value < minimum:
        raise ValueError(f"{name}: expected an int >= {minimum}, got {value}")
    return int(value)


def check_fraction(name: str, value: Any) -> Any:
    """Validate a fraction strictly between 0 and 1 and return it unchanged."""
    if not 0.0 < value < 1.0:
        raise ValueError(f"{name}: expected a float in (0, 1), got {value!r}")
    return value


def random_split(n: int, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, val) index arrays of a seeded random split of ``n`` examples: a permutation from
    ``default_rng(seed)``, its first ``round(val_fraction * n)`` entries for validation."""
    perm = np.random.default_rng(seed).permutation(n)
    n_val = int(round(val_fraction * n))
    return perm[n_val:], perm[:n_val]


def task_config(
    *,
    cell: str,
    hidden: int,
    seq_len: int | None,
    batch_size: int,
    epochs: int,
    lr: float,
    mode: str,
    loss: str,
    layers: int = 1,
    optimizer: str = "adam",
    clip_norm: float | None = 1.0,
    bptt: Any = None,
    init: str | None = None,
    dtype: str = "float32",
    seed: int = 0,
    **options: Any,
) -> dict[str, Any]:
    """A task's ``default_config``: the keys every task has, in one order, then the task's own
    ``options`` (data options and extras) in the order given."""
    return {
        "cell": cell,
        "hidden": hidden,
        "layers": layers,
        "seq_len": seq_len,
        "batch_size": batch_size,
        "epochs": epochs,
        "lr": lr,
        "optimizer": optimizer,
        "clip_norm": clip_norm,
        "bptt": bptt,
        "mode": mode,
        "loss": loss,
        "init": init,
        "dtype": dtype,
        "seed": seed,
        **options,
    }


class Task:
    """Base class of a built-in task. Subclasses set the class attributes and implement the hooks.

    Attributes:
        name: registry name (``get_task(name)``).
        description: one line for ``list_tasks`` and the CLI.
        mode: sequence shape, one of ``many_to_one``, ``many_to_many``, ``one_to_many``,
        ``one_to_one``.
        kind: ``"regression"``, ``"binary"`` or ``"multiclass"`` (decides loss and metrics).
        default_config: hyperparameters (cell, hidden, layers, seq_len, batch_size, epochs, lr,
            optimizer, clip_norm, bptt, mode, loss, init, seed, plus task options).
    """

    name: str = ""
    description: str = ""
    mode: str = "many_to_one"
    kind: str = "regression"
    default_config: dict[str, Any] = {}
    #: config keys passed to :meth:`make_data` (besides ``seed``)
    data_options: tuple[str, ...] = ("seq_len",)
    #: what the task needs of the recurrent stack beyond dense forward/backward (keys of
    #: :data:`NEEDS`); a minimal cell (mingru, minlstm) is refused when it is not empty
    needs: tuple[str, ...] = ()

    def __repr__(self) -> str:
        return f"<rnnfast task {self.name!r}: {self.description}>"

    # ------------------------------------------------------------------ configuration
    def config(self, **overrides: Any) -> dict[str, Any]:
        """A copy of ``default_config`` with ``overrides`` applied (``None`` values are ignored).

        Raises ValueError naming an unknown key.
        """
        cfg = copy.deepcopy(self.default_config)
        for key, value in overrides.items():
            if value is None:
                continue
            if key not in cfg:
                raise ValueError(
                    f"{key}: not an option of task {self.name!r} "
                    f"(options: {', '.join(sorted(cfg))})"
                )
            cfg[key] = value
        return cfg

    # ------------------------------------------------------------------ hooks
    def make_data(self, seed: int = 0, **opts: Any) -> tuple[Split, Split]:
        """Generate (train, val) splits, deterministic in ``seed``."""
        raise NotImplementedError

    def sizes(self, train: Split) -> dict[str, Any]:
        """Model sizes implied by the data: ``input_size``, ``output_size`` (and ``vocab_size``)."""
        raise NotImplementedError

    def baseline(self, val: Split, train: Split | None = None) -> dict[str, float]:
        """Baselines on ``val`` computed without any model (e.g. persistence MSE, majority
        accuracy); baselines that are fit (n-gram, linear) use ``train`` when given."""
        raise NotImplementedError

    @property
    def metrics(self) -> tuple[str, ...]:
        """Metric names passed to :func:`rnnfast.fit` (``("accuracy",)`` for classification)."""
        return () if self.kind == "regression" else ("accuracy",)

    def loss(self) -> Any:
        """A fresh loss object for this task: MSE, BCE on logits, or softmax cross-entropy."""
        from .. import losses

        if self.kind == "regression":
            return losses.MSELoss()
        if self.kind == "binary":
            return losses.BCEWithLogitsLoss()
        return losses.CrossEntropyLoss()

    def build_model(self, cfg: dict[str, Any], train: Split) -> Any:
        """A :class:`rnnfast.SequenceModel` for ``cfg`` sized from ``train``.

        ``cfg["cell"]`` is ``rnn`` (tanh), ``rnn-relu`` (ReLU with identity init, IRNN, unless
        ``cfg["init"]`` differs from the task's default), ``lstm``, ``gru``, ``lstm_peephole``,
        or a minimal cell ``mingru`` / ``minlstm`` (refused with a ValueError when the task
        :attr:`needs` what they lack or ``cfg["bptt"]`` is set; they start from the "torch" init,
        and an ``init`` other than it and the task's default is refused); ``cfg["init"]``
        (None = "torch") selects the initialisation preset.
        """
        from ..modules import build_model

        cell = str(cfg["cell"])
        rnn_kwargs: dict[str, Any] = {}
        init = cfg.get("init") or "torch"
        if cell in MINIMAL_CELLS:
            check_cell(cell, self.name, self.needs + (("bptt",) if cfg.get("bptt") else ()))
            if cfg.get("init") == self.default_config.get("init"):
                init = "torch"  # the task's preset is for recurrent weights, which these lack
        if cell == "lstm_proj":  # the LSTM with projection: proj_size from cfg["proj"]
            cell = "lstm"
            rnn_kwargs["proj_size"] = int(cfg.get("proj") or max(1, int(cfg["hidden"]) // 2))
        for key in ("zoneout", "recurrent_dropout"):  # the stack's regularisers (run_task's)
            if cfg.get(key):
                if cell in MINIMAL_CELLS:
                    raise ValueError(f"{key}: the minimal cell {cell!r} has no recurrent weights")
                rnn_kwargs[key] = cfg[key]
        if cell == "rnn-relu":
            cell = "rnn"
            rnn_kwargs["nonlinearity"] = "relu"
            if cfg.get("init") in (None, self.default_config.get("init")):
                init = "identity"  # IRNN unless an init was asked for explicitly
        sz = self.sizes(train)
        dtype = np.dtype(cfg.get("dtype", "float32")).type
        extra: dict[str, Any] = {}
        if sz.get("vocab_size") is not None:
            extra["vocab_size"] = sz["vocab_size"]
            extra["embedding_dim"] = cfg.get("embedding_dim") or sz["input_size"]
        return build_model(
            cell,
            sz["input_size"],
            int(cfg["hidden"]),
            sz["output_size"],
            mode=cfg.get("mode", self.mode),
            num_layers=int(cfg.get("layers", 1)),
            dtype=dtype,
            seed=int(cfg.get("seed", 0)),
            init=init,
            **extra,
            **rnn_kwargs,
        )

    # ------------------------------------------------------------------ evaluation
    def predict(self, model: Any, data: Split, batch_size: int = 512) -> np.ndarray:
        """Model outputs on ``data`` in inference mode, batched along N (no time loop in Python)."""
        was_training = bool(getattr(model, "training", False))
        model.eval()
        outs = []
        try:
            for i in range(0, data.n, batch_size):
                sl = slice(i, i + batch_size)
                xb = data.x[:, sl]
                lb = None if data.lengths is None else data.lengths[sl]
                outs.append(np.asarray(model(xb, lengths=lb)))
        finally:
            if was_training:
                model.train()
        # many-to-many outputs are (T, B, O): the batch axis is 1; otherwise (B, O): axis 0
        return np.concatenate(outs, axis=1 if outs[0].ndim == 3 else 0)

    def score(self, model: Any, val: Split) -> dict[str, float]:
        """Task metrics computed from the model's predictions on ``val`` (independent of the loss
        object's scaling): ``val_mse`` for regression (plain mean of (pred - y)^2), ``val_accuracy``
        for classification."""
        pred = self.predict(model, val)
        if self.kind == "regression":
            err = (pred.astype(np.float64) - val.y.astype(np.float64)) ** 2
            if val.lengths is not None and err.ndim == 3:
                t_steps = err.shape[0]
                mask = np.arange(t_steps)[:, None] < val.lengths[None, :]
                return {"val_mse": float(err[mask].mean())}
            return {"val_mse": float(err.mean())}
        if self.kind == "binary":
            hit = (pred.reshape(val.y.shape) > 0) == (val.y > 0.5)
            return {"val_accuracy": float(hit.mean())}
        labels = np.argmax(pred, axis=-1)
        return {"val_accuracy": float((labels == val.y).mean())}
