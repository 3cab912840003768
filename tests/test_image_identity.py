"""An image is an image on every data path: where a data set names no image, repeated pictures are
one image by content (evaluation grouping, training's one caption per image, val_images); a caption
list is one caption per element, and a caption that is not text is refused, never fed as its repr.

Runs go through the real CLI on data written here. The "image-perfect model" is checked twice: at
the metric level (every copy of an image gets identical features from its pixels and each caption
the features of its image, the groups from the real loaders, ``mmreg.data.Collate``), and through
`mmreg run`, a tiny model trained on four colours until it is right about which colour a caption names."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from mmreg.api import collate_for, prepare
from mmreg.components import Dataset, Encoded, Modality, Sample, Task
from mmreg.config import validate
from mmreg.data import Collate, make_loader
from mmreg.errors import DataError
from mmreg.identity import content_id, count_images, identified, split_keys
from mmreg.metrics import RetrievalEvaluation
from mmreg.sampling import split_groups

TINY = ["--set", "encoder.hidden_size=32", "--set", "encoder.projection_dim=32", "--set", "encoder.layers=1", "--set", "model.dim=32"]
RUN = [*TINY, "--max-steps", "2", "--batch-size", "4", "--device", "cpu", "--set", "train.eval_batch_size=16", "--fusion", "none", "--json"]
MODEL = {"encoder": {"name": "clip", "hidden_size": 32, "projection_dim": 32, "layers": 1}, "fusion": {"name": "none"}, "model": {"dim": 32}}
PERFECT = SimpleNamespace(fusion=SimpleNamespace(score=lambda image, text: F.normalize(image.pooled) @ F.normalize(text.pooled).T))


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MMREG_")}
    return subprocess.run([sys.executable, "-m", "mmreg", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def picture(i: int) -> Image.Image:
    """Image ``i``: noise seeded by i, so no two differ only slightly and every copy is the same."""
    return Image.fromarray(np.random.default_rng(i).integers(0, 256, (20, 20, 3), dtype=np.uint8))


def png(i: int) -> bytes:
    buffer = io.BytesIO()
    picture(i).save(buffer, "PNG")
    return buffer.getvalue()


def perfect_recall(batches) -> dict[str, float]:
    """Recall of a model right at the image level: features from the pixels, each caption's equal to its image's."""
    evaluation = RetrievalEvaluation()
    for batch in batches:
        x = batch["pixel_values"].flatten(1).float()
        evaluation.update(PERFECT, Encoded(Modality(x), Modality(x.clone())), batch)  # type: ignore[arg-type]
    return evaluation.compute()


def succeeded(result: subprocess.CompletedProcess[str]) -> dict:
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout)


def refused(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 2, (result.returncode, result.stderr[-3000:])
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    return lines[0]


# -- content ids -------------------------------------------------------------------------


def test_content_ids_name_equal_pictures_alike_and_keep_a_datasets_own_id():
    assert content_id(picture(1)) == content_id(picture(1).copy()) != content_id(picture(2))
    assert content_id(Image.new("L", (4, 4), 0)) != content_id(Image.new("L", (2, 8), 0))  # same bytes, another size
    assert content_id(Image.new("L", (4, 4), 0)) != content_id(Image.new("P", (4, 4), 0))  # same bytes, another mode
    assert identified(Sample(picture(1), "a", image_id="coco-7")).image_id == "coco-7"
    assert identified(Sample(picture(1), "a")).image_id == content_id(picture(1))
    assert count_images(["x", "x", None, None, "y"]) == 4  # a row without an id is its own image


# -- hf: one row per caption, image bytes, no id column -------------------------------------------


def hf_rows(images: range, captions: int) -> dict[str, list]:
    """One row per caption, the image's PNG bytes repeated in each: no column names the image."""
    return {"image": [png(i) for i in images for _ in range(captions)], "caption": [f"caption {c} of picture {i}" for i in images for c in range(captions)]}


