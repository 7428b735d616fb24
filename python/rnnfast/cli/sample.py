"""``rnnfast sample``: text from a charlm checkpoint."""

from __future__ import annotations

import argparse
from typing import Any

from ._common import CLIError, _positive_float, _positive_int, add_common

__all__ = ["add_parser", "cmd_sample"]


def cmd_sample(args: argparse.Namespace) -> int:
    from ..io import load
    from ..tasks.charlm import Vocab, sample_text

    try:
        ckpt = load(args.checkpoint)
    except FileNotFoundError:
        raise CLIError(f"{args.checkpoint}: no such checkpoint") from None
    except ValueError as exc:
        raise CLIError(str(exc)) from None
    vocab_chars = ckpt.meta.get("vocab")
    if ckpt.meta.get("task") != "charlm" or not isinstance(vocab_chars, str):
        raise CLIError(
            f"{args.checkpoint}: not a charlm checkpoint (train one with "
            "`python -m rnnfast train --task charlm --save PATH`)"
        )
    try:
        vocab = Vocab(vocab_chars)
    except ValueError as exc:
        raise CLIError(f"{args.checkpoint}: meta.vocab: {exc}") from None
    from ..modules import SequenceModel

    try:
        model = ckpt.build_model()  # rnnfast's own classes only; config and weights validated
    except (ValueError, TypeError) as exc:
        raise CLIError(
            str(exc) if args.checkpoint in str(exc) else f"{args.checkpoint}: {exc}"
        ) from None
    except MemoryError as exc:
        raise CLIError(
            f"{args.checkpoint}: the model config does not fit in memory: {exc}"
        ) from None
    if not isinstance(model, SequenceModel) or model.embedding is None:
        raise CLIError(
            f"{args.checkpoint}: expected a character model (a SequenceModel with an embedding), "
            f"got {type(model).__name__}"
        )
    sizes = {
        "embedding": model.embedding.num_embeddings,
        "output": model.head.out_features,
    }
    if any(n != len(vocab) for n in sizes.values()):
        raise CLIError(
            f"{args.checkpoint}: meta.vocab has {len(vocab)} characters but the model's "
            + " and ".join(f"{k} size is {v}" for k, v in sizes.items())
        )
    if args.precision is not None:
        try:  # the rnn's products (generation steps on one frozen bf16 pack, see generate)
            model.rnn.precision = args.precision
        except ValueError as exc:
            raise CLIError(f"--precision: {exc}".replace("precision: ", "", 1)) from None
    try:
        text = sample_text(
            model,
            vocab,
            prime=args.prime,
            length=args.length,
            temperature=args.temperature,
            seed=args.seed,
        )
    except ValueError as exc:
        raise CLIError(str(exc)) from None
    print(text)
    return 0


def add_parser(sub: Any) -> None:
    """The ``sample`` subcommand on ``sub`` (argparse's subparsers)."""
    sa = sub.add_parser("sample", help="generate text from a charlm checkpoint")
    sa.add_argument("checkpoint", help="checkpoint written by `train --task charlm --save PATH`")
    sa.add_argument("--prime", default="The ", help="text to start from (default %(default)r)")
    sa.add_argument("--length", type=_positive_int, default=300, help="characters to generate")
    sa.add_argument("--temperature", type=_positive_float, default=0.8)
    sa.add_argument(
        "--precision",
        choices=["fp32", "bf16"],
        default=None,
        help="products of the recurrent layers (default: the checkpoint's, else fp32); bf16: "
        "bf16 operands with fp32 accumulation, generated on weights packed to bf16 once",
    )
    add_common(sa)
    sa.set_defaults(func=cmd_sample)
