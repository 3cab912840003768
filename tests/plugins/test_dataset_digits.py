"""The digits dataset: scikit-learn's real handwritten digits, and that a short run learns them from pixels."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

import mmreg
from mmreg_plugins.datasets.digits import NAMES, Digits


def make(seed: int = 0, **kw) -> Digits:
    return Digits(seed=seed, **{"image_size": 32, "val_fraction": 0.2, "caption_names_digit": True, **kw})


@pytest.fixture(scope="module")
def digits() -> Digits:
    return make()


def test_sizes_images_captions_and_labels(digits):
    train, val = digits.split("train"), digits.split("val")
    assert len(train) + len(val) == 1797 and len(val) == pytest.approx(0.2 * 1797, abs=5)
    assert digits.classes == list(NAMES) and "label" in digits.fields
    for sample in (train[0], val[-1], train[100]):
        assert sample.image.size == (32, 32) and sample.image.mode == "RGB"
        assert sample.caption == f"a handwritten digit {NAMES[sample.label]}"
        pixels = np.asarray(sample.image)
        assert pixels.max() > 128 and pixels.min() == 0  # ink on a blank background
    assert sorted({s.label for s in val}) == list(range(10))
    assert digits.texts("val") == [s.caption for s in val]
    assert digits.check("train") == []


def test_split_is_stratified_and_deterministic(digits):
    labels = [s.label for s in digits.split("val")]
    assert all(33 <= labels.count(d) <= 38 for d in range(10))  # ~0.2 of each ~180
    assert np.array_equal(make().split("val").pixels, digits.split("val").pixels)
    assert not np.array_equal(make(seed=1).split("val").pixels, digits.split("val").pixels)


def test_image_size_sets_the_upscaled_side():
    assert make(image_size=8).split("train")[0].image.size == (8, 8)
    assert make(image_size=20).split("val")[3].image.size == (20, 20)


def test_captions_can_hide_the_digit():
    data = make(caption_names_digit=False)
    assert set(data.texts("train")) == {"a handwritten digit"}


@pytest.fixture
def one_thread():
    """The model is tiny, so threads gain nothing; on a busy shared CPU their
    spin-waits made this run over ten times slower (6 s against 84 s)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_digits_trains_to_far_above_chance_accuracy_in_a_short_run(tmp_path, one_thread):
    started = time.perf_counter()
    summary = mmreg.run(
        {
            "dataset": {"name": "digits", "caption_names_digit": False},
            "task": "classification",
            "loss": {"ce": {}},
            "encoder": {"name": "clip", "hidden_size": 32, "projection_dim": 32, "layers": 1},
            "fusion": {"name": "none"},
            "model": {"dim": 32},
            "train": {"epochs": 10, "batch_size": 32, "lr": 3e-3, "device": "cpu"},
            "runs_dir": str(tmp_path),
        },
        progress=False,
    )
    seconds = time.perf_counter() - started
    assert summary["classes"] == 10 and summary["train_size"] + summary["val_size"] == 1797
    assert summary["metrics"]["accuracy"] >= 0.5, (summary["metrics"], seconds)  # chance is 0.1


def test_caption_accuracy_makes_that_share_of_captions_name_the_right_digit(digits):
    """The rest name another digit, each of the nine about equally often; labels and images stay; seeded."""
    noisy = make(caption_accuracy=0.7)
    for split in ("train", "val"):
        clean, samples = digits.split(split), noisy.split(split)
        assert [s.label for s in samples] == [s.label for s in clean]
        named = [NAMES.index(s.caption.rsplit(" ", 1)[1]) for s in samples]
        right = np.mean([n == s.label for n, s in zip(named, samples)])
        assert right == pytest.approx(0.7, abs=0.05)
        assert np.array_equal(np.asarray(samples[3].image), np.asarray(clean[3].image))
    wrong = [(NAMES.index(s.caption.rsplit(" ", 1)[1]) - s.label) % 10 for s in noisy.split("train") if not s.caption.endswith(NAMES[s.label])]
    counts = np.bincount(wrong, minlength=10)
    assert counts[0] == 0 and counts[1:].min() > 0.5 * counts[1:].mean()  # another digit, spread over all nine
    assert make(caption_accuracy=0.7).texts("train") == noisy.texts("train") != make(seed=1, caption_accuracy=0.7).texts("train")
