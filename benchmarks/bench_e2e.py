"""End-to-end benchmark: one epoch of ``rnnfast.fit`` against the idiomatic PyTorch loop (issue 12).

For every built-in task (``python -m rnnfast tasks``) the task's own model (embedding / recurrent
layer / linear head, the task's default cell, hidden size, batch size and learning rate) is trained
for one epoch on the task's training split by

  rnnfast  ``rnnfast.fit(model, train, loss, Adam, epochs=1, batch_size, clip_norm=1.0)``
  PyTorch  ``for batch: zero_grad; loss = lossfn(model(x)); loss.backward();
            clip_grad_norm_(params, 1.0); torch.optim.Adam.step()`` over the same data, batch size
            and shuffling (a fresh permutation per epoch), ragged batches through
            ``pack_padded_sequence`` as a PyTorch user would write it; the loss is the task's
            (``0.5 * MSELoss``: rnnfast's MSELoss is the half mean squared error; BCE with logits;
            cross-entropy),

each at the library's default thread count and at one thread (``rnnfast.set_num_threads`` /
``torch.set_num_threads``). Each of the four variants lives in its own worker process (so one
library's thread pool never spins beside the other's), the workers are kept warm and their epochs
alternated (A/B/C/D, A/B/C/D, ...); figures are medians over the repeats, wall time and the process's
CPU time. The rnnfast worker also times every call into the compiled core, so the report gives the
share of the epoch spent in the recurrent kernels and in all core calls.

Correctness before timing: every worker builds its model from the same rnnfast weights and reports
the loss and the global gradient norm of the first batch; each must match the rnnfast value to
``--tol`` (relative, 1e-4), else the task is reported FAILED and not timed.

Threading stress cases (LSTM H=256, B=1, T=100 inference, the issue's case, at default threads):
idle; with one busy competitor process per CPU; right after a PyTorch call each time (its OpenMP
pool spins ~10 ms after every call, in the same process); with a PyTorch thread computing beside it
in the same process; with onnxruntime's pool likewise when onnxruntime is installed. Each is
reported as the ratio to idle (target <= 2x with a competitor per core, the fair share; <= 1.5x
beside a spinning pool). CLI commands (demo; in the full run also gradcheck, diagnose) are timed at
default threads and at ``--threads 1``.

Examples
  python benchmarks/bench_e2e.py --quick                 # ~3 minutes on 2 cores
  python benchmarks/bench_e2e.py                         # ~10 minutes on 2 cores
  python benchmarks/bench_e2e.py --tasks adding charlm --repeats 5
  python benchmarks/bench_e2e.py --rnnfast-path /tmp/old/python   # another rnnfast checkout
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import math
import multiprocessing as mp
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

__all__ = ["main"]

HERE = Path(__file__).resolve().parent

# ==================================================================================================
# worker side (runs in a spawned process)
# ==================================================================================================


def _import_rnnfast(path: str | None) -> Any:
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


def _task_setup(rf: Any, task_name: str, frac: float) -> tuple[Any, dict[str, Any], Any, Any]:
    from rnnfast.tasks import get_task

    task = get_task(task_name)
    cfg = task.config()
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

    RECURRENT = ("rnn_forward", "lstm_forward", "gru_forward", "sequence_backward", "tbptt_grads")
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
    def __init__(self, task_name: str, threads: int | None, frac: float, path: str | None) -> None:
        self.rf = _import_rnnfast(path)
        rf = self.rf
        if threads is not None:
            rf.set_num_threads(threads)
        self.threads = rf.get_num_threads()
        self.task, self.cfg, self.train, self.model = _task_setup(rf, task_name, frac)
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
    ) -> None:
        import numpy as np
        import torch
        from torch import nn

        if threads is not None:
            torch.set_num_threads(threads)
        self.torch = torch
        self.threads = torch.get_num_threads()
        # the task's data and sizes come from rnnfast's task code (the weights from the rnnfast model)
        rf = _import_rnnfast(path)
        task, cfg, train, model = _task_setup(rf, task_name, frac)
        self.cfg = cfg
        self.mode = model.mode
        cell = type(model.rnn).__name__.lower()
        rnn_cls = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}[cell]
        kw: dict[str, Any] = {}
        if cell == "rnn":
            kw["nonlinearity"] = getattr(model.rnn, "nonlinearity", "tanh")
        emb = model.embedding

        class Net(nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.embedding = (
                    nn.Embedding(emb.num_embeddings, emb.embedding_dim) if emb is not None else None
                )
                self.rnn = rnn_cls(
                    model.rnn.input_size,
                    model.rnn.hidden_size,
                    num_layers=model.rnn.num_layers,
                    **kw,
                )
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
            runner: Any = _RnnfastRunner(spec["task"], spec["threads"], spec["frac"], spec["path"])
        else:
            runner = _TorchRunner(
                spec["task"], spec["threads"], spec["frac"], spec["path"], spec["weights"]
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


# ==================================================================================================
# fit epochs
# ==================================================================================================


def bench_task(ctx: Any, task: str, args: argparse.Namespace) -> dict[str, Any]:
    frac = args.frac
    variants = [("rnnfast", None), ("rnnfast", 1), ("torch", None), ("torch", 1)]
    if args.rnnfast_only:
        variants = variants[:2]
    workers: dict[tuple[str, int | None], Worker] = {}
    row: dict[str, Any] = {"task": task}
    try:
        base = Worker(
            ctx,
            {
                "lib": "rnnfast",
                "task": task,
                "threads": None,
                "frac": frac,
                "path": args.rnnfast_path,
            },
        )
        workers[("rnnfast", None)] = base
        weights = base.call("weights")
        for lib, th in variants[1:]:
            workers[(lib, th)] = Worker(
                ctx,
                {
                    "lib": lib,
                    "task": task,
                    "threads": th,
                    "frac": frac,
                    "path": args.rnnfast_path,
                    "weights": weights,
                },
            )
        # correctness: same loss and gradient norm on the first batch, from the same weights
        ref = base.call("check")
        row["check"] = {}
        ok = True
        for key, w in workers.items():
            got = w.call("check")
            err = max(abs(got[m] - ref[m]) / max(abs(ref[m]), 1e-12) for m in ("loss", "grad_norm"))
            row["check"][f"{key[0]}/{key[1] or 'default'}"] = err
            ok = ok and err <= args.tol
        row["check_ok"] = ok
        row["initial_loss"] = ref["loss"]
        if not ok:
            return row
        for w in workers.values():  # warm-up epoch (first-call costs, page faults, pools)
            w.call("epoch")
        samples: dict[str, list[dict[str, float]]] = {
            f"{k[0]}/{k[1] or 'default'}": [] for k in workers
        }
        for _ in range(args.repeats):
            for key, w in workers.items():
                samples[f"{key[0]}/{key[1] or 'default'}"].append(w.call("epoch"))
        med = {k: {m: statistics.median(s[m] for s in v) for m in v[0]} for k, v in samples.items()}
        row["threads"] = {f"{k[0]}/{k[1] or 'default'}": w.threads for k, w in workers.items()}
        row["median"] = med
        nan = {"wall": math.nan, "cpu": math.nan}
        rd, r1, td, t1 = (
            med.get(k, nan)["wall"]
            for k in ("rnnfast/default", "rnnfast/1", "torch/default", "torch/1")
        )
        row["torch_over_rnnfast_default"] = td / rd
        row["torch_over_rnnfast_1"] = t1 / r1
        row["rnnfast_1_over_default"] = r1 / rd
        row["torch_1_over_default"] = t1 / td
        row["kernel_rec_frac"] = med["rnnfast/default"]["kernel_rec"] / rd
        row["kernel_all_frac"] = med["rnnfast/default"]["kernel_all"] / rd
        row["kernel_rec_frac_1"] = med["rnnfast/1"]["kernel_rec"] / r1
        return row
    finally:
        for w in workers.values():
            w.close()


# ==================================================================================================
# threading stress cases
# ==================================================================================================

_STRESS = r"""
import json, statistics, sys, threading, time
sys.path[:0] = PATHS
import numpy as np
rf = IMPORT_RNNFAST()
from rnnfast import functional as F
H, B, T = 256, 1, 100
rng = np.random.default_rng(0)
x = rng.standard_normal((T, B, H), dtype=np.float32)
w_ih = rng.standard_normal((4 * H, H), dtype=np.float32) * 0.05
w_hh = rng.standard_normal((4 * H, H), dtype=np.float32) * 0.05
b = np.zeros(4 * H, np.float32)
import torch
ref_y = torch.nn.LSTM(H, H)
with torch.no_grad():
    ref_y.weight_ih_l0.copy_(torch.from_numpy(w_ih)); ref_y.weight_hh_l0.copy_(torch.from_numpy(w_hh))
    ref_y.bias_ih_l0.zero_(); ref_y.bias_hh_l0.zero_()
    expect = ref_y(torch.from_numpy(x))[0].numpy()
