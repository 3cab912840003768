"""The folder dataset: classes from sub-folders of real images, template captions, both split layouts."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from mmreg.errors import DataError, InvalidParams
from mmreg.plugins import load_plugins
from mmreg_plugins.datasets.folder import Folder

COLOURS = {"red_apple": (220, 40, 40), "green_leaf": (40, 180, 60), "blue_sky": (50, 80, 230)}


def fill(folder: Path, counts: dict[str, int], suffix: str = ".png") -> Path:
    """``counts[label]`` real one-colour images in ``folder/label/``."""
    for label, count in counts.items():
        (folder / label).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            Image.new("RGB", (10, 10), COLOURS[label]).save(folder / label / f"{i}{suffix}")
    return folder


def make(root: Path, seed: int = 0, template: str = "a photo of a {label}", val_fraction: float = 0.2) -> Folder:
    return Folder(root=str(root), template=template, val_fraction=val_fraction, seed=seed)


def test_classes_labels_and_captions_from_folders(tmp_path):
    root = fill(tmp_path / "photos", {"red_apple": 5, "green_leaf": 5, "blue_sky": 5})
    (root / "notes.txt").write_text("not an image, not a class")
    (root / "blue_sky" / "readme.md").write_text("ignored")
    data = make(root, template="a picture of {label}")
    assert data.classes == ["blue_sky", "green_leaf", "red_apple"] and "label" in data.fields
    samples = list(data.split("train")) + list(data.split("val"))
    assert len(samples) == 15
    for sample in samples:
        label = data.classes[sample.label]
        assert sample.caption == f"a picture of {label.replace('_', ' ')}"
        assert sample.image.mode == "RGB" and sample.image.getpixel((3, 3)) == COLOURS[label]
    assert data.texts("val") == [s.caption for s in data.split("val")]
    assert data.check("train") == [] and data.check("val") == []


def test_val_fraction_is_held_out_per_class_deterministically(tmp_path):
    root = fill(tmp_path, {"red_apple": 10, "green_leaf": 5, "blue_sky": 20}, suffix=".JPG")
    data = make(root, seed=1)
    val = [s.label for s in data.split("val")]
    assert [val.count(i) for i in range(3)] == [4, 1, 2]  # 0.2 of 20, 5 and 10: every class in val
    assert len(data.split("train")) == 35 - 7
    paths = {name: [r.image for r in make(root, seed=1).split(name).records] for name in ("train", "val")}
    assert paths == {name: [r.image for r in data.split(name).records] for name in ("train", "val")}
    assert set(paths["train"]).isdisjoint(paths["val"])
    assert paths["val"] != [r.image for r in make(root, seed=2).split("val").records]


def test_train_and_val_sub_folders_are_used_as_they_are(tmp_path):
    fill(tmp_path / "train", {"red_apple": 3, "green_leaf": 2})
    fill(tmp_path / "val", {"red_apple": 1, "blue_sky": 1})
    data = make(tmp_path)
    assert data.classes == ["blue_sky", "green_leaf", "red_apple"]
    assert sorted(s.label for s in data.split("train")) == [1, 1, 2, 2, 2]
    assert sorted(s.caption for s in data.split("val")) == ["a photo of a blue sky", "a photo of a red apple"]


def test_check_names_an_unreadable_image(tmp_path):
    root = fill(tmp_path, {"red_apple": 3, "green_leaf": 3})
    bad = root / "red_apple" / "0.png"
    bad.write_bytes(b"not a png at all")
    data = make(root, val_fraction=0.5)
    problems = [p for name in ("train", "val") for _, p in data.check(name)]
    assert len(problems) == 1 and problems[0].startswith(f"image {bad} is not a readable image (")


def test_bad_folders_are_refused_naming_the_folder(tmp_path):
    with pytest.raises(DataError, match=f"dataset folder {tmp_path / 'none'} not found"):
        make(tmp_path / "none")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=f"dataset folder {tmp_path / 'empty'} is empty;"):
        make(tmp_path / "empty")
    (tmp_path / "flat").mkdir()
    Image.new("RGB", (4, 4)).save(tmp_path / "flat" / "a.png")
    with pytest.raises(DataError, match=f"{tmp_path / 'flat'} has no class folders"):
        make(tmp_path / "flat")
    fill(tmp_path / "mixed", {"red_apple": 2})
    (tmp_path / "mixed" / "blue_sky").mkdir()
    (tmp_path / "mixed" / "blue_sky" / "a.txt").write_text("x")
    with pytest.raises(DataError, match=f"class folder {tmp_path / 'mixed' / 'blue_sky'} has no images"):
        make(tmp_path / "mixed")


def test_a_template_naming_another_field_is_refused_when_validated():
    entry = load_plugins().registry("datasets").get("folder")
    with pytest.raises(InvalidParams, match="template may use only"):
        entry.validate({"root": "x", "template": "a photo of a {name}"})
