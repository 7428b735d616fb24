"""Tests of the applications of issue 16: image captioning (``caption``), next-word suggestion
(``suggest``) and machine translation with :class:`rnnfast.seq2seq.Seq2Seq` (``dates``).

Each task learns with a fixed seed at bounded sizes and beats its stated baseline; data are
recomputed independently where cheap. Tasks on data from an optional extra are skipped with the
reason when the extra is missing.
"""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from rnnfast.tasks import get_task, list_tasks, run_task

__all__: list[str] = []

HAVE_SKLEARN = importlib.util.find_spec("sklearn") is not None
needs_sklearn = pytest.mark.skipif(
    not HAVE_SKLEARN, reason="scikit-learn (the rnnfast[data] extra) is not installed"
)


# --------------------------------------------------------------------------------------------------
# caption
# --------------------------------------------------------------------------------------------------


@needs_sklearn
def test_caption_data_match_the_digits() -> None:
    from sklearn.datasets import load_digits

    from rnnfast.tasks.caption import CAPTION_VOCAB

    task = get_task("caption")
    train, val = task.make_data(seed=0)
    digits = load_digits()
    assert train.n + val.n == len(digits.target)
    for split in (train, val):
        assert split.x.shape == (2, split.n, 64 + len(CAPTION_VOCAB))
        assert split.x.dtype == np.float32 and split.y.dtype == np.int64
        words = [[CAPTION_VOCAB[i] for i in col] for col in split.y.T]
        for w, d in zip(words, split.info["digits"]):
            names = "zero one two three four five six seven eight nine".split()
            assert w == [names[d], "odd" if d % 2 else "even"]
        # step 0 sees <bos>, step 1 the true first word (teacher forcing)
        assert np.all(split.x[0, :, 64] == 1.0)
        assert np.array_equal(split.x[1, :, 64:].argmax(axis=1), split.y[0])
        np.testing.assert_array_equal(split.x[0, :, :64], split.info["features"])
    assert task.make_data(seed=1)[1].info["digits"].tolist() != val.info["digits"].tolist()


@needs_sklearn
def test_caption_learns_beyond_the_majority_baseline() -> None:
    from rnnfast.tasks.caption import caption_images

    res = run_task("caption", epochs=6)
    final = res.final
    assert final["baseline_majority_accuracy"] < 0.35
    assert final["val_accuracy"] > 0.9, final
    assert final["val_caption_accuracy"] > 0.85, final
    caps = caption_images(res.model, res.val.info["features"][:5])
    assert caps.shape == (2, 5) and caps.dtype == np.int64


def test_caption_without_sklearn_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    from rnnfast.tasks import caption

    monkeypatch.setitem(sys.modules, "sklearn", None)
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)
    with pytest.raises(ImportError, match=r"rnnfast\[data\]"):
        caption.load_digit_images()


def test_new_tasks_are_registered() -> None:
    for name in ("caption",):
        assert name in list_tasks()
        assert get_task(name).name == name