got = F.lstm_forward(x, None, None, w_ih, w_hh, b, b, training=False)[0]
err = float(np.abs(got - expect).max() / np.abs(expect).max())
assert err < 1e-4, f"LSTM inference differs from torch: {err}"
call = lambda: F.lstm_forward(x, None, None, w_ih, w_hh, b, b, training=False)
MODE = sys.argv[1]
SECONDS = float(sys.argv[2])
stop = threading.Event()
before = None
if MODE == "torch_before_each":
    a = torch.randn(256, 256)
    before = lambda: torch.mm(a, a)
elif MODE == "torch_thread":
    def spin():
        a = torch.randn(128, 128)
        while not stop.is_set():
            torch.mm(a, a)
    spinner = threading.Thread(target=spin, daemon=True)
    spinner.start()
elif MODE.startswith("ort_"):
    import onnxruntime as ort
    from onnx import helper, TensorProto
    node = helper.make_node("MatMul", ["a", "b"], ["c"])
    g = helper.make_graph([node], "g", [helper.make_tensor_value_info("a", TensorProto.FLOAT, [128, 128]),
        helper.make_tensor_value_info("b", TensorProto.FLOAT, [128, 128])], [helper.make_tensor_value_info("c", TensorProto.FLOAT, [128, 128])])
    sess = ort.InferenceSession(helper.make_model(g).SerializeToString())
    feed = {"a": np.ones((128, 128), np.float32), "b": np.ones((128, 128), np.float32)}
    def spin():
        while not stop.is_set():
            sess.run(None, feed)
    if MODE == "ort_before_each":
        before = lambda: sess.run(None, feed)
    else:
        spinner = threading.Thread(target=spin, daemon=True)
        spinner.start()
