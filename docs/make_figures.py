"""Regenerate docs/gradient_flow.png and docs/adding_loss.png (about 2 min of CPU on one core).

Trains a tanh RNN (3 epochs), an LSTM (4 epochs, the task defaults) and a GRU (1 epoch, torch init)
on the adding problem at T = 100 with ``rnnfast.tasks.run_task``, measures ||dL/dh_t|| on one probe
batch at initialisation and after training, adds the exploding case (tanh RNN, W_hh = 2 x
orthogonal), and writes the two figures next to this file. Run: ``python docs/make_figures.py``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

import rnnfast
from rnnfast.diagnostics import exploding_case, gradient_flow, plot_gradient_flow, plot_history
from rnnfast.losses import MSELoss
from rnnfast.tasks import run_task
from rnnfast.tasks.adding import make_adding

__all__: list[str] = []

HERE = Path(__file__).resolve().parent


def main() -> None:
    rnnfast.set_num_threads(1)
    t_steps = 100
    px, py = make_adding(64, t_steps, np.random.default_rng(12345))
    flows, hists = [], {}
    plan: list[tuple[str, dict[str, Any]]] = [
        ("rnn", {"epochs": 3}),
        ("lstm", {}),
        ("gru", {"epochs": 1, "init": "torch"}),
    ]
    for cell, over in plan:
        at_init: dict[str, Any] = {}
        init_name = over.get("init", "orthogonal")

        def grab(
            model: Any, cell: str = cell, init_name: str = init_name, at_init: dict = at_init
        ) -> None:
            at_init["flow"] = gradient_flow(
                model, px, py, MSELoss(), label=f"{cell} (init: {init_name})"
            )

        r = run_task("adding", cell=cell, on_model=grab, seed=0, **over)
        n = r.config["epochs"]
        label = f"{cell} (trained {n} epoch{'s' if n > 1 else ''}, MSE {r.final['val_mse']:.3g})"
        flows += [at_init["flow"], gradient_flow(r.model, px, py, MSELoss(), label=label)]
        hists[cell] = r.history_list()
        print(label, f"{r.cpu_seconds:.1f} s CPU", flush=True)
    flows.append(exploding_case(t_steps)["flow"])
    title = f"Adding problem, T={t_steps}: ||dL/dh_t|| vs distance from the loss"
    plot_gradient_flow(flows, HERE / "gradient_flow.png", title=title)
    plot_history(
        hists,
        HERE / "adding_loss.png",
        baseline=0.5 / 6,
        title=f"Adding problem, T={t_steps}: loss per epoch (half MSE)",
        baseline_label="baseline: predict 1 (MSE 0.167)",
    )


if __name__ == "__main__":
    main()
