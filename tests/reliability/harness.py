"""Bad inputs and faults for the real `mmreg` executable, shared by tests/reliability and benchmarks/reliability.py.

Each case lays out its files in an empty directory (and may copy a finished run
into it), then names the command line. Every case must end with exit code 2, at
most two lines on stderr, no traceback, no new run directory and every file that
was there before byte-identical.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import random
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

# A whole run in a few seconds on a CPU: tiny CLIP, 3 steps, checkpoints at each.
TINY = [
    "--max-steps", "3", "--batch-size", "8", "--device", "cpu",
    "--set", "dataset.train_size=32", "--set", "dataset.val_size=16",
    "--set", "train.eval_batch_size=16", "--set", "encoder.hidden_size=32",
    "--set", "encoder.projection_dim=32", "--set", "model.dim=32",
]  # fmt: skip


def mmreg(*args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    """`python -m mmreg ARGS` in ``cwd`` with no MMREG_* variables of the caller."""
    full = {k: v for k, v in os.environ.items() if not k.startswith("MMREG_")}
    full.update(env or {})
    return subprocess.run([sys.executable, "-m", "mmreg", *args], cwd=cwd, env=full, capture_output=True, text=True, timeout=timeout)


def make_run(where: Path, name: str = "done") -> Path:
    """A finished tiny run (config, checkpoints last and best, summary) under where/runs."""
    result = mmreg("run", *TINY, "--name", name, cwd=where)
    if result.returncode != 0:
        raise RuntimeError(f"the tiny run failed: {result.stderr}")
    return where / "runs" / name


def snapshot(root: Path) -> dict[str, str]:
    """Every file and link under ``root``: its content hash, or its link target."""
    out = {}
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        if path.is_symlink():
            out[rel] = "-> " + os.readlink(path)
        elif path.is_file():
            out[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
        else:
            out[rel] = "dir"
    return out


def images(folder: Path, n: int, prefix: str = "img") -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    names = []
    for i in range(n):
        name = f"{prefix}{i}.png"
        Image.new("RGB", (24, 24), ((i * 40) % 256, 90, 160)).save(folder / name)
        names.append(name)
    return names


def pairs_csv(where: Path, extra_rows: list[str] = (), n: int = 24, header: str = "image_path,caption") -> None:
    """where/pairs.csv with n good image-caption rows, then ``extra_rows``."""
    names = images(where / "img", n)
    rows = [header, *(f"img/{name},a picture number {i}" for i, name in enumerate(names)), *extra_rows]
    (where / "pairs.csv").write_text("\n".join(rows) + "\n")


WDS = ["--dataset", "webdataset", "--set", "dataset.train=train-{000..000}.tar", "--set", "dataset.val=val.tar", "--device", "cpu"]
FILES = ["--dataset", "files", "--set", "dataset.train=pairs.csv", "--batch-size", "4", "--max-steps", "1", "--device", "cpu"]


# A plugin whose fusion is a lazy "module:attr" reference to a module that is not there.
LAZY_FAIL = """from mmreg import hookimpl


@hookimpl
def mmreg_register_fusions(register):
    register("broken", "no_such_module_for_mmreg:Fusion")