for _ in range(5):
    call()
times = []
end = time.perf_counter() + SECONDS
while time.perf_counter() < end or len(times) < 5:
    if before is not None:
        before()
    t = time.perf_counter()
    call()
    times.append(time.perf_counter() - t)
stop.set()
if MODE in ("torch_thread", "ort_thread"):
    spinner.join()
print(json.dumps({"median_ms": statistics.median(times) * 1e3, "n": len(times), "threads": rf.get_num_threads(), "err": err}))
sys.stdout.flush()
import os
os._exit(0)  # no interpreter teardown beside another runtime's pool threads
"""


def _stress_script(path: str | None) -> str:
    paths = repr([str(HERE)])
    return _STRESS.replace("PATHS", paths).replace(
        "IMPORT_RNNFAST()", f"__import__('bench_e2e')._import_rnnfast({path!r})"
    )


def _busy(stop_at: float) -> None:
    while time.time() < stop_at:
        pass


def bench_stress(args: argparse.Namespace) -> dict[str, Any]:
    script = _stress_script(args.rnnfast_path)
    modes = ["idle", "competitors", "torch_before_each", "torch_thread"]
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401

        modes += ["ort_before_each", "ort_thread"]
    except ImportError:
        pass
    ncpu = os.cpu_count() or 1
    out: dict[str, list[float]] = {m: [] for m in modes}
    for _ in range(args.stress_repeats):
        for mode in modes:
            comps = []
            if mode == "competitors":
                ctx = mp.get_context("spawn")
                comps = [
                    ctx.Process(
                        target=_busy, args=(time.time() + args.stress_seconds + 30,), daemon=True
                    )
                    for _ in range(ncpu)
                ]
                for p in comps:
                    p.start()
                time.sleep(0.5)
            try:
                proc = subprocess.run(
                    [
                        sys.executable,
                        "-c",
                        script,
                        "plain" if mode in ("idle", "competitors") else mode,
                        str(args.stress_seconds),
                    ],
                    capture_output=True,
                    text=True,
                    timeout=300,
                )
            finally:
                for p in comps:
                    p.kill()
                for p in comps:
                    p.join()
            if proc.returncode != 0:
                print(f"stress {mode}: exit {proc.returncode}: {proc.stderr[-500:]}", flush=True)
                out[mode].append(math.nan)
                continue
            out[mode].append(json.loads(proc.stdout.strip().splitlines()[-1])["median_ms"])
    med = {m: statistics.median([x for x in v if x == x] or [math.nan]) for m, v in out.items()}
    return {
        "median_ms": med,
        "ratio_to_idle": {m: med[m] / med["idle"] for m in modes},
        "samples_ms": out,
    }


# ==================================================================================================
# CLI commands
# ==================================================================================================


def bench_cli(args: argparse.Namespace) -> dict[str, Any]:
    cmds = [["demo"]] if args.quick else [["demo"], ["gradcheck"], ["diagnose"]]
    env = dict(os.environ)
    if args.rnnfast_path:
        env["PYTHONPATH"] = os.pathsep.join([str(HERE), env.get("PYTHONPATH", "")])
    res: dict[str, Any] = {}
    for cmd in cmds:
        t: dict[str, list[float]] = {"default": [], "1": []}
        for _ in range(args.cli_repeats):
            for th in ("default", "1"):
                argv = cmd + ([] if th == "default" else ["--threads", "1"])
                if args.rnnfast_path:
                    code = (
                        f"import sys, bench_e2e; bench_e2e._import_rnnfast({args.rnnfast_path!r}); "
                        f"from rnnfast.cli import main; sys.exit(main({argv!r}))"
                    )
                    full = [sys.executable, "-c", code]
                else:
                    full = [sys.executable, "-m", "rnnfast", *argv]
                t0 = time.perf_counter()
                proc = subprocess.run(full, capture_output=True, text=True, timeout=1800, env=env)
                dt = time.perf_counter() - t0
                if proc.returncode != 0:
                    raise RuntimeError(
                        f"{' '.join(argv)}: exit {proc.returncode}\n{proc.stderr[-2000:]}"
                    )
                t[th].append(dt)
        res[" ".join(cmd)] = {
            "default_s": statistics.median(t["default"]),
            "one_s": statistics.median(t["1"]),
            "one_over_default": statistics.median(t["1"]) / statistics.median(t["default"]),
        }
    return res


# ==================================================================================================
# report
# ==================================================================================================


def machine() -> dict[str, Any]:
    info: dict[str, Any] = {"cpus": os.cpu_count(), "python": platform.python_version()}
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        for line in out.splitlines():
            k, _, v = line.partition(":")
            if k.strip() in (
                "Model name",
                "CPU family",
                "Model",
                "Thread(s) per core",
                "Hypervisor vendor",
                "L2 cache",
                "L3 cache",
            ):
                info[k.strip()] = v.strip()
        flags = next((ln for ln in out.splitlines() if ln.startswith("Flags")), "")
        info["avx2"] = " avx2" in flags
        info["avx512f"] = " avx512f" in flags
    except OSError:
        pass
    info["loadavg_start"] = os.getloadavg()
    return info


def markdown(report: dict[str, Any]) -> str:
    m = report["machine"]
    lines = [
        f"## End-to-end run: rnnfast fit vs PyTorch ({report['date']})",
        "",
        f"- machine: {m.get('Model name')} (family {m.get('CPU family')}, model {m.get('Model')}), "
        f"{m['cpus']} CPUs, AVX2 {m.get('avx2')}, AVX-512 {m.get('avx512f')}; "
        f"load average at start {tuple(round(x, 2) for x in m['loadavg_start'])}, at end "
        f"{tuple(round(x, 2) for x in report['loadavg_end'])}",
        f"- rnnfast {report['rnnfast']} ({report['rnnfast_path'] or 'installed'}), torch {report['torch']}, "
        f"command: `{report['command']}`",
        f"- one epoch, median of {report['args']['repeats']} alternated repeats after a warm-up epoch"
        + (
            f", {report['args']['frac']:.0%} of each training set"
            if report["args"]["frac"] < 1
            else ""
        ),
        "",
        "| task | cell H | threads (rf/torch) | rnnfast default s | rnnfast 1t s | torch default s | torch 1t s "
        "| torch/rf default | torch/rf 1t | rf 1t/default | rf CPU s default / 1t "
        "| kernels/fit (recurrent, all core) | check |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in report["tasks"]:
        if not r.get("check_ok"):
            lines.append(
                f"| {r['task']} | | | | | | | | | | | | FAILED {r.get('check') or r.get('error')} |"
            )
            continue
        md = dict(r["median"])
        md.setdefault("torch/default", {"wall": math.nan})
        md.setdefault("torch/1", {"wall": math.nan})
        r["threads"].setdefault("torch/default", "-")
        lines.append(
            f"| {r['task']} | {r['cell']} {r['hidden']} | {r['threads']['rnnfast/default']}/{r['threads']['torch/default']} "
            f"| {md['rnnfast/default']['wall']:.3f} | {md['rnnfast/1']['wall']:.3f} "
            f"| {md['torch/default']['wall']:.3f} | {md['torch/1']['wall']:.3f} "
            f"| **{r['torch_over_rnnfast_default']:.2f}** | {r['torch_over_rnnfast_1']:.2f} "
            f"| **{r['rnnfast_1_over_default']:.2f}** "
            f"| {md['rnnfast/default']['cpu']:.3f} / {md['rnnfast/1']['cpu']:.3f} "
            f"| {r['kernel_rec_frac']:.2f}, {r['kernel_all_frac']:.2f} "
            f"| ok ({max(r['check'].values()):.1e}) |"
        )
    if report.get("stress"):
        s = report["stress"]
        lines += [
            "",
            "Threading stress, LSTM H=256 B=1 T=100 inference at default threads (median ms per call, ratio to idle):",
            "",
            "| case | ms | x idle |",
            "|---|---|---|",
        ]
        names = {
            "idle": "idle",
            "competitors": "a busy process per CPU",
            "torch_before_each": "a torch call before each (its pool spinning)",
            "torch_thread": "a torch thread computing in the same process",
            "ort_before_each": "an onnxruntime run before each (its pool spinning)",
            "ort_thread": "an onnxruntime thread computing in the same process",
        }
        for k, v in s["median_ms"].items():
            lines.append(f"| {names.get(k, k)} | {v:.2f} | {s['ratio_to_idle'][k]:.2f} |")
    if report.get("cli"):
        lines += [
            "",
            "| CLI command | default threads s | --threads 1 s | 1t/default |",
            "|---|---|---|---|",
        ]
        for k, v in report["cli"].items():
            lines.append(
                f"| `{k}` | {v['default_s']:.1f} | {v['one_s']:.1f} | **{v['one_over_default']:.2f}** |"
            )
    return "\n".join(lines) + "\n"


def _is_sequence_task(rf: Any, name: str) -> bool:
    task, _cfg, _train, model = _task_setup(rf, name, 0.01)
    return isinstance(model, rf.SequenceModel)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument(
        "--quick",
        action="store_true",
        help="25%% of each training set, 2 repeats, fewer stress samples, demo only",
    )
    ap.add_argument(
        "--tasks", nargs="*", default=None, help="task names (default: every built-in task)"
    )
    ap.add_argument("--repeats", type=int, default=None)
    ap.add_argument(
        "--frac", type=float, default=None, help="fraction of each training set per epoch"
    )
    ap.add_argument("--tol", type=float, default=1e-4)
    ap.add_argument("--no-stress", action="store_true")
    ap.add_argument(
        "--rnnfast-only", action="store_true", help="skip the PyTorch loops (before/after runs)"
    )
    ap.add_argument("--no-cli", action="store_true")
    ap.add_argument("--stress-seconds", type=float, default=None)
    ap.add_argument(
        "--rnnfast-path", default=None, help="import rnnfast from this python/ folder instead"
    )
    ap.add_argument("--out", default=str(HERE / "out" / "e2e"))
    args = ap.parse_args(argv)
    args.repeats = args.repeats or (2 if args.quick else 3)
    args.frac = args.frac or (0.25 if args.quick else 1.0)
    args.stress_seconds = args.stress_seconds or (1.0 if args.quick else 2.0)
    args.stress_repeats = 2 if args.quick else 3
    args.cli_repeats = 1 if args.quick else 2

    sys.path.insert(0, str(HERE))
    rf = _import_rnnfast(args.rnnfast_path)
    import torch

    from rnnfast.tasks import get_task, list_tasks

    tasks = args.tasks or list_tasks()
    ctx = mp.get_context("spawn")
    report: dict[str, Any] = {
        "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine(),
        "rnnfast": rf.__version__,
        "rnnfast_path": args.rnnfast_path,
        "rnnfast_build": {
            k: v
            for k, v in rf.build_info().items()
            if k in ("variant", "num_threads", "omp_spin_count")
        },
        "torch": torch.__version__,
        "command": "python " + " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "args": {"repeats": args.repeats, "frac": args.frac},
        "tasks": [],
    }
    for name in tasks:
        cfg = get_task(name).config()
        t0 = time.perf_counter()
        if not _is_sequence_task(rf, name):
            print(
                f"{name:16s} skipped: its model is not a SequenceModel (no one-epoch torch twin here)"
            )
            continue
        row = {}
        for _attempt in range(2):  # a worker that died (EOFError) is retried once
            try:
                row = bench_task(ctx, name, args)
                break
            except Exception as exc:  # noqa: BLE001 - reported in the table
                row = {
                    "task": name,
                    "check_ok": False,
                    "error": f"{type(exc).__name__}: {str(exc)[:300]}",
                }
                if not isinstance(exc, EOFError):
                    break
        row["cell"], row["hidden"] = cfg["cell"], cfg["hidden"]
        row["seconds"] = time.perf_counter() - t0
        report["tasks"].append(row)
        if row.get("check_ok"):
            print(
                f"{name:16s} torch/rf default {row['torch_over_rnnfast_default']:5.2f}  1t {row['torch_over_rnnfast_1']:5.2f}"
                f"  rf 1t/default {row['rnnfast_1_over_default']:5.2f}  kernels/fit {row['kernel_rec_frac']:.2f}"
                f"  ({row['seconds']:.0f} s)",
                flush=True,
            )
        else:
            print(f"{name:16s} FAILED {row.get('check') or row.get('error')}", flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench_e2e.json").write_text(json.dumps(report, indent=1, default=str))
    if not args.no_stress:
        report["stress"] = bench_stress(args)
        print("stress", json.dumps(report["stress"]["ratio_to_idle"]), flush=True)
    if not args.no_cli:
        report["cli"] = bench_cli(args)
        print("cli", json.dumps(report["cli"]), flush=True)
    report["loadavg_end"] = os.getloadavg()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench_e2e.json").write_text(json.dumps(report, indent=1, default=str))
    md = markdown(report)
    (out / "bench_e2e.md").write_text(md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