def test_hf_rows_repeating_an_image_are_one_image_in_training_counts_and_evaluation(tmp_path):
    datasets = pytest.importorskip("datasets")
    train, val = hf_rows(range(8), 3), hf_rows(range(100, 104), 3)
    datasets.DatasetDict({"train": datasets.Dataset.from_dict(train), "validation": datasets.Dataset.from_dict(val)}).save_to_disk(str(tmp_path / "saved"))
    summary = succeeded(cli("run", "--dataset", "hf", "--set", "dataset.path=saved", *RUN, cwd=tmp_path))
    assert (summary["train_images"], summary["train_texts"], summary["val_images"], summary["val_texts"]) == (8, 24, 4, 12)
    assert (summary["retrieval"]["images"], summary["retrieval"]["texts"]) == (4, 12)

    p = prepare(validate({**MODEL, "dataset": {"name": "hf", "path": str(tmp_path / "saved")}, "train": {"batch_size": 4, "device": "cpu"}}))
    groups = split_groups(p.dataset, "train", p.train_split)
    assert groups == [i // 3 for i in range(24)]  # training takes one caption of each image per epoch
    assert split_keys(p.dataset, "val", p.val_split, 100)[0] == content_id(p.val_split[0].image)
    assert split_keys(p.dataset, "val", p.val_split, 11) == [None] * 12  # a split over the limit is not decoded
    recall = perfect_recall(make_loader(p.val_split, collate_for(p), 5, shuffle=False, seed=0))
    assert recall["i2t_recall@1"] >= 0.9 and recall["t2i_recall@1"] >= 0.9
    # every copy its own image, as before: the image-perfect model scored nothing at all
    ungrouped = [{k: v for k, v in batch.items() if k != "image_group"} for batch in make_loader(p.val_split, collate_for(p), 5, shuffle=False, seed=0)]
    assert perfect_recall(ungrouped)["t2i_recall@1"] == 0.0


# -- webdataset: one sample per key, images repeated under several keys -------------------------


def write_shard(path: Path, images: range, captions: int) -> None:
    import webdataset

    with webdataset.TarWriter(str(path)) as writer:
        for i in images:
            for c in range(captions):
                writer.write({"__key__": f"k{i:04d}-{c}", "png": png(i), "txt": f"caption {c} of picture {i}".encode()})


def test_webdataset_samples_repeating_an_image_are_one_image_in_counts_and_evaluation(tmp_path):
    pytest.importorskip("webdataset")
    write_shard(tmp_path / "train-000.tar", range(8), 2)
    write_shard(tmp_path / "val-000.tar", range(100, 104), 3)
    args = ["--dataset", "webdataset", "--set", "dataset.train=train-000.tar", "--set", "dataset.val=val-000.tar"]
    summary = succeeded(cli("run", *args, *RUN, cwd=tmp_path))
    assert (summary["val_images"], summary["val_texts"], summary["train_images"], summary["train_texts"]) == (4, 12, 8, 16)
    assert (summary["retrieval"]["images"], summary["retrieval"]["texts"]) == (4, 12)

    dataset = {"name": "webdataset", "train": str(tmp_path / "train-000.tar"), "val": str(tmp_path / "val-000.tar")}
    p = prepare(validate({**MODEL, "dataset": dataset, "train": {"batch_size": 4, "device": "cpu"}}))
    recall = perfect_recall(make_loader(p.val_split, collate_for(p), 5, shuffle=False, seed=0))
    assert recall["i2t_recall@1"] >= 0.9 and recall["t2i_recall@1"] >= 0.9
    assert split_groups(p.dataset, "train", p.train_split) is None  # a stream's training batches are not regrouped


# -- caption lists: one caption per element, never a repr ------------------------------------------


def check_fed_texts(tmp_path: Path, args: list[str], experiment: dict, captions: list[str]) -> None:
    """The val texts `mmreg data inspect` shows (decoded from the batch it wrote, with the run's
    tokenizer) are ``captions`` as that tokenizer reads them, none a list's repr."""
    from safetensors.torch import load_file

    result = cli("data", "inspect", *args, *TINY, "--split", "val", "--n", str(len(captions)), "--out", "inspect", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    encoder = prepare(validate({**MODEL, "dataset": experiment, "train": {"batch_size": 4, "device": "cpu"}})).model.encoder
    fed = encoder.decode(load_file(tmp_path / "inspect" / "batch.safetensors")["input_ids"])
    assert fed == encoder.decode(encoder.tokenize(captions)["input_ids"]) and not any(t.startswith("[") for t in fed)


def test_an_hf_caption_list_trains_as_captions_of_one_image(tmp_path):
    datasets = pytest.importorskip("datasets")

    def table(images: range) -> datasets.Dataset:
        return datasets.Dataset.from_dict({"image": [png(i) for i in images], "caption": [[f"caption {c} of picture {i}" for c in range(3)] for i in images]})

    datasets.DatasetDict({"train": table(range(8)), "validation": table(range(100, 104))}).save_to_disk(str(tmp_path / "saved"))
    args = ["--dataset", "hf", "--set", "dataset.path=saved"]
    summary = succeeded(cli("run", *args, *RUN, cwd=tmp_path))
    assert (summary["train_images"], summary["train_texts"], summary["val_images"], summary["val_texts"]) == (8, 24, 4, 12)
    assert (summary["retrieval"]["images"], summary["retrieval"]["texts"]) == (4, 12)
    check_fed_texts(tmp_path, args, {"name": "hf", "path": str(tmp_path / "saved")}, [f"caption {c} of picture {i}" for i in range(100, 104) for c in range(3)])


def test_an_hf_caption_that_is_not_text_is_refused_in_one_line(tmp_path):
    datasets = pytest.importorskip("datasets")
    datasets.Dataset.from_dict({"image": [png(i) for i in range(10)], "caption": list(range(10))}).save_to_disk(str(tmp_path / "saved"))
    line = refused(cli("run", "--dataset", "hf", "--set", "dataset.path=saved", *RUN, cwd=tmp_path))
    assert "row 0: caption_column 'caption' holds int, not a text or a list of texts; set dataset.caption_column" in line


def test_a_json_lines_caption_list_trains_as_captions_of_one_image(tmp_path):
    for i in (*range(8), *range(100, 104)):
        picture(i).save(tmp_path / f"{i}.png")
    for name, images in (("train", range(8)), ("val", range(100, 104))):
        lines = [json.dumps({"image_path": f"{i}.png", "caption": [f"caption {c} of picture {i}" for c in range(3)]}) for i in images]
        (tmp_path / f"{name}.jsonl").write_text("\n".join(lines) + "\n")
    args = ["--dataset", "files", "--set", "dataset.train=train.jsonl", "--set", "dataset.val=val.jsonl"]
    summary = succeeded(cli("run", *args, *RUN, cwd=tmp_path))
    assert (summary["train_images"], summary["train_texts"], summary["val_images"], summary["val_texts"]) == (8, 24, 4, 12)
    experiment = {"name": "files", "train": str(tmp_path / "train.jsonl"), "val": str(tmp_path / "val.jsonl")}
    check_fed_texts(tmp_path, args, experiment, [f"caption {c} of picture {i}" for i in range(100, 104) for c in range(3)])


# -- the core refuses a caption that is not text, whatever the dataset ------------------------------


class Words:
    """Just enough of an encoder for ``Collate``."""

    def pixel_inputs_uint8(self, images):
        return {"pixel_values": torch.zeros(len(images), 3, 2, 2, dtype=torch.uint8)}

    def tokenize(self, texts):
        return {"input_ids": torch.zeros(len(texts), 1, dtype=torch.long), "attention_mask": torch.ones(len(texts), 1, dtype=torch.long)}


def test_collate_refuses_a_caption_that_is_not_text_and_names_the_fix():
    collate = Collate(Words(), Task())  # type: ignore[arg-type]
    assert collate([Sample(picture(1), "a"), Sample(picture(2), "b")])["input_ids"].shape == (2, 1)
    with pytest.raises(DataError, match=r"caption is list \['a red square', 'a square in red'\], not text \(several captions of one image: give one sample per caption"):
        collate([Sample(picture(1), ["a red square", "a square in red"])])  # type: ignore[arg-type]
    with pytest.raises(DataError, match=r"caption \(image photos/7.jpg\) is int 7, not text; its dataset must give caption as a str"):
        collate([Sample(picture(1), 7, image_id="photos/7.jpg")])  # type: ignore[arg-type]


class Repeated(Dataset):
    """Four rows, two pictures, no ids; ``fields`` as given."""

    def __init__(self, fields: frozenset[str]) -> None:
        self.fields = fields

    def split(self, name: str) -> list[Sample]:
        return [Sample(picture(i // 2), f"text {i}", question=f"question {i}") for i in range(4)]


def test_training_groups_captions_by_content_but_not_questions_about_one_image():
    captions = Repeated(frozenset({"image", "caption"}))
    assert split_groups(captions, "train", captions.split("train")) == [0, 0, 1, 1]
    questions = Repeated(frozenset({"image", "caption", "question", "answer"}))
    assert split_groups(questions, "train", questions.split("train")) is None  # each question its own example


# -- an image-perfect model through the CLI: trained to be right at the image level ---------------

COLOURS = {"red": (220, 30, 30), "green": (30, 200, 30), "blue": (30, 30, 220), "yellow": (230, 230, 30)}
PERFECTED = [*RUN[: RUN.index("--max-steps")], "--max-steps", "40", *RUN[RUN.index("--max-steps") + 2 :]]


def solid(colour: str) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (24, 24), COLOURS[colour]).save(buffer, "PNG")
    return buffer.getvalue()


def colour_rows() -> list[tuple[bytes, str]]:
    """Three captions of each of four colours, one row each, the image's bytes repeated: nothing names the image."""
    return [(solid(c), caption) for c in COLOURS for caption in (c, f"a {c} picture", f"the colour {c}")]


def assert_image_perfect(summary: dict) -> None:
    """Four images, twelve captions: a model right about which colour each caption names ranks each
    caption's image first and one of an image's captions first, once copies are one image."""
    assert (summary["val_images"], summary["val_texts"]) == (4, 12)
    assert summary["metrics"]["i2t_recall@1"] >= 0.9 and summary["metrics"]["t2i_recall@1"] >= 0.9


def test_hf_one_row_per_caption_without_ids_scores_an_image_perfect_model_as_perfect(tmp_path):
    datasets = pytest.importorskip("datasets")
    rows = colour_rows()
    table = datasets.Dataset.from_dict({"image": [image for image, _ in rows], "caption": [caption for _, caption in rows]})
    datasets.DatasetDict({"train": table, "validation": table}).save_to_disk(str(tmp_path / "saved"))
    assert_image_perfect(succeeded(cli("run", "--dataset", "hf", "--set", "dataset.path=saved", *PERFECTED, cwd=tmp_path)))


def test_webdataset_repeating_images_scores_an_image_perfect_model_as_perfect(tmp_path):
    webdataset = pytest.importorskip("webdataset")
    with webdataset.TarWriter(str(tmp_path / "colours.tar")) as writer:
        for i, (image, caption) in enumerate(colour_rows()):
            writer.write({"__key__": f"s{i:03d}", "png": image, "txt": caption.encode()})
    args = ["--dataset", "webdataset", "--set", "dataset.train=colours.tar", "--set", "dataset.val=colours.tar"]
    assert_image_perfect(succeeded(cli("run", *args, *PERFECTED, cwd=tmp_path)))
