"""Output: the console line and markdown row of a grid row, the targets, JSON, markdown, plots."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

from .common import (
    CELLS,
    MODES,
    TARGET_BW,
    TARGET_FIRST_CALL,
    TARGET_GEMM,
    TARGET_GRU_RNN_TRAIN,
    TARGET_LARGE,
    TARGET_MEM_FLAT,
    TARGET_SMALL,
    TARGET_THREADS,
)
from .impls import Row
from .variants import VariantRow, variants_markdown

__all__ = [
    "fmt",
    "markdown_report",
    "memory_markdown",
    "plot",
    "row_console",
    "row_markdown",
    "targets_summary",
    "write_outputs",
]


def fmt(v: float | None, spec: str = ".2f") -> str:
    return "-" if v is None else format(v, spec)


def _pct(v: float | None, spec: str = ".0f") -> str:
    return fmt(None if v is None else 100.0 * v, spec)


def _md_row(cells: list[Any]) -> str:
    """A markdown table row from a list of already formatted cells."""
    return "| " + " | ".join(str(c) for c in cells) + " |"


TABLE_COLUMNS = [
    "cell", "H", "B", "mode", "thr", "rnnfast ms", "torch ms", "ref ms", "x torch", "rnnfast GF/s",
    "torch GF/s", "limit GF/s", "% limit", "B=1 weight GB/s", "bw (level) GB/s", "% bw", "err",
]  # fmt: skip
TABLE_HEADER = _md_row(TABLE_COLUMNS)


def row_markdown(r: Row) -> str:
    head = [r.cell, r.hidden, r.batch, r.mode, r.threads]
    if r.status != "ok":
        return _md_row(head + [f"FAILED: {r.message}"] + [""] * (len(TABLE_COLUMNS) - 6))
    bw = "-" if r.bw_gbs is None else f"{r.bw_gbs:.1f} ({r.bw_level})"
    return _md_row(
        head
        + [fmt(r.rnnfast_ms, ".3f"), fmt(r.torch_ms, ".3f"), fmt(r.reference_ms, ".1f")]
        + [fmt(r.speedup), fmt(r.rnnfast_gflops, ".1f"), fmt(r.torch_gflops, ".1f")]
        + [fmt(r.limit_gflops, ".1f"), _pct(r.frac_limit), fmt(r.weight_gbs, ".1f"), bw]
        + [_pct(r.frac_bw), fmt(r.error, ".1e")]
    )


def row_console(r: Row) -> str:
    head = f"{r.cell:4s} H={r.hidden:<5d} B={r.batch:<3d} {r.mode:9s} thr={r.threads}"
    if r.status != "ok":
        return f"{head}  FAILED  {r.message}"
    extra = ""
    if r.frac_bw is not None:
        extra = f"  W {r.weight_gbs:6.1f} GB/s = {100 * r.frac_bw:3.0f}% of {r.bw_level}"
    ref = f"  ref {r.reference_ms:8.2f}" if r.reference_ms is not None else ""
    return (
        f"{head}  rnnfast {r.rnnfast_ms:9.3f} ms  torch {fmt(r.torch_ms, '9.3f')} ms  "
        f"x{fmt(r.speedup, '5.2f')}  {r.rnnfast_gflops:6.1f} GF/s "
        f"({_pct(r.frac_limit, '3.0f')}% of sgemm)"
        f"{extra}{ref}  err {r.error:.1e}"
    )


def targets_summary(
    rows: list[Row], first: list[dict[str, Any]], memory: dict[str, Any] | None
) -> list[dict[str, Any]]:
    """Evaluate the issue-4 targets on the rows measured (no rows: 'not measured')."""
    ok = [r for r in rows if r.status == "ok"]
    out: list[dict[str, Any]] = []

    def add(
        name: str, target: str, values: list[tuple[float, str]], thresh: float, higher: bool = True
    ) -> None:
        if not values:
            out.append(
                {
                    "target": name,
                    "goal": target,
                    "met": None,
                    "worst": None,
                    "where": "not measured",
                    "n": 0,
                    "n_met": 0,
                }
            )
            return
        worst = min(values) if higher else max(values)
        n_met = sum(1 for v, _ in values if (v >= thresh if higher else v <= thresh))
        out.append(
            {
                "target": name,
                "goal": target,
                "met": n_met == len(values),
                "worst": worst[0],
                "where": worst[1],
                "n": len(values),
                "n_met": n_met,
            }
        )

    def tag(r: Row) -> str:
        return f"{r.cell} H={r.hidden} B={r.batch} {r.mode} thr={r.threads}"

    add(
        "B in {1,16}, H 64..512: speedup vs PyTorch",
        ">= 3x",
        [(r.speedup, tag(r)) for r in ok if r.batch in (1, 16) and r.hidden <= 512 and r.speedup],
        TARGET_SMALL,
    )
    add(
        "B=1: weight bytes/s vs measured L2/L3 bandwidth",
        ">= 70%",
        [
            (r.frac_bw, tag(r))
            for r in ok
            if r.batch == 1 and r.hidden <= 512 and r.frac_bw is not None
        ],
        TARGET_BW,
    )
    add(
        "B=64, H 256..1024: speedup vs PyTorch",
        ">= 1.0x",
        [(r.speedup, tag(r)) for r in ok if r.batch == 64 and r.hidden >= 256 and r.speedup],
        TARGET_LARGE,
    )
    add(
        "B=64, H 256..1024: GFLOP/s vs same-run sgemm",
        ">= 0.8",
        [
            (r.frac_limit, tag(r))
            for r in ok
            if r.batch == 64 and r.hidden >= 256 and r.frac_limit is not None
        ],
        TARGET_GEMM,
    )
    add(
        "GRU and RNN training, any shape: speedup vs PyTorch",
        ">= 1.5x",
        [
            (r.speedup, tag(r))
            for r in ok
            if r.cell in ("gru", "rnn") and r.mode == "training" and r.speedup
        ],
        TARGET_GRU_RNN_TRAIN,
    )
    by_key = {(r.cell, r.hidden, r.batch, r.mode, r.threads): r for r in ok}
    scal = []
    for (cell, h, b, mode, thr), r2 in by_key.items():
        if thr == 2 and b >= 16 and (cell, h, b, mode, 1) in by_key:
            r1 = by_key[(cell, h, b, mode, 1)]
            if r1.rnnfast_ms and r2.rnnfast_ms:
                scal.append((r1.rnnfast_ms / r2.rnnfast_ms, f"{cell} H={h} B={b} {mode}"))
    add("2 threads vs 1 thread at B >= 16 (rnnfast)", ">= 1.7x", scal, TARGET_THREADS)
    add(
        "first call after import / steady state",
        "<= 1.2x",
        [
            (f["ratio"], f"{f['cell']} {f['mode']} H={f['hidden']} B={f['batch']}")
            for f in first
            if "ratio" in f
        ],
        TARGET_FIRST_CALL,
        higher=False,
    )
    if memory is not None:
        vals = []
        for t in memory.get("tbptt", []):
            if "peak_vs_1x" in t:
                vals.append((abs(t["peak_vs_1x"] - 1.0), f"{t['cell']} x{t['mult']}"))
        add(
            "TBPTT peak RSS as the stream grows 100x (|ratio - 1|)",
            "<= 0.10",
            vals,
            TARGET_MEM_FLAT,
            higher=False,
        )
    return out


def write_outputs(
    out_dir: Path,
    meta: dict[str, Any],
    rows: list[Row],
    first: list[dict[str, Any]],
    memory: dict[str, Any] | None,
    variants: list[VariantRow] | None = None,
) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    targets = targets_summary(rows, first, memory)
    doc = {
        "meta": meta,
        "rows": [asdict(r) for r in rows],
        "variants": [asdict(r) for r in variants or []],
        "first_call": first,
        "memory": memory,
        "targets": targets,
    }
    (out_dir / "bench.json").write_text(json.dumps(doc, indent=1, default=str))
    md = markdown_report(meta, rows, first, memory, targets)
    if variants:
        md += "\n".join(variants_markdown(variants)) + "\n"
    (out_dir / "bench.md").write_text(md)
    try:
        plot(out_dir, rows)
    except (
        Exception
    ) as exc:  # matplotlib missing or a backend problem: the numbers are written anyway
        print(f"(plot skipped: {type(exc).__name__}: {exc})")
    print(f"\nwrote {out_dir}/bench.json, bench.md, bench_speedup.png, bench_efficiency.png")


def markdown_report(
    meta: Mapping[str, Any],
    rows: list[Row],
    first: list[dict[str, Any]],
    memory: Mapping[str, Any] | None,
    targets: list[dict[str, Any]],
) -> str:
    m = meta["machine"]
    lim = meta["limits"]
    caches = ", ".join(f"{k} {v // 1024} KiB" for k, v in m.get("caches", {}).items())
    lines = [
        f"# rnnfast benchmark ({meta['date']})",
        "",
        f"- machine: {m.get('cpu_model', '?')}, {m.get('logical_cpus')} logical CPUs, caches "
        f"{caches}; SIMD flags: {' '.join(m.get('simd_flags', []))}",
        f"- rnnfast: {meta.get('rnnfast_build', {})}",
        f"- torch {meta.get('torch_version')}, numpy {meta.get('numpy_version')}; "
        f"impl `{meta['impl']}`",
        f"- command: `{meta['command']}`",
        f"- load average at start {meta.get('load_start')}, at end {meta.get('load_end')} "
        "(the machine is shared: figures are medians of alternated runs)",
        f"- T = {meta['steps']}, I = H, float32; median of {meta['repeats']} alternated samples "
        "after warm-up",
        "- FLOPs = 2*T*B*G*H*(I+H) (input + recurrent GEMMs), x3 for training; limit = same-run "
        f"sgemm (best of torch.mm / numpy @, square n = {meta['gemm_n']})",
        "- B=1 weight bytes per call: inference 4*G*H*(T*H+I), training 4*G*H*(2*T*H+3*I); "
        "bw = measured read bandwidth of the cache level holding one thread's W_hh slice",
        "",
        "## Machine limits measured in this run",
        "",
        _md_row(["threads", "sgemm GFLOP/s (torch / numpy)", "L1 GB/s", "L2 GB/s", "L3 GB/s",
                 "DRAM GB/s"]),
        _md_row(["---"] * 6),
    ]  # fmt: skip
    for thr, g in lim["sgemm"].items():
        bw = lim["bandwidth"].get(thr, {})
        gemm = f"{g['gflops']:.1f} ({fmt(g.get('torch_gflops'), '.1f')} / {g['numpy_gflops']:.1f})"
        levels = [fmt(bw.get(k), ".1f") for k in ("L1", "L2", "L3", "DRAM")]
        lines.append(_md_row([thr, gemm, *levels]))
    if not rows and not first:  # the cell-variant rows alone (bench.py --variants)
        return "\n".join(lines[: lines.index("## Machine limits measured in this run")]) + "\n"
    lines += ["", "## Targets (issue 4)", ""]
    lines += [_md_row(["target", "goal", "met", "worst", "where", "rows met"])]
    lines += [_md_row(["---"] * 6)]
    for t in targets:
        met = "n/a" if t["met"] is None else ("yes" if t["met"] else "no")
        lines.append(
            _md_row([t["target"], t["goal"], met, fmt(t["worst"], ".2f"), t["where"],
                     f"{t['n_met']}/{t['n']}"])
        )  # fmt: skip
    lines += ["", "## Results", "", TABLE_HEADER, _md_row(["---"] * len(TABLE_COLUMNS))]
    lines += [row_markdown(r) for r in rows]
    if first:
        cols = ["cell", "mode", "H", "B", "first ms", "steady ms", "ratio", "import s"]
        lines += ["", "## First call after import (fresh process, 1 thread)", ""]
        lines += [_md_row(cols), _md_row(["---"] * len(cols))]
        for f in first:
            head = [f["cell"], f["mode"], f["hidden"], f["batch"]]
            if "ratio" in f:
                vals = [f"{f['first_ms']:.3f}", f"{f['steady_ms']:.3f}", f"{f['ratio']:.2f}",
                        f"{f['import_s']:.2f}"]  # fmt: skip
            else:
                vals = [f"error: {f.get('error')}", "", "", ""]
            lines.append(_md_row(head + vals))
    if memory:
        lines += memory_markdown(memory)
    return "\n".join(lines) + "\n"


def memory_markdown(memory: Mapping[str, Any]) -> list[str]:
    cols = ["cell", "H", "B", "impl", "first step MB", "second step MB", "inputs MB"]
    lines = ["", "## Memory: peak RSS growth of one training step (fresh process, 1 thread)", ""]
    lines += [_md_row(cols), _md_row(["---"] * len(cols))]
    for s in memory.get("step", []):
        head = [s["cell"], s["hidden"], s["batch"], s["impl"]]
        if "error" in s:
            lines.append(_md_row(head + [f"error: {s['error'][:80]}", "", ""]))
        else:
            vals = [s["first"]["peak_growth_mb"], s["second"]["peak_growth_mb"], s["inputs_mb"]]
            lines.append(_md_row(head + [f"{v:.1f}" for v in vals]))
    cols = ["cell", "H", "B", "stream steps", "API", "peak RSS MB", "growth MB", "vs 1x"]
    lines += ["", "## Memory: TBPTT training as the stream grows", ""]
    lines += [_md_row(cols), _md_row(["---"] * len(cols))]
    for t in memory.get("tbptt", []):
        head = [t["cell"], t["hidden"], t["batch"], t["steps"]]
        if "error" in t:
            lines.append(_md_row(head + [f"error: {t['error'][:80]}", "", "", ""]))
        else:
            vals = [t["api"], f"{t['peak_mb']:.1f}", f"{t['peak_growth_mb']:.1f}",
                    f"{t['peak_vs_1x']:.3f}"]  # fmt: skip
            lines.append(_md_row(head + vals))
    return lines


def plot(out_dir: Path, rows: list[Row]) -> None:
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [r for r in rows if r.status == "ok"]
    if not ok:
        return
    cells = [c for c in CELLS if any(r.cell == c for r in ok)]
    modes = [m for m in MODES if any(r.mode == m for r in ok)]
    batches = sorted({r.batch for r in ok})
    thr_list = sorted({r.threads for r in ok})
    colors = dict(zip(batches, ["tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple"]))
    styles = {1: "-", 2: "--", 4: ":"}

    for kind, ylabel, fname in (
        ("speedup", "speed-up vs PyTorch (x)", "bench_speedup.png"),
        ("frac_limit", "GFLOP/s / same-run sgemm GFLOP/s", "bench_efficiency.png"),
    ):
        fig, axes = plt.subplots(
            len(modes),
            len(cells),
            figsize=(4.2 * len(cells), 3.4 * len(modes)),
            squeeze=False,
            sharex=True,
        )
        for mi, mode in enumerate(modes):
            for ci, cell in enumerate(cells):
                ax = axes[mi][ci]
                for b in batches:
                    for thr in thr_list:
                        pts = sorted(
                            (r.hidden, getattr(r, kind))
                            for r in ok
                            if r.cell == cell
                            and r.mode == mode
                            and r.batch == b
                            and r.threads == thr
                            and getattr(r, kind) is not None
                        )
                        if pts:
                            ax.plot(
                                [p[0] for p in pts],
                                [p[1] for p in pts],
                                styles.get(thr, "-."),
                                marker="o",
                                color=colors[b],
                                label=f"B={b}, {thr} thr",
                            )
                if kind == "speedup":
                    ax.axhline(1.0, color="gray", lw=0.8)
                    ax.axhline(
                        TARGET_SMALL, color="tab:red", lw=0.8, ls=":", label="3x target (B<=16)"
                    )
                    ax.set_yscale("log")
                    ax.yaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
                    ax.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
                else:
                    ax.axhline(
                        TARGET_GEMM, color="tab:red", lw=0.8, ls=":", label="0.8 target (B=64)"
                    )
                ax.set_xscale("log", base=2)
                ax.set_title(f"{cell} {mode}")
                ax.set_xlabel("H (= I), T = 100")
                if ci == 0:
                    ax.set_ylabel(ylabel)
                ax.grid(True, which="both", alpha=0.3)
        handles, labels = axes[0][0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 7), fontsize=8)
        fig.tight_layout(rect=(0, 0.07, 1, 1))
        fig.savefig(out_dir / fname, dpi=110)
        plt.close(fig)
