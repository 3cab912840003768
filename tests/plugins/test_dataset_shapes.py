"""The synthetic shapes dataset: deterministic, captions that describe the pixels, disjoint splits."""

from __future__ import annotations

import numpy as np
import pytest

from mmreg.errors import DataError
from mmreg_plugins.datasets.shapes import COLOURS, KINDS, Shapes


def make(seed=0, **kw) -> Shapes:
    params = {"train_size": 20, "val_size": 10, "image_size": 32, "noise": 12.0, "caption_kind": True, **kw}
    return Shapes(seed=seed, **params)


def test_sizes_and_sample_contents():
    data = make()
    train, val = data.split("train"), data.split("val")
    assert (len(train), len(val)) == (20, 10)
    sample = train[0]
    assert sample.image.size == (32, 32) and sample.image.mode == "RGB"
    assert sample.caption.startswith("a ") and KINDS[sample.label] in sample.caption
    assert data.classes == list(KINDS) and "label" in data.fields


def test_deterministic_from_the_seed_and_splits_differ():
    a, b, c = make(seed=1), make(seed=1), make(seed=2)
    assert np.array_equal(np.asarray(a.split("train")[3].image), np.asarray(b.split("train")[3].image))
    assert a.texts("train") == b.texts("train") != c.texts("train")
    assert a.texts("val") != a.texts("train")[:10]


def test_the_caption_names_the_colour_that_is_drawn():
    data = make(noise=0.0, train_size=40)
    for sample in data.split("train"):
        pixels = np.asarray(sample.image).reshape(-1, 3)
        colours = {tuple(p) for p in pixels} - {(30, 30, 30)}
        [named] = [c for c in COLOURS if f" {c} " in sample.caption]
        assert COLOURS[named] in colours


def test_texts_match_samples_without_drawing():
    data = make()
    for field in ("caption", "question", "answer"):
        assert data.texts("train", field) == [getattr(s, field) for s in data.split("train")]


def test_questions_are_answered_by_the_image():
    data = make(train_size=200)
    for s in data.split("train"):
        kind, words = KINDS[s.label], s.caption.split()
        if s.question.startswith("what colour"):
            assert s.answer in COLOURS and s.answer in words and kind in s.question
        elif s.question.startswith("what shape"):
            assert s.answer == kind
        elif s.question.startswith("what size"):
            assert s.answer == words[1]
        else:
            assert s.question.startswith("where is")
            assert set(s.answer.split()) <= set(words) or (s.answer == "centre" and "centre" in words)
    assert {s.question.split()[1] for s in data.split("train")} == {"colour", "shape", "size", "is"}


def test_caption_kind_false_hides_the_label_from_the_text():
    data = make(caption_kind=False)
    assert all(" shape " in c and not any(k in c for k in KINDS) for c in data.texts("train"))


def test_indexing_and_unknown_split():
    split = make().split("val")
    assert split[-1].caption == split[9].caption and len(split[2:5]) == 3
    with pytest.raises(IndexError):
        split[10]
    with pytest.raises(DataError, match="no split 'test'"):
        make().split("test")
