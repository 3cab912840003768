"""The files dataset: CSV and JSON Lines of real images on disk, held-out validation, one-line errors."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mmreg.errors import ConfigError, DataError
from mmreg_plugins.datasets.files import FileSplits

COLOURS = {"red": (220, 40, 40), "green": (40, 180, 60), "blue": (50, 80, 230)}


def write_png(path: Path, colour: tuple[int, int, int], size: int = 12) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (size, size), colour).save(path)
    return path


def truncated_png(path: Path) -> Path:
    """A real PNG of noise (so it does not compress to nothing) cut to half its bytes."""
    pixels = np.random.default_rng(0).integers(0, 256, size=(32, 32, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return path


def make(train: Path, seed: int = 0, **kw) -> FileSplits:
    params = {
        "val": None,
        "val_fraction": 0.25,
        "image_column": "image_path",
        "caption_column": "caption",
        "label_column": None,
        "format": "auto",
        **kw,
    }
    return FileSplits(train=str(train), seed=seed, **params)


def write_csv(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


@pytest.fixture
def pairs(tmp_path: Path) -> list[tuple[str, str, str]]:
    """Twelve (image path, caption, colour) rows: relative paths, and every third one absolute."""
    rows = []
    for i in range(12):
        colour = list(COLOURS)[i % 3]
        image = write_png(tmp_path / "images" / f"{i}.png", COLOURS[colour])
        path = str(image) if i % 3 == 0 else f"images/{i}.png"
        rows.append((path, f"a {colour} square number {i}", colour))
    return rows


def test_csv_with_custom_columns_and_labels(tmp_path, pairs):
    train = write_csv(tmp_path / "train.csv", ["file", "text", "colour"], [list(r) for r in pairs])
    data = make(train, image_column="file", caption_column="text", label_column="colour")
    assert data.fields == {"image", "caption", "label", "image_id"} and data.classes == ["blue", "green", "red"]
    split = data.split("train")
    assert len(split) + len(data.split("val")) == 12
    for sample in split:
        colour = sample.caption.split()[1]
        assert data.classes[sample.label] == colour
        assert sample.image.mode == "RGB" and sample.image.size == (12, 12)
        assert sample.image.getpixel((5, 5)) == COLOURS[colour]
    assert data.texts("train") == [s.caption for s in split]
    assert data.check("train") == [] and data.check("val") == []


def test_jsonl_without_labels_and_a_separate_val_file(tmp_path, pairs):
    train = tmp_path / "train.jsonl"
    train.write_text("".join(json.dumps({"image_path": p, "caption": c}) + "\n" for p, c, _ in pairs[:8]) + "\n")
    val = tmp_path / "val.jsonl"
    val.write_text("".join(json.dumps({"image_path": p, "caption": c}) + "\n" for p, c, _ in pairs[8:]))
    data = make(train, val=str(val))
    assert data.fields == {"image", "caption", "image_id"} and data.classes is None
    assert data.texts("train") == [c for _, c, _ in pairs[:8]] and data.texts("val") == [c for _, c, _ in pairs[8:]]
    assert data.split("val")[0].label is None and data.split("val")[-1].image.size == (12, 12)
    assert data.check("train") == [] and data.check("val") == []


def test_val_is_held_out_deterministically(tmp_path, pairs):
    train = write_csv(tmp_path / "train.csv", ["image_path", "caption"], [[p, c] for p, c, _ in pairs])
    a, b = make(train, seed=3), make(train, seed=3)
    assert a.texts("val") == b.texts("val") and a.texts("train") == b.texts("train")
    assert len(a.texts("val")) == 3  # 0.25 of 12
    assert set(a.texts("train")).isdisjoint(a.texts("val"))
    assert sorted(a.texts("train") + a.texts("val")) == sorted(c for _, c, _ in pairs)
    assert {tuple(make(train, seed=s).texts("val")) for s in range(5)} != {tuple(a.texts("val"))}


def test_check_names_file_row_and_image(tmp_path, pairs):
    rows = [[p, c] for p, c, _ in pairs[:4]] + [["images/missing.png", "a lost image"]]
    broken = truncated_png(tmp_path / "broken.png")
    rows.append(["broken.png", "half an image"])
    train = write_csv(tmp_path / "train.csv", ["image_path", "caption"], rows)
    val = write_csv(tmp_path / "val.csv", ["image_path", "caption"], rows[:2])
    data = make(train, val=str(val))
    bad = data.check("train")
    assert [i for i, _ in bad] == [4, 5]
    assert bad[0][1] == f"{train} row 5: image {tmp_path / 'images/missing.png'} not found"
    assert bad[1][1].startswith(f"{train} row 6: image {broken} is not a readable image (")
    assert all("\n" not in problem for _, problem in bad)


@pytest.mark.parametrize(
    ("content", "suffix", "message"),
    [
        ("", ".csv", "has no rows"),
        ("image_path,caption\n", ".csv", "has no rows"),
        ("image_path,text\na.png,a cat\n", ".csv", "row 1: no column 'caption' (columns: image_path, text); set dataset.caption_column"),
        ("image_path,caption\na.png,a cat\nb.png,  \n", ".csv", "row 2: empty caption"),
        ('{"image_path": "a.png", "caption": "a cat"}\n\n{"image_path": "b.png", caption}\n', ".jsonl", "line 3: invalid JSON"),
        ('["a.png", "a cat"]\n', ".jsonl", "line 1: expected a JSON object"),
    ],
)
def test_bad_files_are_refused_at_construction(tmp_path, content, suffix, message):
    path = tmp_path / f"pairs{suffix}"
    path.write_text(content)
    with pytest.raises(DataError, match=re.escape(str(path))) as info:
        make(path)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_missing_file_unknown_suffix_and_unknown_split(tmp_path, pairs):
    with pytest.raises(DataError, match="nowhere.csv not found"):
        make(tmp_path / "nowhere.csv")
    odd = write_csv(tmp_path / "pairs.txt", ["image_path", "caption"], [[p, c] for p, c, _ in pairs])
    with pytest.raises(ConfigError, match="set dataset.format"):
        make(odd)
    assert len(make(odd, format="csv").texts("train")) == 9
    with pytest.raises(DataError, match="no split 'test'"):
        make(odd, format="csv").split("test")


def test_rows_naming_one_image_are_its_captions(tmp_path):
    for i in range(4):
        write_png(tmp_path / f"img{i}.png", list(COLOURS.values())[i % 3])
    rows = [[f"img{i}.png", f"caption {c} of image {i}"] for i in range(4) for c in range(3)]
    data = make(write_csv(tmp_path / "pairs.csv", ["image_path", "caption"], rows), val_fraction=0.25)
    train, val = data.image_ids("train"), data.image_ids("val")
    # one image of four is held out whole: its three captions, and none of them in training
    assert len(val) == 3 and len(set(val)) == 1 and not set(val) & set(train)
    assert len(train) == 9 and len(set(train)) == 3
    assert [s.image_id for s in data.split("val")] == val  # the samples carry what image_ids reports
    assert data.split("val")[0].image_id == str(tmp_path / val[0].rsplit("/", 1)[-1])


def test_an_id_column_groups_captions(tmp_path):
    for i in range(3):
        write_png(tmp_path / f"img{i}.png", (10 * i, 0, 0))
    # image 1 is listed under two spellings of its path; the id column says they are one image
    rows = [["img0.png", "a", "100"], ["img1.png", "b", "101"], ["sub/../img1.png", "c", "101"], ["img2.png", "d", "102"]]
    path = write_csv(tmp_path / "pairs.csv", ["image_path", "caption", "coco_id"], rows)
    data = make(path, val=str(path), image_id_column="coco_id")
    assert data.image_ids("val") == ["100", "101", "101", "102"]
    by_path = make(path, val=str(path))
    assert len(set(by_path.image_ids("val"))) == 4  # the two spellings are two files to the path rule


def test_an_id_shared_by_two_images_is_refused(tmp_path):
    for i in range(2):
        write_png(tmp_path / f"img{i}.png", (10 * i, 0, 0))
    path = write_csv(tmp_path / "pairs.csv", ["image_path", "caption", "id"], [["img0.png", "a", "7"], ["img1.png", "b", "7"]])
    with pytest.raises(DataError, match=r"pairs.csv row 2: image id 7 is also .*row 1's, which names another image"):
        make(path, image_id_column="id")


def test_a_json_lines_caption_list_is_one_sample_per_caption_of_one_image(tmp_path):
    for i in range(4):
        write_png(tmp_path / f"img{i}.png", (40 * i, 0, 0))
    lines = [{"image_path": f"img{i}.png", "caption": [f"caption {c} of image {i}" for c in range(3)]} for i in range(3)]
    lines.append({"image_path": "img3.png", "caption": "the one caption of image 3"})
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    data = make(path, val_fraction=0.25)
    texts, ids = data.texts("train") + data.texts("val"), data.image_ids("train") + data.image_ids("val")
    assert sorted(texts) == sorted([f"caption {c} of image {i}" for i in range(3) for c in range(3)] + ["the one caption of image 3"])
    assert len(texts) == 10 and len(set(ids)) == 4  # a line's captions are captions of its image
    assert all(len({t.rsplit(" ", 1)[-1] for t, d in zip(texts, ids, strict=True) if d == image}) == 1 for image in set(ids))
    assert not set(data.image_ids("train")) & set(data.image_ids("val"))  # held out whole, every caption with it
    assert [s.caption for s in data.split("val")] == data.texts("val")


@pytest.mark.parametrize("captions", [[], ["a cat", 3], ["a cat", "  "]], ids=["empty", "number", "blank"])
def test_a_caption_list_that_is_not_all_text_is_refused_naming_its_line(tmp_path, captions):
    path = tmp_path / "pairs.jsonl"
    path.write_text(json.dumps({"image_path": "a.png", "caption": "a dog"}) + "\n" + json.dumps({"image_path": "a.png", "caption": captions}) + "\n")
    with pytest.raises(DataError, match=re.escape(f"{path} line 2: caption is a list that is empty or holds something other than non-empty texts")):
        make(path)
