"""The hf dataset: save_to_disk directories and parquet files trained on through the CLI, csv with image
paths, columns by name, ClassLabel classes, held-out validation, streaming lanes, one-line errors."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from mmreg.errors import ConfigError, DataError
from mmreg_plugins.datasets.hf import HfDataset

datasets = pytest.importorskip("datasets")

TINY = [
    "--max-steps", "2", "--batch-size", "8", "--device", "cpu", "--set", "train.eval_batch_size=16",
    "--set", "encoder.hidden_size=32", "--set", "encoder.projection_dim=32", "--set", "encoder.layers=1",
    "--set", "model.dim=32", "--json",
]  # fmt: skip
DEFAULTS = {
    "builder": None, "config_name": None, "image_column": "image", "caption_column": "caption", "label_column": None,
    "id_column": None, "train_split": "train", "val_split": None, "val_fraction": 0.1, "streaming": False,
    "shuffle_buffer": 0, "seed": 0,
}  # fmt: skip


def pictures(n: int, first: int = 0) -> list[Image.Image]:
    return [Image.new("RGB", (24, 24), ((i * 40) % 256, (i * 7) % 256, 160)) for i in range(first, first + n)]


def table(n: int, first: int = 0) -> datasets.Dataset:
    features = datasets.Features({"image": datasets.Image(), "caption": datasets.Value("string"), "kind": datasets.ClassLabel(names=["even", "odd"])})
    rows = {"image": pictures(n, first), "caption": [f"a picture number {i}" for i in range(first, first + n)], "kind": [i % 2 for i in range(first, first + n)]}
    return datasets.Dataset.from_dict(rows, features=features)


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MMREG_")}
    return subprocess.run([sys.executable, "-m", "mmreg", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def test_trains_from_a_save_to_disk_directory_with_its_validation_split_and_classlabel_classes(tmp_path):
    datasets.DatasetDict({"train": table(32), "validation": table(8, 32)}).save_to_disk(str(tmp_path / "saved"))
    result = cli("run", "--dataset", "hf", "--set", "dataset.path=saved", "--set", "dataset.label_column=kind", "--loss", "ce", *TINY, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(result.stdout)
    assert summary["task"] == "classification" and summary["train_size"] == 32 and summary["val_size"] == 8
    assert json.loads((tmp_path / summary["run_dir"] / "classes.json").read_text()) == ["even", "odd"]


def test_trains_from_a_parquet_file_holding_out_a_seeded_fraction(tmp_path):
    table(40).to_parquet(str(tmp_path / "pairs.parquet"))
    result = cli("run", "--dataset", "hf", "--set", "dataset.path=pairs.parquet", *TINY, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(result.stdout)
    assert summary["task"] == "retrieval" and (summary["train_size"], summary["val_size"]) == (36, 4)


def test_csv_image_paths_are_read_relative_to_the_file_upright_and_name_their_image(tmp_path):
    (tmp_path / "img").mkdir()
    upright = Image.new("RGB", (30, 10), (200, 40, 40))
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: a viewer rotates it 90 degrees
    upright.save(tmp_path / "img" / "a.jpg", exif=exif)
    for i in range(3):
        Image.new("RGB", (12, 12), (i * 60, 90, 160)).save(tmp_path / "img" / f"{i}.png")
    rows = ["path,text,group", "img/a.jpg,a red bar,1", "img/a.jpg,a sideways bar,1", *(f"img/{i}.png,square {i},{i + 2}" for i in range(3))]
    (tmp_path / "pairs.csv").write_text("\n".join(rows) + "\n")
    data = HfDataset(**{**DEFAULTS, "path": str(tmp_path / "pairs.csv"), "image_column": "path", "caption_column": "text", "val_split": "train"})
    first = data.split("val")[0]
    assert first.image.size == (10, 30) and first.image_id == str(tmp_path / "img" / "a.jpg")
    assert data.split("val")[1].image_id == first.image_id
    assert "image_id" in data.fields and data.image_ids("val") == [s.image_id for s in data.split("val")]
    grouped = HfDataset(**{**DEFAULTS, "path": str(tmp_path / "pairs.csv"), "image_column": "path", "caption_column": "text", "id_column": "group", "val_split": "train"})
    assert [grouped.split("train")[i].image_id for i in range(5)] == ["1", "1", "2", "3", "4"] == grouped.image_ids("train")


def test_streaming_lanes_are_disjoint_and_cover_the_split(tmp_path):
    datasets.DatasetDict({"train": table(20), "validation": table(4, 20)}).save_to_disk(str(tmp_path / "saved"))
    data = HfDataset(**{**DEFAULTS, "path": str(tmp_path / "saved"), "streaming": True, "shuffle_buffer": 8})
    train = data.split("train")
    assert len(train) == 20
    lanes = [[row.load().caption for row in train.stream(lane, 3, epoch=1)] for lane in range(3)]
    assert sorted(sum(lanes, [])) == sorted(data.texts("train")) and all(lanes)


def test_a_missing_column_lists_the_columns_present(tmp_path):
    table(10).to_parquet(str(tmp_path / "pairs.parquet"))
    with pytest.raises(DataError, match=r"no column 'text' \(columns: image, caption, kind\); set dataset.caption_column"):
        HfDataset(**{**DEFAULTS, "path": str(tmp_path / "pairs.parquet"), "caption_column": "text"})


def test_without_the_datasets_package_the_error_names_the_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)
    with pytest.raises(ConfigError, match=r"pip install 'mmreg\[hf\]'"):
        HfDataset(**{**DEFAULTS, "path": str(tmp_path)})


def test_a_caption_list_is_one_sample_per_caption_sharing_the_rows_image(tmp_path):
    rows = {"image": pictures(3), "caption": [[f"caption {c} of {i}" for c in range(i + 1)] for i in range(3)]}
    datasets.Dataset.from_dict(rows, features=datasets.Features({"image": datasets.Image(), "caption": datasets.Sequence(datasets.Value("string"))})).save_to_disk(str(tmp_path / "saved"))
    for streaming in (False, True):
        data = HfDataset(**{**DEFAULTS, "path": str(tmp_path / "saved"), "val_split": "train", "streaming": streaming})
        assert data.texts("val") == ["caption 0 of 0", "caption 0 of 1", "caption 1 of 1", "caption 0 of 2", "caption 1 of 2", "caption 2 of 2"]
        assert len(data.split("val")) == 6 and ("image_id" in data.fields) is not streaming
    assert data.image_ids("val") == [None] * 6  # streamed: the core knows the rows' images by content
    data = HfDataset(**{**DEFAULTS, "path": str(tmp_path / "saved"), "val_split": "train"})
    split = data.split("val")
    assert [s.caption for s in split] == data.texts("val") and [s.image_id for s in split] == data.image_ids("val")
    assert data.image_ids("val") == ["row 0", "row 1", "row 1", "row 2", "row 2", "row 2"]
    assert split[2].image.tobytes() == split[1].image.tobytes() != split[0].image.tobytes()


@pytest.mark.parametrize("value,said", [(None, "holds no value"), ([], "holds an empty list"), (["a", None], "holds a list holding something other than text")])
def test_a_caption_that_is_neither_text_nor_a_list_of_texts_is_refused_naming_its_row(tmp_path, value, said):
    datasets.Dataset.from_dict({"image": pictures(2), "caption": [["fine"], value]}).save_to_disk(str(tmp_path / "saved"))
    with pytest.raises(DataError, match=re.escape(f"dataset 'hf' split 'train' row 1: caption_column 'caption' {said}, not a text or a list of texts")):
        HfDataset(**{**DEFAULTS, "path": str(tmp_path / "saved"), "val_split": "train"})


@pytest.mark.parametrize("layout", ["bytes", "paths", "ids"])
def test_holding_out_a_fraction_holds_out_whole_images_with_every_caption(tmp_path, layout):
    """Three rows (captions) per image and no validation split: no image is in both splits, however
    the rows name it (the same bytes in each row, a path, an id column)."""
    for i, image in enumerate(pictures(12)):
        image.save(tmp_path / f"{i}.png")
    captions = [f"caption {c} of picture {i}" for i in range(12) for c in range(3)]
    if layout == "bytes":
        images = [(tmp_path / f"{i // 3}.png").read_bytes() for i in range(36)]
        data = datasets.Dataset.from_dict({"image": images, "caption": captions})
    else:
        data = datasets.Dataset.from_dict({"image": [f"{i // 3}.png" for i in range(36)], "caption": captions, "pid": [f"p{i // 3}" for i in range(36)]})
    data.to_parquet(str(tmp_path / "rows.parquet"))
    dataset = HfDataset(**{**DEFAULTS, "path": str(tmp_path / "rows.parquet"), "val_fraction": 0.25, "id_column": "pid" if layout == "ids" else None})
    owner = {caption: caption.rpartition(" ")[2] for caption in captions}
    train, val = ({owner[c] for c in dataset.texts(name)} for name in ("train", "val"))
    assert len(val) == 3 and len(train) == 9 and not train & val  # a quarter of the twelve images, each whole
    assert len(dataset.texts("val")) == 9 and len(dataset.texts("train")) == 27
    again = HfDataset(**{**DEFAULTS, "path": str(tmp_path / "rows.parquet"), "val_fraction": 0.25, "id_column": "pid" if layout == "ids" else None})
    assert again.texts("val") == dataset.texts("val")  # seeded
