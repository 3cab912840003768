"""The synthetic shapes dataset: deterministic, captions that describe the pixels, disjoint splits."""

from __future__ import annotations

import numpy as np
import pytest

from mmreg.errors import DataError
from mmreg_plugins.datasets.shapes import COLOURS, KINDS, Shapes


def make(seed=0, **kw) -> Shapes:
    params = {"train_size": 20, "val_size": 10, "image_size": 32, "noise": 12.0, **kw}
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
    assert a.captions("train") == b.captions("train") != c.captions("train")
    assert a.captions("val") != a.captions("train")[:10]


def test_the_caption_names_the_colour_that_is_drawn():
    data = make(noise=0.0, train_size=40)
    for sample in data.split("train"):
        pixels = np.asarray(sample.image).reshape(-1, 3)
        colours = {tuple(p) for p in pixels} - {(30, 30, 30)}
        [named] = [c for c in COLOURS if f" {c} " in sample.caption]
        assert COLOURS[named] in colours


def test_captions_match_samples_without_drawing():
    data = make()
    assert data.captions("train") == [s.caption for s in data.split("train")]


def test_indexing_and_unknown_split():
    split = make().split("val")
    assert split[-1].caption == split[9].caption and len(split[2:5]) == 3
    with pytest.raises(IndexError):
        split[10]
    with pytest.raises(DataError, match="no split 'test'"):
        make().split("test")
