"""``rnnfast suggest``: next-word suggestions from a suggest checkpoint."""

from __future__ import annotations

import argparse
from typing import Any

from ._common import CLIError, _positive_int

__all__ = ["add_parser", "cmd_suggest"]


def cmd_suggest(args: argparse.Namespace) -> int:
    """Top-k next words after a prompt from a ``suggest`` checkpoint."""
    from ..io import load
    from ..modules import SequenceModel
    from ..tasks.suggest import suggest_words

    try:
        ckpt = load(args.checkpoint)
    except FileNotFoundError:
        raise CLIError(f"{args.checkpoint}: no such checkpoint") from None
    except ValueError as exc:
        raise CLIError(str(exc)) from None
    vocab = ckpt.meta.get("vocab")
    if (
        ckpt.meta.get("task") != "suggest"
        or not isinstance(vocab, list)
        or not all(isinstance(w, str) for w in vocab)
    ):
        raise CLIError(
            f"{args.checkpoint}: not a suggest checkpoint (train one with "
            "`python -m rnnfast train --task suggest --save PATH`)"
        )
    try:
        model = ckpt.build_model()  # rnnfast's own classes only; config and weights validated
    except (ValueError, TypeError, MemoryError) as exc:
        raise CLIError(f"{args.checkpoint}: {exc}") from None
    if (
        not isinstance(model, SequenceModel)
        or model.embedding is None
        or model.embedding.num_embeddings != len(vocab)
        or model.head.out_features != len(vocab)
    ):
        raise CLIError(
            f"{args.checkpoint}: expected a word model over meta.vocab ({len(vocab)} words)"
        )
    try:
        words = suggest_words(model, vocab, args.prompt, k=args.k)
    except ValueError as exc:
        raise CLIError(str(exc)) from None
    for word, p in words:
        print(f"{word}\t{p:.3f}")
    return 0


def add_parser(sub: Any) -> None:
    """The ``suggest`` subcommand on ``sub`` (argparse's subparsers)."""
    sg = sub.add_parser("suggest", help="next-word suggestions from a suggest checkpoint")
    sg.add_argument("checkpoint", help="checkpoint written by `train --task suggest --save PATH`")
    sg.add_argument("prompt", help="the words typed so far, e.g. 'the value of the'")
    sg.add_argument("--k", type=_positive_int, default=5, help="how many words (default 5)")
    sg.set_defaults(func=cmd_suggest)
