"""Training loops: ``fit`` (full BPTT, truncated BPTT, stateful streams), ``evaluate``, datasets,
history, callbacks and early stopping, with crash-safe checkpoints and exact resume.

::

    model = rnnfast.build_model("lstm", 1, 32, 1, mode="many_to_one", seed=0)
    opt = rnnfast.optim.Adam(model.parameters(), lr=1e-2)
    history = rnnfast.fit(model, (x, y), rnnfast.losses.MSELoss(), opt, epochs=10, batch_size=32,
                          val_data=(xv, yv), clip_norm=1.0, seed=0, checkpoint="run/ckpt.npz")

Data layout follows the model, like its forward: time-major x (T, N, I) floats or token ids (T, N);
targets per the model's mode: many_to_one (N, O) floats or (N,) class ids; many_to_many / one_to_many
(T, N, O) or (T, N) ids; one_to_one x (N, I) and y (N, O) / (N,). A tuple (x, y[, lengths]) given
to a ``batch_first=True`` model is read batch-first: x (N, T, I), sequence targets (N, T, O). A
:class:`Dataset` says its layout itself (``batch_first=False`` by default) and a task's Split is
time-major, whatever the model. ``lengths`` (N,) marks ragged sequences (padding at the end; padded
steps are masked out of the loss; :func:`rnnfast.data.pad` makes them).

Modes of ``fit``:

* ``bptt=None``: full backpropagation through time per batch.
* ``bptt=(k1, k2)``: truncated BPTT (Williams & Peng's TBPTT(k1, k2)) through the model's
  ``stream_*`` methods, i.e. one C++ ``functional.TBPTTStream`` per layer called once per chunk: a weight update
  every k1 steps, each backpropagated through the last k2 steps (many_to_many / one_to_many models,
  unidirectional). Every step runs forward once; the k2 - k1 history steps of a window keep the
  activations computed with the weights of their time, the backward uses the current weights
  (k1 == k2 is exactly the torch "detach every k steps" loop). Memory is O(k2), independent of T.
* ``stateful=True`` (Keras's stateful RNNs): row i of batch j+1 continues row i of batch j (use
  :func:`stateful_batches` to cut a long series that way). No shuffling; the final state of each
  batch is carried into the next (detached: gradients stop at batch boundaries unless ``bptt`` gives
  a longer k2); the state is zeroed at every epoch start and, per row, wherever the Dataset's
  ``resets`` flags a new sequence.

Reliability: with ``checkpoint=path`` the latest state is written atomically (rnnfast.io) every
``checkpoint_every`` epochs and the best model (lowest monitored loss) to ``<stem>.best<suffix>``;
``resume=True`` continues from the latest checkpoint bit for bit (weights, optimizer and scheduler
state, data order, RNG states, carried TBPTT/stateful state, partial-epoch statistics). SIGINT (Ctrl-C)
stops at the next optimizer-step boundary, writes a final checkpoint when ``checkpoint`` is set, and
raises :class:`TrainingInterrupted` (a KeyboardInterrupt carrying the history); a second Ctrl-C
interrupts at once. A non-finite loss or gradient raises :class:`NonFiniteError` naming the epoch,
step and parameter (``on_nonfinite="skip"`` skips that update instead and counts it).

Determinism: all randomness comes from ``seed`` (data order, and -- when given -- the model's
dropout RNG); nothing reads NumPy's global RNG.

The parts: :mod:`~rnnfast.training.data` (Dataset, Split, batching),
:mod:`~rnnfast.training.callbacks` (History, callbacks, early stopping), :mod:`~rnnfast.training.metrics`,
:mod:`~rnnfast.training.checkpointing` (train state, checkpoints, resume),
:mod:`~rnnfast.training.interrupt` (SIGINT), :mod:`~rnnfast.training.trainer` (the Trainer: epoch
loop, full-BPTT and streaming steps, evaluation) and :mod:`~rnnfast.training.fit` (``fit`` and
``evaluate``, the one-call API).
"""

from __future__ import annotations

from .. import io as _io  # noqa: F401 - rnnfast.training._io: what tests patch (io.save) is io's
from .callbacks import Callback, EarlyStopping, History, LambdaCallback
from .checkpointing import TrainState
from .data import Dataset, Split, stateful_batches
from .fit import evaluate, fit
from .interrupt import TrainingInterrupted
from .trainer import NonFiniteError, Trainer

__all__ = [
    "Callback",
    "Dataset",
    "EarlyStopping",
    "History",
    "LambdaCallback",
    "NonFiniteError",
    "Split",
    "TrainState",
    "Trainer",
    "TrainingInterrupted",
    "evaluate",
    "fit",
    "stateful_batches",
]