"""


@dataclass
class Case:
    id: str
    args: list[str]
    setup: Callable[[Path], None] = lambda d: None
    run: bool = False  # copy a finished run to ./runs/done first
    env: dict[str, str] = field(default_factory=dict)


def write(name: str, content: str | bytes) -> Callable[[Path], None]:
    def setup(d: Path) -> None:
        (d / name).write_bytes(content if isinstance(content, bytes) else content.encode())

    return setup


def picture(name: str) -> Callable[[Path], None]:
    def setup(d: Path) -> None:
        Image.new("RGB", (24, 24), (200, 40, 40)).save(d / name)

    return setup


def damage(rel: str, how: str) -> Callable[[Path], None]:
    """Damage a file of the copied run: truncate, delete, garbage or pickle."""

    def setup(d: Path) -> None:
        path = d / "runs" / "done" / rel
        if how == "truncate":
            data = path.read_bytes()
            path.write_bytes(data[: len(data) // 2])
        elif how == "delete":
            path.unlink()
        elif how == "garbage":
            path.write_bytes(b"\x00\xffnot what it should be\x13" * 20)
        elif how == "pickle":
            path.write_bytes(pickle.dumps({"weight": [1.0, 2.0]}))
        elif how.startswith("edit:"):
            old, new = how[5:].split("=>")
            path.write_text(path.read_text().replace(old, new))

    return setup


def csv_with(*rows: str, n: int = 24) -> Callable[[Path], None]:
    return lambda d: pairs_csv(d, list(rows), n=n)


def corrupt_image(content: bytes, name: str = "bad.png") -> Callable[[Path], None]:
    def setup(d: Path) -> None:
        pairs_csv(d, [f"img/{name},a broken picture"])
        (d / "img" / name).write_bytes(content)

    return setup


def shard(name: str, suffixes: tuple[str, ...] = ("png", "txt"), n: int = 4) -> Callable[[Path], None]:
    """A WebDataset shard (a tar of key.suffix files) of ``n`` samples, each with a file per suffix."""

    def setup(d: Path) -> None:
        with tarfile.open(d / name, "w") as tar:
            for i in range(n):
                for suffix in suffixes:
                    data = f"a picture number {i}".encode()
                    if suffix == "png":
                        buffer = io.BytesIO()
                        Image.new("RGB", (24, 24), (i * 40, 90, 160)).save(buffer, "PNG")
                        data = buffer.getvalue()
                    info = tarfile.TarInfo(f"{i:06d}.{suffix}")
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))

    return setup


def payload_pth(d: Path) -> None:
    """A .pth whose unpickling would create the file PWNED: it must never be unpickled."""

    class Payload:
        def __reduce__(self):  # noqa: D105
            return (os.system, (f"touch {d / 'PWNED'}",))

    (d / "vision.pth").write_bytes(pickle.dumps({"state_dict": Payload()}))


# a VQA rows file: one question on one picture (p.png) per line
VQA_ROW = '{"image": "p.png", "question": "what colour is it", "answers": ["red"]}\n'
VQA_ROWS = [*TINY[:6], "--task", "vqa", "--loss", "bce", "--dataset", "vqa", "--set", "dataset.train.file=q.jsonl", "--set", "dataset.val.file=q.jsonl"]

CASES = [
    # unknown names of every kind
    Case("unknown-encoder", ["run", "--encoder", "clipp"]),
    Case("unknown-fusion", ["run", "--fusion", "gatde"]),
    Case("unknown-loss", ["run", "--loss", "infonse"]),
    Case("unknown-augmenter", ["run", "--augment", "strong"]),
    Case("unknown-peft", ["run", "--peft", "lorra"]),
    Case("unknown-dataset", ["run", "--dataset", "coco"]),
    Case("unknown-task", ["run", "--task", "captioning-xyz"]),
    Case("captioning-without-token-loss", ["run", "--task", "captioning", "--fusion", "none"]),
    Case("vqa-empty-answer-vocabulary", ["run", "--task", "vqa", "--loss", "bce", "--set", "task.min_answer_count=100000"]),
    Case(
        "vqa-question-without-answers",
        ["run", "--task", "vqa", "--loss", "bce", "--dataset", "vqa", "--set", "dataset.train.file=q.csv", "--set", "dataset.val.file=q.csv"],
        write("q.csv", "image,question,answers\nshape.png,what is it?,\n"),
    ),
    Case("vilt-with-a-separate-fusion", ["run", "--encoder", "vilt", "--fusion", "gated", "--task", "vqa", "--loss", "bce"]),
    Case("vilt-for-captioning", ["run", "--encoder", "vilt", "--fusion", "none", "--task", "captioning", "--loss", "lm"]),
    Case("caption-a-retrieval-run", ["caption", "done", "shape.png"], picture("shape.png"), run=True),
    Case("caption-beams-zero", ["caption", "done", "shape.png", "--beams", "0"], picture("shape.png"), run=True),
    Case("caption-missing-image", ["caption", "done", "nowhere.png"], run=True),
    Case("unknown-device", ["run", "--device", "tpu"]),
    Case("unknown-precision", ["run", "--precision", "fp8"]),
    Case("launched-for-fsdp", ["run", *TINY], env={"ACCELERATE_USE_FSDP": "true"}),
    Case("launched-for-deepspeed", ["run", *TINY], env={"ACCELERATE_USE_DEEPSPEED": "true"}),
    Case("unknown-kind-in-list", ["list", "widgets"]),
    Case("unknown-name-in-show", ["show", "fusion", "nope"]),
    Case("unknown-option", ["run", "--epochz", "3"]),
    # wrong types and out-of-range values of every typed option
    Case("max-steps-text", ["run", "--max-steps", "abc"]),
    Case("max-steps-negative", ["run", "--max-steps", "-1"]),  # 0 is valid: the initial weights evaluated, no step
    Case("epochs-negative", ["run", "--epochs", "-1"]),
    Case("batch-size-text", ["run", "--batch-size", "x"]),
    Case("batch-size-one", ["run", "--batch-size", "1"]),
    Case("lr-text", ["run", "--lr", "abc"]),
    Case("lr-negative", ["run", "--lr", "-0.1"]),
    Case("lr-inf", ["run", "--lr", "inf"]),
    Case("lr-nan", ["run", "--lr", "nan"]),
    Case("seed-negative", ["run", "--seed", "-3"]),
    Case("seed-text", ["run", "--seed", "x"]),
    Case("loss-weight-text", ["run", "--loss", "infonce:abc"]),
    Case("loss-weight-negative", ["run", "--loss", "infonce:-1"]),
    Case("loss-twice", ["run", "--loss", "infonce", "--loss", "infonce:0.5"]),
    Case("eval-batch-size-text", ["eval", "done", "--batch-size", "x"], run=True),
    # experiment files: missing, empty, binary, malformed, wrong shape or values
    Case("file-missing", ["run", "nothere.toml"]),
    Case("file-empty", ["run", "exp.toml"], write("exp.toml", "")),
    Case("file-binary", ["run", "exp.toml"], write("exp.toml", bytes(range(256)) * 4)),
    Case("file-bad-toml", ["run", "exp.toml"], write("exp.toml", "[train\nlr = ")),
    Case("file-bad-yaml", ["run", "exp.yaml"], write("exp.yaml", "train: [1, 2\n  lr: : :")),
    Case("file-yaml-list", ["run", "exp.yaml"], write("exp.yaml", "- 1\n- 2\n")),
    Case("file-unknown-format", ["run", "exp.json"], write("exp.json", "{}")),
    Case("file-unknown-key", ["run", "exp.toml"], write("exp.toml", "[train]\nlrr = 0.1\n")),
    Case("file-wrong-type", ["run", "exp.toml"], write("exp.toml", '[train]\nbatch_size = "many"\n')),
    Case("file-lr-inf", ["run", "exp.toml"], write("exp.toml", "[train]\nlr = inf\n")),
    Case("file-lr-inf-string", ["run", "exp.toml"], write("exp.toml", '[train]\nlr = "inf"\n')),
    Case("file-table-is-value", ["run", "exp.toml"], write("exp.toml", 'fusion = "gated"\n')),
    # --set overrides
    Case("set-unknown-key", ["run", "--set", "train.nope=1"]),
    Case("set-unknown-param", ["run", "--set", "fusion.headz=4"]),
    Case("set-not-key-value", ["run", "--set", "train.lr"]),
    Case("set-wrong-type", ["run", "--set", "fusion.heads=many"]),
    Case("set-temperature-inf", ["run", "--set", "loss.infonce.temperature=inf"]),
    Case("set-beyond-float32", ["run", "--set", "loss.infonce.temperature=1e39"]),
    Case("set-unknown-metric", ["run", *TINY, "--set", "train.metric=recal@1"]),
    # impossible combinations
    Case("clip-loss-without-logit-scale", ["run", "--encoder", "dual", "--loss", "clip"]),
    Case("multiview-without-views", ["run", "--loss", "multiview"]),
    Case("labels-missing", ["run", *FILES, "--loss", "ce"], csv_with()),
    Case("fewer-samples-than-a-step", ["run", *TINY, "--batch-size", "40"]),
    Case("resume-with-flags", ["run", "--resume", "runs/done", "--lr", "0.1"], run=True),
    # datasets: missing, empty, header-only, missing columns, bad images, bad text
    Case("files-missing", ["run", *FILES]),
    Case("files-empty", ["run", *FILES], write("pairs.csv", "")),
    Case("files-header-only", ["run", *FILES], write("pairs.csv", "image_path,caption\n")),
    Case("files-missing-column", ["run", *FILES], lambda d: pairs_csv(d, header="path,caption")),
    Case("files-corrupt-image", ["run", *FILES], corrupt_image(b"\x89PNG\r\n\x1a\n" + b"\x00garbage" * 50)),
    Case("files-zero-byte-image", ["run", *FILES], corrupt_image(b"")),
    Case("files-mislabelled-image", ["run", *FILES], corrupt_image(b"this is a text file, not a PNG\n")),
    Case("files-missing-image", ["run", *FILES], csv_with("img/nothere.png,a missing picture")),
    Case("files-image-id-on-two-images", ["run", *FILES, "--set", "dataset.image_id_column=id"],
         lambda d: (images(d / "img", 2), write("pairs.csv", "image_path,caption,id\nimg/img0.png,a,7\nimg/img1.png,b,7\n")(d))),
    Case("shortlist-zero", ["run", "--set", "task.shortlist=0"]),
    Case("shortlist-without-pooled-vectors", ["run", "--encoder", "dual", "--fusion", "gated", "--set", "task.shortlist=8", "--device", "cpu",
                                              "--set", "dataset.train_size=32", "--set", "dataset.val_size=16", "--batch-size", "8"]),
    # above data.full_check_max only headers are read before training: they still find a non-image and a missing file
    Case("files-header-check-non-image", ["run", *FILES, "--set", "data.full_check_max=0"], corrupt_image(b"this is a text file, not a PNG\n")),
    Case("files-header-check-missing-image", ["run", *FILES, "--set", "data.full_check_max=0"], csv_with("img/nothere.png,a missing picture")),
    Case("files-non-utf8", ["run", *FILES], lambda d: (csv_with()(d), (d / "pairs.csv").open("ab").write(b"img/img0.png,caf\xe9\n"))),
    Case("folder-missing", ["run", "--dataset", "folder", "--set", "dataset.root=nothere"]),
    Case("folder-empty", ["run", "--dataset", "folder", "--set", "dataset.root=empty"], lambda d: (d / "empty").mkdir()),
    Case("webdataset-no-shard-matches", ["run", *WDS], shard("val.tar")),
    Case("webdataset-missing-caption-key", ["run", *WDS], lambda d: (shard("train-000.tar", ("png",))(d), shard("val.tar")(d))),
    Case("webdataset-not-a-tar", ["run", *WDS], lambda d: (write("train-000.tar", "not a tar file\n" * 40)(d), shard("val.tar")(d))),
    Case("hf-missing-column", ["run", "--dataset", "hf", "--set", "dataset.path=pairs.csv", "--set", "dataset.image_column=path"], csv_with()),
    Case("hf-hub-id-not-cached", ["run", "--dataset", "hf", "--set", "dataset.path=nobody/no-such-set"], env={"HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1"}),
    # plugins and places
    Case("plugin-file-missing", ["--plugin", "./nothere.py", "list"]),
    Case("plugin-module-missing", ["list"], env={"MMREG_PLUGINS": "no_such_plugin_module"}),
    Case("plugin-lazy-reference-fails", ["--plugin", "lazyfail.py", "run", *TINY, "--fusion", "broken"], write("lazyfail.py", LAZY_FAIL)),
    Case("plugin-reference-malformed", ["--plugin", "lazyfail.py", "list"], write("lazyfail.py", LAZY_FAIL.replace(":Fusion", ".Fusion"))),
    Case("runs-dir-under-a-file", ["run", *TINY, "--runs-dir", "afile/runs"], write("afile", "x")),
    Case("vision-checkpoint-pickle", ["run", "--encoder", "dual", "--set", "encoder.vision_checkpoint=vision.pth", "--fusion", "none"], payload_pth),
    # resume from a non-run or a damaged run
    Case("resume-not-a-run", ["run", "--resume", "."]),
    Case("resume-no-dir", ["run", "--resume", "nothere"]),
    Case("resume-optimizer-truncated", ["run", "--resume", "runs/done"], damage("checkpoints/last/optimizer.safetensors", "truncate"), run=True),
    Case("resume-model-truncated", ["run", "--resume", "runs/done"], damage("checkpoints/last/model.safetensors", "truncate"), run=True),
    Case("resume-model-pickle", ["run", "--resume", "runs/done"], damage("checkpoints/last/model.safetensors", "pickle"), run=True),
    Case("resume-rng-deleted", ["run", "--resume", "runs/done"], damage("checkpoints/last/rng.safetensors", "delete"), run=True),
    Case("resume-state-garbage", ["run", "--resume", "runs/done"], damage("checkpoints/last/state.json", "garbage"), run=True),
    Case("resume-state-deleted", ["run", "--resume", "runs/done"], damage("checkpoints/last/state.json", "delete"), run=True),
    Case("resume-model-deleted", ["run", "--resume", "runs/done"], damage("checkpoints/last/model.safetensors", "delete"), run=True),
    Case("resume-optimizer-garbage", ["run", "--resume", "runs/done"], damage("checkpoints/last/optimizer.safetensors", "garbage"), run=True),
    Case("resume-rng-truncated", ["run", "--resume", "runs/done"], damage("checkpoints/last/rng.safetensors", "truncate"), run=True),
    Case("resume-state-truncated", ["run", "--resume", "runs/done"], damage("checkpoints/last/state.json", "truncate"), run=True),
    Case("resume-checkpoint-gone", ["run", "--resume", "runs/done"], lambda d: shutil.rmtree(d / "runs" / "done" / "checkpoints" / os.readlink(d / "runs" / "done" / "checkpoints" / "last")), run=True),
    Case("resume-config-garbage", ["run", "--resume", "runs/done"], damage("config.toml", "garbage"), run=True),
    Case("resume-config-edited", ["run", "--resume", "runs/done"], damage("config.toml", "edit:batch_size = 8=>batch_size = 12"), run=True),
    # eval and runs on damaged runs
    Case("eval-unknown-run", ["eval", "nope"], run=True),
    Case("eval-model-truncated", ["eval", "done"], damage("checkpoints/best/model.safetensors", "truncate"), run=True),
    Case("eval-model-pickle", ["eval", "done", "--checkpoint", "final"], damage("model.safetensors", "pickle"), run=True),
    Case("eval-config-garbage", ["eval", "done"], damage("config.toml", "garbage"), run=True),
    Case("eval-unknown-checkpoint", ["eval", "done", "--checkpoint", "newest"], run=True),
    Case("eval-unknown-split", ["eval", "done", "--split", "test"], run=True),
    Case("runs-show-summary-garbage", ["runs", "show", "done"], damage("summary.json", "garbage"), run=True),
    Case("runs-show-config-garbage", ["runs", "show", "done"], damage("config.toml", "garbage"), run=True),
    Case("runs-compare-one-broken", ["runs", "compare", "done", "done"], damage("summary.json", "truncate"), run=True),
    # search spaces refused before any trial (and before the study directory exists)
    Case("search-no-table", ["search", "s.toml"], write("s.toml", "seed = 1\n")),
    Case("search-unknown-setting", ["search", "s.toml"], write("s.toml", '[search]\n"train.lrr" = {low = 1e-4, high = 1e-2}\n')),
    Case("search-unknown-param", ["search", "s.toml"], write("s.toml", '[search]\nfusion = ["gated", "cross-attention"]\n"fusion.headz" = [2, 4]\n')),
    Case("search-unknown-fusion", ["search", "s.toml"], write("s.toml", '[search]\nfusion = ["none", "gatde"]\n')),
    Case("search-range-below-constraint", ["search", "s.toml"], write("s.toml", '[search]\n"fusion.heads" = {low = 0, high = 4}\n')),
    Case("search-lr-not-positive", ["search", "s.toml"], write("s.toml", '[search]\n"train.lr" = {low = -1.0, high = 1.0}\n')),
    Case("search-log-from-zero", ["search", "s.toml"], write("s.toml", '[search]\n"train.lr" = {low = 0.0, high = 1.0, log = true}\n')),
    Case("search-low-above-high", ["search", "s.toml"], write("s.toml", '[search]\n"train.lr" = {low = 1e-2, high = 1e-4}\n')),
    Case("search-range-typo", ["search", "s.toml"], write("s.toml", '[search]\n"train.lr" = {lo = 1e-4, high = 1e-2}\n')),
    Case("search-no-declared-range", ["search", "s.toml"], write("s.toml", '[search]\n"train.weight_decay" = {}\n')),
    Case("search-grid-without-step", ["search", "s.toml", "--sampler", "grid"], write("s.toml", '[search]\n"train.lr" = {low = 1e-4, high = 1e-2}\n')),
    Case("search-unknown-sampler", ["search", "s.toml", "--sampler", "bayes"], write("s.toml", '[search]\nfusion = ["none", "gated"]\n')),
    Case("search-param-of-unchosen-loss", ["search", "s.toml"], write("s.toml", '[search]\n"loss.ce.weight" = {low = 0.1, high = 1.0}\n')),
    Case("search-bad-storage", ["search", "s.toml", "--storage", "postgresql://nobody@127.0.0.1:1/none"], write("s.toml", '[search]\nfusion = ["none", "gated"]\n')),
    # `mmreg plugins new`: nothing written, an existing package never overwritten
    Case("plugins-new-bad-name", ["plugins", "new", "My_Fusion", "--kind", "fusion"]),
    Case("plugins-new-unknown-kind", ["plugins", "new", "my-fusion", "--kind", "fuson"]),
    Case("plugins-new-no-kind", ["plugins", "new", "my-fusion"]),
    Case("plugins-new-existing", ["plugins", "new", "my-fusion", "--kind", "loss"], lambda d: write("pyproject.toml", "[project]\nname = 'mine'\n")(_mkdir(d / "my-fusion"))),
    Case("plugins-new-missing-dir", ["plugins", "new", "my-fusion", "--kind", "loss", "--dir", "nowhere"]),
    # trackers: wandb and aim are extras that the dev install leaves out
    Case("track-package-missing", ["run", *TINY, "--track", "tensorboard", "--track", "wandb"]),
    Case("track-unknown-tracker", ["run", *TINY, "--track", "tensorbord"]),
    Case("track-not-a-table", ["run", "e.toml"], write("e.toml", 'track = "mlflow"\n')),
    Case("track-unknown-setting", ["run", "e.toml"], write("e.toml", '[track]\ntrackers = ["mlflow"]\nmlflow_url = "http://x"\n')),
    Case("search-track-package-missing", ["search", "s.toml", "--track", "aim"], write("s.toml", '[search]\nfusion = ["none", "gated"]\n')),
    Case("track-cannot-start", ["run", *TINY, "--track", "mlflow", "--set", "track.mlflow_uri=http://127.0.0.1:9/"], env={"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0"}),
    # tasks as components: their parameters, their metrics, their results
    Case("task-unknown-parameter", ["run", *TINY, "--set", "task.shortlst=4"]),
    Case("task-parameter-of-another-task", ["run", *TINY, "--set", "task.num_beams=2"]),
    Case("task-table-unknown-name", ["run", "e.toml"], write("e.toml", '[task]\nname = "retreival"\n')),
    Case("task-not-a-table", ["run", "e.toml"], write("e.toml", "task = 3\n")),
    Case("train-metric-the-task-never-computes", ["run", *TINY, "--set", "train.metric=cider"]),
    Case("search-direction-against-the-task", ["search", "s.toml", "--direction", "minimize"], write("s.toml", '[search]\nfusion = ["none", "gated"]\n')),
    Case("eval-results-task-without-format", ["eval", "done", "--results", "answers.json"], run=True),
    Case("eval-task-unknown", ["eval", "done", "--task", "zeroshoot", "--dataset", "digits"], run=True),
    # destinations under an existing file
    Case("runs-list-on-a-file", ["runs", "list", "--runs-dir", "afile"], write("afile", "x")),
    Case("export-under-a-file", ["export", "done", "afile/out"], write("afile", "x"), run=True),
    Case("data-inspect-out-under-a-file", ["data", "inspect", "--out", "afile/report"], write("afile", "x")),
    # search options that could run nothing, or never what they name: refused before any study exists
    Case("search-negative-timeout", ["search", "s.toml", "--timeout", "-5"], write("s.toml", '[search]\nfusion = ["none", "gated"]\n')),
    Case("search-metric-never-computed", ["search", "s.toml", "--metric", "cider"], write("s.toml", '[search]\nfusion = ["none", "gated"]\n')),
    Case("search-journal-under-a-file", ["search", "s.toml", "--storage", "afile/j.journal"],
         lambda d: (write("afile", "x")(d), write("s.toml", '[search]\nfusion = ["none", "gated"]\n')(d))),
    Case("search-heartbeat-on-a-journal", ["search", "s.toml", "--heartbeat", "5"], write("s.toml", '[search]\nfusion = ["none", "gated"]\n')),
    # PEFT settings peft itself would refuse mid-build
    Case("peft-dropout-out-of-range", ["run", *TINY, "--peft", "lora", "--set", "peft.vision.lora_dropout=1.5"]),
    Case("peft-lora-on-a-layernorm", ["run", *TINY, "--peft", "lora", "--set", 'peft.vision.target_modules=["layer_norm1"]']),
    # VQA rows files that are cut off or malformed
    Case("vqa-rows-cut-off", ["run", *VQA_ROWS], lambda d: (picture("p.png")(d), write("q.jsonl", VQA_ROW + VQA_ROW[:30])(d))),
    Case("vqa-rows-not-objects", ["run", *VQA_ROWS], lambda d: (picture("p.png")(d), write("q.jsonl", VQA_ROW + "[1, 2]\n")(d))),
    # predict, export, data inspect, eval and runs on the surfaces added since
    Case("predict-top-k-zero", ["predict", "done", "p.png", "--text", "a red circle", "--top-k", "0"], picture("p.png"), run=True),
    Case("predict-missing-image", ["predict", "done", "nowhere.png", "--text", "a red circle"], run=True),
    Case("predict-unknown-checkpoint", ["predict", "done", "p.png", "--text", "a red circle", "--checkpoint", "bset"], picture("p.png"), run=True),
    Case("export-existing-destination", ["export", "done", "out"], lambda d: _mkdir(d / "out"), run=True),
    Case("export-unknown-run", ["export", "nothere", "out"]),
    Case("data-inspect-unknown-split", ["data", "inspect", "--split", "test"]),
    Case("data-inspect-n-zero", ["data", "inspect", "--n", "0"]),
    Case("eval-output-under-a-file", ["eval", "done", "--output", "afile/m.json"], write("afile", "x"), run=True),
    Case("eval-set-outside-task-and-dataset", ["eval", "done", "--task", "zeroshot", "--dataset", "digits", "--set", "train.lr=1"], run=True),
    Case("runs-compare-unknown-run", ["runs", "compare", "done", "nothere"], run=True),
    Case("vqa-question-id-not-a-number", ["run", *VQA_ROWS],
         lambda d: (picture("p.png")(d), write("q.jsonl", VQA_ROW + VQA_ROW.replace('"answers"', '"question_id": "q7", "answers"'))(d))),
    # repeated seeds, groups and filters
    Case("run-seeds-repeated", ["run", *TINY, "--seeds", "0,1,0"]),
    Case("run-seeds-not-numbers", ["run", *TINY, "--seeds", "zero,one"]),
    Case("run-seeds-and-repeat", ["run", *TINY, "--seeds", "0,1", "--repeat", "3"]),
    Case("run-repeat-zero", ["run", *TINY, "--repeat", "0"]),
    Case("run-resume-with-seeds", ["run", "--resume", "runs/done", "--seeds", "0,1"], run=True),
    Case("runs-list-where-without-value", ["runs", "list", "--where", "fusion.name"], run=True),
    Case("runs-list-where-unknown-setting", ["runs", "list", "--where", "fusion.nmae=gated"], run=True),
    Case("runs-list-unknown-status", ["runs", "list", "--status", "finished"], run=True),
    Case("runs-compare-plot-under-a-file", ["runs", "compare", "done", "done", "--plot", "afile/c.png"], write("afile", "x"), run=True),
    Case("runs-compare-two-formats", ["runs", "compare", "done", "done", "--markdown", "--csv"], run=True),
    # the weights' moving average and evaluation sets
    Case("ema-decay-one", ["run", *TINY, "--set", "train.ema=1.0"]),
    Case("ema-metric-without-ema", ["run", *TINY, "--set", "train.metric=ema/recall@1"]),
    Case("eval-set-unknown-dataset", ["run", "e.toml", *TINY], write("e.toml", '[eval_sets.shift]\ndataset = "nowhere"\n')),
    Case("eval-set-metric-never-computed", ["run", "e.toml", *TINY, "--set", "train.metric=shift/acc1"],
         write("e.toml", '[eval_sets.shift]\nset = ["dataset.noise=50"]\n')),
]



def _mkdir(path: Path) -> Path:
    path.mkdir()
    return path


def prepare_case(case: Case, where: Path, finished_run: Path | None) -> None:
    """Lay out a case's files in ``where`` (an empty directory)."""
    if case.run:
        assert finished_run is not None
        shutil.copytree(finished_run, where / "runs" / "done", symlinks=True)
    case.setup(where)


