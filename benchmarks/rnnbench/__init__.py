"""Helpers of ``benchmarks/bench.py`` (the kernel grid), ``bench_e2e.py`` and ``bench_latency.py``.

Modules: ``common`` (grid constants, FLOP and byte formulas, inputs), ``machine`` (CPU description,
thread control, measured sgemm and bandwidth limits), ``timing`` (alternated medians), ``impls``
(rnnfast / PyTorch / reference runners, correctness checks, one grid row), ``children`` (the
first-call and memory subprocesses), ``report`` (console, markdown, JSON, plots, targets),
``variants`` (the cell-variant rows of issue 14) and ``torch_loops`` (the PyTorch constructions they
are measured against, also used by ``bench_cells.py`` and ``bench_e2e.py``); ``latency_calls``
(the inputs, ONNX model and per-library calls of ``bench_latency.py``).
Nothing here imports rnnfast at import time: the first-call children time that import.
"""

from __future__ import annotations

__all__: list[str] = []
