"""The multiview augmenter: two different views of each image, repeatable from the rng."""

from __future__ import annotations

import pickle
import random

import numpy as np
import pytest
from PIL import Image, ImageDraw

from mmreg.components import Sample
from mmreg.data import AugmentedSplit
from mmreg.errors import ConfigError, InvalidParams
from mmreg.plugins import load_plugins
from mmreg_plugins.augmenters.albumentations import import_albumentations

AUGMENTERS = load_plugins().registry("augmenters")
A = import_albumentations()  # without its update check, which would try to reach PyPI
SIZES = [(32, 32), (48, 40)]


def drawn(size: tuple[int, int]) -> Image.Image:
    image = Image.new("RGB", size, (30, 60, 200))
    ImageDraw.Draw(image).rectangle([3, 4, size[0] // 2, size[1] // 2 + 2], fill=(220, 40, 30))
    return image


def sample(size: tuple[int, int] = (48, 40)) -> Sample:
    return Sample(drawn(size), "a red square", label=0, question="what shape?", answer="square")


def build(**params):
    return AUGMENTERS.build("multiview", params, seed=0)


def views(s: Sample) -> tuple[np.ndarray, np.ndarray]:
    assert s.views is not None
    return np.asarray(s.views[0]), np.asarray(s.views[1])


@pytest.mark.parametrize("size", SIZES)
def test_two_different_views_and_nothing_else_changes(size):
    augment = build()
    for seed in range(10):
        original = sample(size)
        out = augment(original, np.random.default_rng(seed))
        assert len(out.views) == 2
        for view in out.views:
            assert view.size == size and view.mode == "RGB" and np.asarray(view).dtype == np.uint8
        a, b = views(out)
        assert not np.array_equal(a, b)
        assert out.image is original.image and np.array_equal(np.asarray(out.image), np.asarray(drawn(size)))
        assert (out.caption, out.label, out.question, out.answer) == ("a red square", 0, "what shape?", "square")


def test_same_rng_same_views_different_seeds_differ():
    augment, original = build(scale_min=0.3), sample()
    first = [views(augment(original, np.random.default_rng(seed))) for seed in range(8)]
    augment(sample((32, 32)), np.random.default_rng(123))  # another size in between
    again = [views(augment(original, np.random.default_rng(seed))) for seed in range(8)]
    assert all(np.array_equal(x, y) for pair, other in zip(first, again) for x, y in zip(pair, other))
    assert len({pair[0].tobytes() for pair in first}) == 8


def test_independent_of_global_random_state():
    augment, original = build(), sample()
    np.random.seed(1)
    random.seed(1)
    a = views(augment(original, np.random.default_rng(5)))
    np.random.seed(2)
    random.seed(2)
    b = views(augment(original, np.random.default_rng(5)))
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])


def test_saved_pipeline_makes_the_views(tmp_path):
    path = tmp_path / "flip.yaml"
    A.save(A.Compose([A.HorizontalFlip(p=1.0)]), str(path), data_format="yaml")
    out = build(path=str(path))(sample(), np.random.default_rng(0))
    flipped = np.asarray(drawn((48, 40)))[:, ::-1]
    assert all(np.array_equal(v, flipped) for v in views(out))


def test_bad_params():
    with pytest.raises(ConfigError, match="not found"):
        build(path="/nonexistent/views.json")
    with pytest.raises(InvalidParams):
        build(scale_min=0.0)


def test_in_an_augmented_split_with_the_other_augmenters():
    """As training runs it: image, caption and views repeat for the same (seed, epoch, index), in any worker."""
    chain = [
        AUGMENTERS.build("albumentations", {"preset": "strong"}, seed=0),
        AUGMENTERS.build("text", {"synonyms": {"red": ["crimson"]}}, seed=0),
        build(),
    ]
    samples = [sample((32, 32)), sample((48, 40))]
    split = AugmentedSplit(samples, chain, seed=3)

    def snapshot(index: int) -> tuple[bytes, str, bytes, bytes]:
        s = split[index]
        a, b = views(s)
        return np.asarray(s.image).tobytes(), s.caption, a.tobytes(), b.tobytes()

    epoch0 = [snapshot(i) for i in range(2)]
    assert [snapshot(i) for i in reversed(range(2))][::-1] == epoch0
    split = pickle.loads(pickle.dumps(split))  # as DataLoader workers started by spawn receive it
    assert [snapshot(i) for i in range(2)] == epoch0
    split.epoch = 1
    assert [snapshot(i) for i in range(2)] != epoch0


def test_declares_that_it_gives_views():
    """What the pre-training check reads, so a loss needing views is refused without this augmenter."""
    assert AUGMENTERS.get("multiview").factory.gives_views is True
    assert not any(getattr(AUGMENTERS.get(n).factory, "gives_views", False) for n in ("albumentations", "text", "none"))
