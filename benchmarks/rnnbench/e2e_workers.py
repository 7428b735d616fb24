"""Worker side of ``benchmarks/bench_e2e.py``: one library's one-epoch runner in a spawned process.

Nothing here imports rnnfast or torch at import time (``--rnnfast-path`` swaps rnnfast in first).
"""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path
from typing import Any

__all__ = ["Worker", "import_rnnfast", "task_setup"]


def import_rnnfast(path: str | None) -> Any:
    """rnnfast from ``path`` (a checkout's python/ folder with its compiled modules), else the installed one."""
    if path:
        # an editable install puts a finder in front of sys.path: drop it for this process
        sys.meta_path[:] = [
            f for f in sys.meta_path if "editable" not in type(f).__module__.lower()
        ]
        sys.path.insert(0, path)
        for name in [m for m in sys.modules if m == "rnnfast" or m.startswith("rnnfast.")]:
            del sys.modules[name]
    import rnnfast

    if path and not str(Path(rnnfast.__file__).resolve()).startswith(str(Path(path).resolve())):
        raise RuntimeError(f"--rnnfast-path {path}: imported {rnnfast.__file__} instead")
    return rnnfast


def task_setup(
    rf: Any, task_name: str, frac: float, cell: str | None = None
) -> tuple[Any, dict[str, Any], Any, Any]:
    """The task's config, training split (``frac`` of it) and model; ``cell`` replaces its cell."""
    from rnnfast.tasks import get_task

    task = get_task(task_name)
    cfg = task.config()
    if cell:
        cfg["cell"] = cell
    opts = {k: cfg[k] for k in task.data_options if k in cfg}
    train, _val = task.make_data(seed=int(cfg["seed"]), **opts)
    if frac < 1.0:
        n = max(int(cfg["batch_size"]) * 4, int(train.n * frac))
        sl = slice(0, min(n, train.n))
        y_axis = (
            1
            if task.mode in ("many_to_many", "one_to_many")
            and train.y.ndim >= 2
            and train.y.shape[0] == train.x.shape[0]
            else 0
        )
        train = type(train)(
            train.x[:, sl],
            train.y[:, sl] if y_axis == 1 else train.y[sl],
            None if train.lengths is None else train.lengths[sl],
            train.info,
        )
    model = task.build_model(cfg, train)
    return task, cfg, train, model


class _Core:
    """Wraps the compiled module's kernels with timers (the Python layer calls them by attribute)."""

    # the sequence kernels (the core's names since the cell descriptor; the old per-cell forwards
    # no longer exist, so before this only the backward was counted as recurrent)
    RECURRENT = (
        "sequence_forward", "sequence_backward", "tbptt_grads", "lstm_proj_forward",
        "lstm_proj_backward", "mingru_forward", "minlstm_forward", "minimal_backward",
    )  # fmt: skip
    SKIP = ("get_", "set_", "max_", "memory_", "cpu_", "release_", "barrier_", "free_")

    def __init__(self, core: Any) -> None:
        self.rec = 0.0
        self.all = 0.0
        for name in dir(core):
            fn = getattr(core, name)
            if (
                name.startswith("_")
                or not callable(fn)
                or isinstance(fn, type)
                or name.startswith(self.SKIP)
            ):
                continue
            setattr(core, name, self._wrap(fn, name in self.RECURRENT))

    def _wrap(self, fn: Any, rec: bool) -> Any:
        def timed(*a: Any, **k: Any) -> Any:
            t = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                dt = time.perf_counter() - t
                self.all += dt
                if rec:
                    self.rec += dt

        return timed