def check_refused(case: Case, where: Path) -> str | None:
    """Run the case in ``where``; None if mmreg refused it as promised, else what went wrong."""
    runs_before = sorted(p.name for p in (where / "runs").iterdir()) if (where / "runs").is_dir() else []
    before = snapshot(where)
    result = mmreg(*case.args, cwd=where, env=case.env)
    lines = result.stderr.strip().splitlines()
    runs_after = sorted(p.name for p in (where / "runs").iterdir()) if (where / "runs").is_dir() else []
    if result.returncode != 2:
        return f"exit {result.returncode}: {result.stderr[-600:]}"
    if not 1 <= len(lines) <= 2 or "Traceback" in result.stderr:
        return f"stderr is not one or two lines: {result.stderr[-600:]}"
    if runs_after != runs_before:
        return f"a run directory was created: {sorted(set(runs_after) - set(runs_before))}"
    if snapshot(where) != before:
        changed = {k for k in set(before) | set(snapshot(where)) if before.get(k) != snapshot(where).get(k)}
        return f"files changed: {sorted(changed)[:5]}"
    if (where / "PWNED").exists():
        return "a pickle was unpickled"
    return None


# -- faults ------------------------------------------------------------------------

# A run whose every step writes a checkpoint, so kills land inside writes too.
KILLED = [*TINY, "--max-steps", "30", "--set", "dataset.train_size=64", "--set", "train.checkpoint_every=1",
          "--set", "train.eval_every=10", "--set", "train.log_every=1"]  # fmt: skip


