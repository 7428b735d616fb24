"""The machine description and the markdown report of ``benchmarks/bench_e2e.py``."""

from __future__ import annotations

import math
import os
import platform
import subprocess
from typing import Any

__all__ = ["machine", "markdown"]


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
