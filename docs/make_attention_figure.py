"""Regenerate docs/attention_dates.png: where the ``dates`` translator looks while it writes.

Trains the ``dates`` task with its defaults (a GRU Seq2Seq with Luong "general" attention; about
30 s of CPU on one core) or loads a checkpoint of it, translates one date written in words with
greedy decoding, and draws the attention weights with :func:`rnnfast.seq2seq.plot_attention`.
Needs matplotlib (rnnfast[plot]). Run: ``python docs/make_attention_figure.py [dates.npz]`` (a
checkpoint from ``python -m rnnfast train --task dates --save dates.npz``).
"""

from __future__ import annotations

import sys
from pathlib import Path

import rnnfast
from rnnfast.io import load
from rnnfast.seq2seq import plot_attention
from rnnfast.tasks import run_task
from rnnfast.tasks.dates import TGT_VOCAB, decode_iso, encode_source

__all__: list[str] = []

HERE = Path(__file__).resolve().parent
TEXT = "the fourth of july, nineteen seventy-six"


def main() -> None:
    rnnfast.set_num_threads(1)
    if len(sys.argv) > 1:
        model = load(sys.argv[1]).build_model()
    else:
        res = run_task("dates")
        print({k: round(v, 4) for k, v in res.final.items()}, f"{res.cpu_seconds:.1f} s CPU")
        model = res.model
    src, lengths = encode_source([TEXT])
    ids, weights = model.greedy(src, lengths, max_len=11, return_attention=True)
    iso = decode_iso(ids[:, 0])
    out_tokens = [TGT_VOCAB[int(i)] for i in ids[:, 0]]
    path = HERE / "attention_dates.png"
    plot_attention(
        weights[:, 0, :],
        list(TEXT),
        out_tokens,
        str(path),
        title=f"{TEXT!r} -> {iso}",
    )
    print(f"{TEXT!r} -> {iso}; wrote {path}")


if __name__ == "__main__":
    main()
