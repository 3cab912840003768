"""The webdataset dataset: shards written here, streamed through the real loaders; lanes disjoint across
processes and workers, every process the same batch count, exact resume, every val sample once; shards
whose samples are not stored together, and undecodable images, through the real CLI: refused before the
run directory, or skipped and counted as the data check line says."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import tarfile
from functools import partial
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

import mmreg
from mmreg.api import prepare
from mmreg.components import Sample
from mmreg.config import validate
from mmreg.data import AugmentedSplit, make_loader
from mmreg.errors import DataError
from mmreg.streams import IterableSamples, LazySample, StreamSplit, check_stream, stream_loader

HERE = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(HERE))
from test_cli import cli, one_error_line  # noqa: E402 - the CLI driver every CLI test shares

BROKEN = b"\x89PNG\r\n\x1a\n but not a picture"  # a PNG signature, then nothing an image has


def png(i: int) -> bytes:
    data = io.BytesIO()
    Image.new("RGB", (24, 24), ((i * 40) % 256, (i * 7) % 256, 160)).save(data, "PNG")
    return data.getvalue()


def write_shard(path: Path, first: int, n: int, *, several: bool = False, broken: int | None = None) -> None:
    """A WebDataset shard as the webdataset library writes it; ``several``: json lists of two captions;
    ``broken``: the sample numbered so holds ``BROKEN`` as its png."""
    import webdataset

    with webdataset.TarWriter(str(path)) as writer:
        for i in range(first, first + n):
            caption = {"json": json.dumps([f"picture {i}", f"image {i}"]).encode()} if several else {"txt": f"a picture number {i}".encode()}
            writer.write({"__key__": f"s{i:05d}", "png": BROKEN if i == broken else png(i), **caption})


def write_by_extension(path: Path, first: int, n: int) -> None:
    """A shard holding every sample's png first, then every txt: a sample's files not stored together."""
    with tarfile.open(path, "w") as tar:
        for suffix in ("png", "txt"):
            for i in range(first, first + n):
                data = png(i) if suffix == "png" else f"a picture number {i}".encode()
                info = tarfile.TarInfo(f"s{i:05d}.{suffix}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))


def shards(where: Path) -> dict:
    """Four training shards of 16 samples, two val shards of 8 images (the second with two captions each)."""
    for s in range(4):
        write_shard(where / f"train-{s:03d}.tar", s * 16, 16)
    write_shard(where / "val-000.tar", 100, 8)
    write_shard(where / "val-001.tar", 108, 8, several=True)
    return {"name": "webdataset", "train": str(where / "train-{000..003}.tar"), "val": [str(where / "val-000.tar"), str(where / "val-001.tar")]}


def experiment(where: Path, **train) -> dict:
    return {
        "encoder": {"name": "clip", "hidden_size": 32, "projection_dim": 32, "layers": 1},
        "fusion": {"name": "none"},
        "dataset": shards(where),
        "model": {"dim": 32},
        "train": {"batch_size": 8, "eval_batch_size": 16, "lr": 3e-3, "device": "cpu", **train},
        "runs_dir": str(where / "runs"),
    }


def captions(samples):
    return [s.caption for s in samples]


def test_shards_are_indexed_with_one_row_per_caption_sharing_the_image_id(tmp_path):
    p = prepare(validate(experiment(tmp_path)))
    assert len(p.train_split) == 64 and len(p.val_split) == 8 + 16
    assert p.dataset.texts("val")[8:10] == ["picture 108", "image 108"]
    rows = list(p.dataset.split("val").stream(0, 1, 0))
    assert [r.load().image_id for r in rows[:8]] == [None] * 8  # one caption: the row's own image
    shard = str(tmp_path / "val-001.tar")
    assert [r.load().image_id for r in rows[8:12]] == [f"{shard}#s00108", f"{shard}#s00108", f"{shard}#s00109", f"{shard}#s00109"]
    assert rows[0].load().image.size == (24, 24)


def test_one_key_in_two_shards_is_two_images(tmp_path):
    """Keys are unique within a shard, not across shards (each writer numbers from 0): the id names both."""
    write_shard(tmp_path / "a.tar", 0, 2, several=True)
    write_shard(tmp_path / "b.tar", 0, 2, several=True)
    with tarfile.open(tmp_path / "b.tar") as tar:  # the same keys, other pictures
        members = [(m, tar.extractfile(m).read()) for m in tar.getmembers()]
    with tarfile.open(tmp_path / "b.tar", "w") as tar:
        for member, data in members:
            data = png(50 + int(member.name[1:6])) if member.name.endswith(".png") else data
            member.size = len(data)
            tar.addfile(member, io.BytesIO(data))
    write_shard(tmp_path / "train.tar", 0, 8)
    dataset = {"name": "webdataset", "train": str(tmp_path / "train.tar"), "val": [str(tmp_path / "a.tar"), str(tmp_path / "b.tar")]}
    p = prepare(validate({**experiment(tmp_path), "dataset": dataset}))
    ids = [r.load().image_id for r in p.dataset.split("val").stream(0, 1, 0)]
    assert len(ids) == 8 and len(set(ids)) == 4  # two captions of each of four images, not two images


def test_lanes_split_processes_and_workers_without_duplication_and_resume_exactly(tmp_path):
    p = prepare(validate(experiment(tmp_path)))
    seen = {}
    for rank in (0, 1):  # the loaders two processes build, each with two DataLoader workers
        sampler, loader = stream_loader(AugmentedSplit(p.train_split, [], 0), captions, 8, 0, rank=rank, world=2, num_workers=2, pin_memory=False)
        sampler.set_epoch(3)
        batches = list(loader)
        assert len(batches) == len(sampler) == 4
        seen[rank] = [c for batch in batches for c in batch]
        sampler.set_epoch(3, start_at=1)  # resumed after one batch: the rest of the same epoch, served by rotated lanes
        assert list(loader) == batches[1:]
    assert not set(seen[0]) & set(seen[1])
    assert sorted(seen[0] + seen[1]) == sorted(p.dataset.texts("train"))  # equal shards: the epoch is every sample once
    sampler.set_epoch(4)
    assert [c for batch in loader for c in batch] != seen[1]  # a new epoch, a new deal and order


def test_evaluation_reads_every_val_sample_once_across_workers(tmp_path):
    p = prepare(validate(experiment(tmp_path)))
    assert isinstance(p.val_split, StreamSplit)
    loader = make_loader(p.val_split, captions, 5, shuffle=False, seed=0, num_workers=2)
    read = [c for batch in loader for c in batch]
    assert sorted(read) == sorted(p.dataset.texts("val"))


def test_a_stream_run_stopped_mid_epoch_resumes_to_the_same_weights(tmp_path):
    class Stop(Exception):
        pass

    class StopAt(mmreg.components.LoopCallback):
        def on_step_start(self, step: int) -> None:
            if step == 3:
                raise Stop

    common = {"max_steps": 6, "checkpoint_every": 1, "eval_every": 6}
    whole = mmreg.run({**experiment(tmp_path, **common), "name": "whole", "data": {"num_workers": 2}}, progress=False)
    with pytest.raises(Stop):
        mmreg.run({**experiment(tmp_path, **common), "name": "stopped", "data": {"num_workers": 2}}, progress=False, callbacks=[StopAt()])
    run_dir = tmp_path / "runs" / "stopped"
    assert json.loads((run_dir / "checkpoints" / "last" / "state.json").read_text())["loop"]["step"] == 3
    resumed = mmreg.run(resume=run_dir, progress=False)
    assert resumed["final_loss"] == whole["final_loss"] and resumed["metrics"] == whole["metrics"]
    a, b = load_file(run_dir / "model.safetensors"), load_file(tmp_path / "runs" / "whole" / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_two_processes_never_see_the_same_sample_in_an_epoch(tmp_path):
    exp = experiment(tmp_path)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MMREG_")}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(HERE / "distributed_stream.py"), json.dumps(exp)]
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        _, err = proc.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        raise AssertionError("2-process stream hung") from None
    assert proc.returncode == 0, err[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0]["batches"] == ranks[1]["batches"] == 4
    for epoch in (0, 1):
        first, second = (set(r["seen"][epoch]) for r in ranks)
        assert len(first) == len(second) == 32 and not first & second
    assert ranks[0]["seen"][0] != ranks[0]["seen"][1]


def test_a_sample_without_its_caption_file_is_named_with_its_shard(tmp_path):
    with tarfile.open(tmp_path / "bad.tar", "w") as tar:
        data = b"not read"
        info = tarfile.TarInfo("k1.png")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    exp = experiment(tmp_path)
    exp["dataset"]["train"] = str(tmp_path / "bad.tar")
    with pytest.raises(DataError, match=r"bad.tar sample 'k1' has no txt or json file \(it has: png\); set dataset.caption_key"):
        prepare(validate(exp))


def test_data_inspect_reads_a_stream_and_counts_the_shared_images(tmp_path):
    from mmreg.inspection import inspect_data

    report = inspect_data(experiment(tmp_path), split="val", n=4, out=tmp_path / "inspect")
    assert report["samples"] == {"train": 64, "val": 24} and report["shown"] == {"split": "val", "samples": 4}
    assert report["duplicates"]["val"]["images"] == 8  # the second val shard: two captions per image


def test_skip_bad_leaves_out_every_row_of_an_undecodable_image_with_several_captions(tmp_path):
    exp = experiment(tmp_path)
    write_shard(tmp_path / "val-001.tar", 108, 8, several=True, broken=109)
    p = prepare(validate({**exp, "data": {"skip_bad": True}}))
    assert len(p.val_split) == 24 - 2 and p.skipped["val"] == [f"shard {tmp_path / 'val-001.tar'} member s00109.png: not a readable image (cannot identify image file)"]
    read = [c for batch in make_loader(p.val_split, captions, 5, shuffle=False, seed=0) for c in batch]
    assert len(read) == 22 and "picture 109" not in read and "image 109" not in read
    with pytest.raises(DataError, match=r"split 'val': 1 of 24 samples unusable: .*member s00109.png: .*; fix or remove them or skip them"):
        prepare(validate(exp))


def test_a_stream_that_does_not_name_its_samples_is_checked_but_cannot_skip_them():
    class Unnamed(IterableSamples):
        name = "dataset 'x' split 'train'"

        def __len__(self) -> int:
            return 3

        def stream(self, lane, lanes, epoch, repeat=0):
            def make(i: int) -> Sample:
                if i == 1:
                    raise OSError("truncated")
                return Sample(Image.new("RGB", (4, 4)), f"caption {i}")

            return (LazySample(partial(make, i)) for i in range(3))

    for skip in (False, True):
        with pytest.raises(DataError, match=r"1 of 3 samples unusable: dataset 'x' split 'train' row 1: OSError: truncated; fix or remove them"):
            check_stream(StreamSplit(Unnamed()), "x", "train", "full", skip)
    assert check_stream(StreamSplit(Unnamed()), "x", "train", "headers", False) == []  # nothing decoded before training
    batch = next(iter(make_loader(StreamSplit(Unnamed()), list, 3, shuffle=False, seed=0)))
    assert [type(item).__name__ for item in batch] == ["Sample", "Unreadable", "Sample"]  # the loaders' Collate leaves it out


# -- the data check of a stream, through the real CLI ---------------------------------------------

CLI = [
    "run", "--dataset", "webdataset", "--set", "dataset.train=train-{000..001}.tar", "--set", "dataset.val=val.tar",
    "--runs-dir", "runs", "--device", "cpu", "--max-steps", "4", "--batch-size", "8", "--fusion", "none",
    "--set", "train.eval_batch_size=16", "--set", "encoder.hidden_size=32", "--set", "encoder.projection_dim=32",
    "--set", "encoder.layers=1", "--set", "model.dim=32", "--set", "dataset.shuffle_buffer=0",
]  # fmt: skip


def cli_shards(where: Path, *, broken: int | None = None) -> None:
    """Two training shards of 16 samples (``broken``: the sample numbered so has no image) and one val shard of 16."""
    write_shard(where / "train-000.tar", 0, 16, broken=broken)
    write_shard(where / "train-001.tar", 16, 16, broken=broken)
    write_shard(where / "val.tar", 100, 16)


def no_run(where: Path) -> bool:
    return not (where / "runs").exists() or not any((where / "runs").iterdir())


@pytest.mark.parametrize("split", ["train", "val"])
def test_a_shard_whose_sample_files_are_not_stored_together_is_refused_before_the_run(tmp_path, split):
    cli_shards(tmp_path)
    shard = tmp_path / ("train-001.tar" if split == "train" else "val.tar")
    write_by_extension(shard, 16 if split == "train" else 100, 16)
    line = one_error_line(cli(*CLI, cwd=tmp_path))
    assert line.startswith(f"error: shard {shard.name}: the files of sample 's{16 if split == 'train' else 100:05d}' are not stored together")
    assert "tar --sort=name" in line and "webdataset.TarWriter" in line
    assert no_run(tmp_path)


def test_a_shard_with_an_undecodable_image_is_refused_before_the_run_when_every_image_is_decoded(tmp_path):
    cli_shards(tmp_path, broken=19)
    line = one_error_line(cli(*CLI, cwd=tmp_path))
    assert line == (
        "error: dataset 'webdataset' split 'train': 1 of 32 samples unusable: shard train-001.tar member s00019.png: "
        "not a readable image (cannot identify image file); fix or remove them or skip them with --set data.skip_bad=true"
    )
    assert no_run(tmp_path)


def test_skip_bad_leaves_an_undecodable_image_of_a_stream_out_and_counts_it(tmp_path):
    cli_shards(tmp_path, broken=19)
    result = cli(*CLI, "--set", "data.skip_bad=true", "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "data check: train: 32 samples' images fully decoded before training (up to data.full_check_max=50000)" in result.stderr
    summary = json.loads(result.stdout)
    assert summary["skipped"] == {"train": 1, "val": 0} and summary["train_size"] == 31 and "unreadable" not in summary


def test_past_full_check_max_an_undecodable_image_is_skipped_and_counted_as_the_check_line_says(tmp_path):
    cli_shards(tmp_path, broken=19)
    limits = ["--set", "data.full_check_max=20", "--set", "data.max_unreadable=0.05"]  # train: 32 samples, 1 may fail
    result = cli(*CLI, *limits, "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (
        "data check: train: 32 samples, more than data.full_check_max=20: streamed: its samples counted before training, "
        "no image decoded; images that fail to decode while loading are skipped and counted (at most data.max_unreadable=0.05)"
    ) in result.stderr
    assert "data check: val: 16 samples' images fully decoded before training (up to data.full_check_max=20)" in result.stderr
    summary = json.loads(result.stdout)
    assert summary["unreadable"]["train"] == {"count": 1, "names": ["shard train-001.tar member s00019.png: not a readable image (cannot identify image file)"]}
    assert summary["steps"] == 4 and "skipped" not in summary