class _RnnfastRunner:
    def __init__(
        self,
        task_name: str,
        threads: int | None,
        frac: float,
        path: str | None,
        cell: str | None = None,
    ) -> None:
        self.rf = import_rnnfast(path)
        rf = self.rf
        if threads is not None:
            rf.set_num_threads(threads)
        self.threads = rf.get_num_threads()
        self.task, self.cfg, self.train, self.model = task_setup(rf, task_name, frac, cell)
        self.loss = self.task.loss()
        from rnnfast.tasks import make_optimizer

        self.opt = make_optimizer("adam", self.model.parameters(), float(self.cfg["lr"]))
        self.epoch = 0
        from rnnfast import _loader

        self.timer = _Core(_loader.core)

    def weights(self) -> dict[str, Any]:
        return {k: v.copy() for k, v in self.model.state_dict().items()}

    def check(self) -> dict[str, float]:
        import numpy as np

        from rnnfast import training as T

        if not hasattr(T, "_forward_batch"):  # training became a package (its helpers in .data)
            from rnnfast.training import data as T

        ds = T.Dataset(*self.train.as_tuple(), mode=self.model.mode)
        xb, yb, lb = ds.batch(np.arange(int(self.cfg["batch_size"])))
        pred, y, mask = T._forward_batch(self.model, xb, yb, lb)
        value = self.loss.forward(pred, y, mask)
        dpred = self.loss.backward(pred, y, mask)
        self.model.zero_grad()
        T._backward_batch(self.model, dpred)
        grads = self.model.grads() if callable(self.model.grads) else self.model.grads
        norm = math.sqrt(sum(float(np.sum(np.asarray(g, np.float64) ** 2)) for g in grads.values()))
        self.model.zero_grad()
        return {"loss": float(value), "grad_norm": norm}

    def run_epoch(self) -> dict[str, float]:
        self.timer.rec = self.timer.all = 0.0
        self.epoch += 1
        t, c = time.perf_counter(), time.process_time()
        self.rf.fit(
            self.model,
            self.train.as_tuple(),
            self.loss,
            self.opt,
            epochs=1,
            batch_size=int(self.cfg["batch_size"]),
            clip_norm=1.0,
            progress=False,
            seed=self.epoch,
        )
        wall, cpu = time.perf_counter() - t, time.process_time() - c
        return {
            "wall": wall,
            "cpu": cpu,
            "kernel_rec": self.timer.rec,
            "kernel_all": self.timer.all,
        }


class _TorchRunner:
    def __init__(
        self,
        task_name: str,
        threads: int | None,
        frac: float,
        path: str | None,
        weights: dict[str, Any],
        cell_name: str | None = None,
    ) -> None:
        import numpy as np
        import torch
        from torch import nn

        if threads is not None:
            torch.set_num_threads(threads)
        self.torch = torch
        self.threads = torch.get_num_threads()
        # the task's data and sizes come from rnnfast's task code (the weights from the rnnfast model)
        rf = import_rnnfast(path)
        task, cfg, train, model = task_setup(rf, task_name, frac, cell_name)
        self.cfg = cfg
        self.mode = model.mode
        cell = type(model.rnn).__name__.lower()
        rnn_cls = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}.get(cell)
        kw: dict[str, Any] = {}
        if cell in ("layernormlstm", "layernormgru"):  # the torch loop of bench.py's LN rows
            from .torch_loops import LayerNormLoop

            if model.rnn.num_layers != 1:
                raise NotImplementedError("the LayerNorm torch loop has one layer")
            rnn_cls, kw["lstm"] = LayerNormLoop, cell == "layernormlstm"
        elif rnn_cls is None:
            raise NotImplementedError(f"no PyTorch twin of {type(model.rnn).__name__} here")
        else:
            kw["num_layers"] = model.rnn.num_layers
        if cell == "rnn":
            kw["nonlinearity"] = getattr(model.rnn, "nonlinearity", "tanh")
        emb = model.embedding

        class Net(nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.embedding = (
                    nn.Embedding(emb.num_embeddings, emb.embedding_dim) if emb is not None else None
                )
                self.rnn = rnn_cls(model.rnn.input_size, model.rnn.hidden_size, **kw)
                self.head = nn.Linear(model.head.in_features, model.head.out_features)

            def forward(self, x: Any, lengths: Any) -> Any:
                if self.embedding is not None:
                    x = self.embedding(x)
                if outer.mode == "many_to_one":
                    if lengths is not None:
                        x = nn.utils.rnn.pack_padded_sequence(x, lengths, enforce_sorted=False)
                    _, h = self.rnn(x)
                    h = h[0] if isinstance(h, tuple) else h
                    return self.head(h[-1])
                y, _ = self.rnn(x)
                return self.head(y)

        outer = self
        self.net = Net()
        sd = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in weights.items()}
        self.net.load_state_dict(sd)
        kind = task.kind
        if kind == "regression":  # rnnfast's MSELoss is half of torch's (documented)
            mse = nn.MSELoss()
            self.lossfn = lambda p, t: 0.5 * mse(p, t)
        elif kind == "binary":
            self.lossfn = nn.BCEWithLogitsLoss()
        else:
            ce = nn.CrossEntropyLoss()
            self.lossfn = (
                (lambda p, t: ce(p.reshape(-1, p.shape[-1]), t.reshape(-1)))
                if self.mode != "many_to_one"
                else ce
            )
        if self.mode != "many_to_one" and train.lengths is not None:
            raise NotImplementedError("ragged many-to-many batches")
        self.x = torch.from_numpy(train.x)
        self.y = torch.from_numpy(train.y)
        self.y_axis = 1 if self.mode != "many_to_one" else 0
        self.lengths = None if train.lengths is None else torch.from_numpy(train.lengths)
        self.n = train.n
        self.bs = int(cfg["batch_size"])
        self.opt = torch.optim.Adam(self.net.parameters(), lr=float(cfg["lr"]))
        self.gen = np.random.default_rng(0)

    def _batch(self, idx: Any) -> tuple[Any, Any, Any]:
        x = self.x[:, idx]
        y = self.y[:, idx] if self.y_axis == 1 else self.y[idx]
        lb = None if self.lengths is None else self.lengths[idx]
        return x, y, lb

    def check(self) -> dict[str, float]:
        torch = self.torch
        x, y, lb = self._batch(torch.arange(self.bs))
        self.net.zero_grad()
        loss = self.lossfn(self.net(x, lb), y)
        loss.backward()
        norm = math.sqrt(
            sum(
                float((p.grad.double() ** 2).sum())
                for p in self.net.parameters()
                if p.grad is not None
            )
        )
        self.net.zero_grad()
        return {"loss": float(loss.detach()), "grad_norm": norm}

    def run_epoch(self) -> dict[str, float]:
        torch = self.torch
        t, c = time.perf_counter(), time.process_time()
        order = torch.from_numpy(self.gen.permutation(self.n))
        params = list(self.net.parameters())
        for i in range(0, self.n, self.bs):
            x, y, lb = self._batch(order[i : i + self.bs])
            self.opt.zero_grad(set_to_none=True)
            loss = self.lossfn(self.net(x, lb), y)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            self.opt.step()
        return {"wall": time.perf_counter() - t, "cpu": time.process_time() - c}