def start(*args: str, cwd: Path) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MMREG_")}
    return subprocess.Popen([sys.executable, "-m", "mmreg", *args], cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def writing(checkpoints: Path) -> bool:
    """Whether a checkpoint is being written: its hidden directory or link exists."""
    return checkpoints.is_dir() and any(p.name.startswith((".last.", ".best.")) for p in checkpoints.iterdir())


def kill_at_a_random_moment(proc: subprocess.Popen, checkpoints: Path, rng: random.Random, mid_write: bool) -> bool | None:
    """Once a checkpoint exists, SIGKILL after a random delay (or as soon as a checkpoint write is
    under way); return whether a write was under way, or None when the run ended first."""
    while not (checkpoints / "last").exists():
        if proc.poll() is not None:
            return None
        time.sleep(0.002)
    deadline = time.monotonic() + rng.uniform(0.0, 1.5)
    while time.monotonic() < deadline or (mid_write and time.monotonic() < deadline + 5):
        if proc.poll() is not None:
            return None
        if mid_write and writing(checkpoints):
            break
        time.sleep(0.0005)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    return writing(checkpoints)


def kill_and_resume(
    where: Path, kills: int = 10, seed: int = 0, whole_args: Sequence[str] = (), killed_args: Sequence[str] = ()
) -> dict[str, object]:
    """Train ``KILLED`` (plus ``whole_args``) once whole, then again (plus ``killed_args``) SIGKILLed
    ``kills`` times (every other kill as soon as a checkpoint write is under way), resuming after each
    kill and checking that ``checkpoints/last`` is whole. Returns the counts and whether the final
    weights and metrics equal the whole run's."""
    from mmreg.checkpoint import read_state

    whole = mmreg("run", *KILLED, *whole_args, "--name", "whole", cwd=where)
    assert whole.returncode == 0, whole.stderr
    rng = random.Random(seed)
    run_dir = where / "runs" / "killed"
    checkpoints = run_dir / "checkpoints"
    proc = start("run", *KILLED, *killed_args, "--name", "killed", cwd=where)
    done, inside_a_write, whole_checkpoints = 0, 0, 0
    while done < kills:
        landed = kill_at_a_random_moment(proc, checkpoints, rng, mid_write=done % 2 == 0)
        if landed is None:  # the run finished before the kill
            break
        done += 1
        inside_a_write += landed
        read_state(checkpoints / "last")  # raises unless the checkpoint is whole
        files = ("model.safetensors", "optimizer.safetensors", "rng.safetensors", "state.json")
        whole_checkpoints += all((checkpoints / "last" / f).is_file() for f in files)
        proc = start("run", "--resume", str(run_dir), cwd=where)
    finished = proc.wait(timeout=600) == 0
    same_weights = finished and (run_dir / "model.safetensors").read_bytes() == (where / "runs" / "whole" / "model.safetensors").read_bytes()
    read = lambda d: [json.loads(line) for line in (d / "metrics.jsonl").read_text().splitlines()]  # noqa: E731
    return {
        "kills": done,
        "kills_inside_a_checkpoint_write": inside_a_write,
        "whole_checkpoints_after_kills": whole_checkpoints,
        "finished": finished,
        "same_weights": same_weights,
        "same_metrics": finished and read(run_dir) == read(where / "runs" / "whole"),
        "leftovers": sorted(p.name for p in checkpoints.iterdir() if p.name.startswith((".last.", ".best."))),
    }
