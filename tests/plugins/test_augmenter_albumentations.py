"""The albumentations augmenter on small drawn images: presets, saved pipelines, determinism."""

from __future__ import annotations

import random
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image, ImageDraw

from mmreg.components import Sample
from mmreg.errors import ConfigError, InvalidParams
from mmreg.plugins import load_plugins
from mmreg_plugins.augmenters.albumentations import import_albumentations

AUGMENTERS = load_plugins().registry("augmenters")
A = import_albumentations()  # without its update check, which would try to reach PyPI
SIZES = [(32, 32), (48, 40)]


def drawn(size: tuple[int, int]) -> Image.Image:
    """A red square on a blue background, off-centre so flips and shifts show."""
    image = Image.new("RGB", size, (30, 60, 200))
    ImageDraw.Draw(image).rectangle([3, 4, size[0] // 2, size[1] // 2 + 2], fill=(220, 40, 30))
    return image


def sample(size: tuple[int, int] = (48, 40)) -> Sample:
    return Sample(drawn(size), "a red square", label=1, question="what colour?", answer="red")


def build(**params):
    return AUGMENTERS.build("albumentations", params, seed=0)


def pixels(s: Sample) -> np.ndarray:
    return np.asarray(s.image)


@pytest.mark.parametrize("preset", ["light", "strong"])
@pytest.mark.parametrize("size", SIZES)
def test_presets_keep_size_mode_and_dtype(preset, size):
    augment = build(preset=preset)
    original = sample(size)
    for seed in range(20):
        out = augment(original, np.random.default_rng(seed))
        assert out.image.size == size and out.image.mode == "RGB" and pixels(out).dtype == np.uint8
        assert (out.caption, out.label, out.question, out.answer, out.views) == ("a red square", 1, "what colour?", "red", None)
    assert pixels(original).tobytes() == drawn(size).tobytes()  # the input is not modified in place


@pytest.mark.parametrize("preset", ["light", "strong"])
def test_same_rng_same_image_different_seeds_differ(preset):
    augment, original = build(preset=preset), sample()
    first = [pixels(augment(original, np.random.default_rng(seed))) for seed in range(10)]
    again = [pixels(augment(original, np.random.default_rng(seed))) for seed in reversed(range(10))][::-1]
    assert all(np.array_equal(a, b) for a, b in zip(first, again))
    assert len({a.tobytes() for a in first}) >= 5


def test_independent_of_global_random_state_and_call_history():
    augment, original = build(preset="strong"), sample()
    np.random.seed(1)
    random.seed(1)
    a = pixels(augment(original, np.random.default_rng(7)))
    np.random.seed(2)
    random.seed(2)
    augment(sample((32, 32)), np.random.default_rng(99))  # another sample in between
    b = pixels(augment(original, np.random.default_rng(7)))
    assert np.array_equal(a, b)


@pytest.mark.parametrize("suffix,data_format", [(".json", "json"), (".yaml", "yaml"), (".yml", "yaml")])
def test_saved_pipeline_is_loaded_and_applied_exactly(tmp_path, suffix, data_format):
    path = tmp_path / f"flip{suffix}"
    A.save(A.Compose([A.HorizontalFlip(p=1.0)]), str(path), data_format=data_format)
    augment = build(preset="strong", path=str(path))  # path wins over the preset
    for size in SIZES:
        out = augment(sample(size), np.random.default_rng(0))
        assert np.array_equal(pixels(out), np.asarray(drawn(size))[:, ::-1])


def test_saved_random_pipeline_is_deterministic(tmp_path):
    path = tmp_path / "colour.json"
    A.save(A.Compose([A.ColorJitter(p=1.0), A.Affine(rotate=(-30, 30), p=1.0)]), str(path))
    augment, original = build(path=str(path)), sample()
    outs = [pixels(augment(original, np.random.default_rng(seed))) for seed in (0, 0, 1)]
    assert np.array_equal(outs[0], outs[1]) and not np.array_equal(outs[0], outs[2])


def test_bad_paths_are_one_line_config_errors(tmp_path):
    garbage = tmp_path / "garbage.json"
    garbage.write_text("{not json")
    not_a_pipeline = tmp_path / "empty.json"
    not_a_pipeline.write_text("{}")
    wrong_suffix = tmp_path / "pipeline.txt"
    wrong_suffix.write_text("{}")
    normalised = tmp_path / "normalise.json"
    A.save(A.Compose([A.Normalize()]), str(normalised))
    for path in [tmp_path / "missing.json", garbage, not_a_pipeline, wrong_suffix, normalised]:
        with pytest.raises(ConfigError) as err:
            build(path=str(path))
        assert "\n" not in str(err.value) and "albumentations" in str(err.value)
    with pytest.raises(ConfigError, match="neither preset nor path"):
        build(preset=None)


def test_unknown_preset_is_refused():
    with pytest.raises(InvalidParams):
        build(preset="medium")


def test_no_flip_option_keeps_the_square_on_the_left():
    augment = build(preset="light", flip=False)
    for seed in range(20):
        image = pixels(augment(sample(), np.random.default_rng(seed))).astype(int)
        left, right = image[:, :24], image[:, 24:]
        assert (left[..., 0] - left[..., 2]).mean() > (right[..., 0] - right[..., 2]).mean()


def test_importing_the_module_does_not_import_albumentations():
    code = (
        "import sys, mmreg_plugins.augmenters.albumentations, mmreg_plugins.augmenters.multiview; "
        "assert 'albumentations' not in sys.modules and 'cv2' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