def _worker(conn: Any, spec: dict[str, Any]) -> None:
    try:
        if spec["lib"] == "rnnfast":
            runner: Any = _RnnfastRunner(
                spec["task"], spec["threads"], spec["frac"], spec["path"], spec.get("cell")
            )
        else:
            runner = _TorchRunner(
                spec["task"],
                spec["threads"],
                spec["frac"],
                spec["path"],
                spec["weights"],
                spec.get("cell"),
            )
        conn.send({"ok": True, "threads": runner.threads})
        while True:
            cmd = conn.recv()
            if cmd == "quit":
                break
            if cmd == "weights":
                conn.send(runner.weights())
            elif cmd == "check":
                conn.send(runner.check())
            elif cmd == "epoch":
                conn.send(runner.run_epoch())
    except Exception as exc:  # noqa: BLE001 - reported to the parent
        import traceback

        conn.send(
            {"ok": False, "error": f"{type(exc).__name__}: {exc}", "trace": traceback.format_exc()}
        )


class Worker:
    def __init__(self, ctx: Any, spec: dict[str, Any]) -> None:
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_worker, args=(child, spec), daemon=True)
        self.proc.start()
        hello = self.conn.recv()
        if not hello.get("ok"):
            raise RuntimeError(
                f"{spec['lib']} worker: {hello.get('error')}\n{hello.get('trace', '')}"
            )
        self.threads = hello["threads"]

    def call(self, cmd: str) -> Any:
        self.conn.send(cmd)
        out = self.conn.recv()
        if isinstance(out, dict) and out.get("ok") is False:
            raise RuntimeError(f"worker: {out.get('error')}\n{out.get('trace', '')}")
        return out

    def close(self) -> None:
        try:
            self.conn.send("quit")
        except (BrokenPipeError, OSError):
            pass
        self.proc.join(timeout=10)
        if self.proc.is_alive():
            self.proc.kill()
