"""PEFT runs rebuild from base checkpoint + adapters + trained_outside.safetensors as the README says,
and a target module peft cannot wrap is refused before the run directory exists."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

import mmreg
from mmreg.adapters import OUTSIDE, outside_adapters, peft_towers, save_adapters
from mmreg.api import prepare
from mmreg.components import Encoder
from mmreg.config import validate
from mmreg.errors import ConfigError
from mmreg.history import rebuild_run
from test_peft_lora import SIZES, clip_dir  # noqa: F401 - the base checkpoint fixture, shared

README = Path(__file__).parents[2] / "README.md"
TRAIN = {"batch_size": 8, "eval_batch_size": 16, "lr": 3e-3, "max_steps": 3}
METHODS = {
    "lora": {"name": "lora"},
    "ia3": {"name": "peft", "method": "ia3"},
    "dora": {"name": "peft", "method": "lora", "vision": {"r": 4, "use_dora": True}, "text": {"r": 4, "use_dora": True}},
}


def experiment(runs: Path, clip_dir: Path, peft: dict[str, Any], **changes: Any) -> dict[str, Any]:
    return {
        "encoder": {"name": "clip", "pretrained": str(clip_dir)},
        "fusion": {"name": "none"},
        "peft": peft,
        "dataset": {"name": "shapes", **SIZES},
        "model": {"dim": 32},
        "train": TRAIN,
        "runs_dir": str(runs),
        **changes,
    }


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MMREG_")}
    env["COLUMNS"] = "200"
    command = [sys.executable, "-m", "mmreg", *args]
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=180, check=False)


def one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    return lines[0]


def readme_recipe(base: Path, run_dir: Path) -> dict[str, Any]:
    """Run the README's adapter recipe for this base checkpoint and run; return its names."""
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.DOTALL)
    [code] = [b for b in blocks if "trained_outside.safetensors" in b]
    code = re.sub(r'^BASE = ".*"', f"BASE = {str(base)!r}", code, count=1, flags=re.MULTILINE)
    code = re.sub(r'^RUN = Path\(".*"\)', f"RUN = Path({str(run_dir)!r})", code, count=1, flags=re.MULTILINE)
    assert str(base) in code and str(run_dir) in code, "the recipe names BASE and RUN as the test expects"
    names: dict[str, Any] = {}
    exec(compile(code, str(README), "exec"), names)  # noqa: S102 - the documentation's own code
    return names


@pytest.mark.parametrize("method", sorted(METHODS))
def test_base_plus_adapters_as_the_readme_says_gives_the_runs_own_scores(tmp_path: Path, clip_dir: Path, method: str) -> None:
    summary = mmreg.run(experiment(tmp_path, clip_dir, METHODS[method]), progress=False)
    run_dir = Path(summary["run_dir"])
    outside = load_file(run_dir / "adapters" / OUTSIDE)
    base = load_file(clip_dir / "model.safetensors")
    for name in ("visual_projection.weight", "text_projection.weight"):  # trained beside the adapters, in no adapter file
        assert not torch.equal(outside[f"encoder.model.{name}"], base[name]), f"{name} did not train"
    assert not any("lora_" in k or "ia3_" in k for k in outside), "adapters are peft's files' alone"

    p = rebuild_run(run_dir, run_dir / "model.safetensors")
    samples = list({s.caption: s for s in (p.val_split[i] for i in range(len(p.val_split)))}.values())[:6]  # distinct captions
    files = []
    for i, sample in enumerate(samples):
        sample.image.save(tmp_path / f"{i}.png")  # lossless: the pixels the recipe reads below
        files.append(str(tmp_path / f"{i}.png"))
    texts = [arg for s in samples for arg in ("--text", s.caption)]
    predicted = cli("predict", run_dir.name, *files, *texts, "--top-k", "6", "--checkpoint", "final", "--json", "--runs-dir", str(tmp_path), cwd=tmp_path)
    assert predicted.returncode == 0, predicted.stderr
    by_text = [{row["text"]: row["score"] for row in image["predictions"]} for image in json.loads(predicted.stdout)]
    run_scores = torch.tensor([[row[s.caption] for s in samples] for row in by_text])  # `mmreg predict`'s own scores

    recipe = readme_recipe(clip_dir, run_dir)
    scores = recipe["scores"]([s.image for s in samples], [s.caption for s in samples])
    assert scores.shape == run_scores.shape == (6, 6)
    assert torch.allclose(scores.float(), run_scores.float(), atol=1e-5), (scores - run_scores).abs().max()

    recipe["clip"].load_state_dict({k: base[k] for k in ("visual_projection.weight", "text_projection.weight")}, strict=False)
    without = recipe["scores"]([s.image for s in samples], [s.caption for s in samples])
    assert (without - run_scores).abs().max() > 1e-3, "the file's weights are what makes the rebuild the run"


def test_the_file_holds_every_weight_outside_the_adapters_and_nothing_of_them(tmp_path: Path, clip_dir: Path) -> None:
    """With mmreg's own projections (model.dim differs from CLIP's), a fusion with weights and a
    tower left full: all of them, by the run model's names, and no adapter. CLIP's projections
    do not train under a fusion that reads tokens (ClipEncoder.use): the base checkpoint's stand."""
    peft = {"name": "lora", "text": "full"}
    model = prepare(validate(experiment(tmp_path, clip_dir, peft, fusion={"name": "gated"}, model={"dim": 16}))).model
    save_adapters(model, tmp_path / "adapters")
    saved = load_file(tmp_path / "adapters" / OUTSIDE)
    assert sorted(peft_towers(model.encoder)) == ["vision"] and (tmp_path / "adapters" / "vision" / "adapter_config.json").is_file()

    state = model.state_dict(keep_vars=True)
    adapters = {id(p) for m in peft_towers(model.encoder).values() for p in m.parameters()}
    trained = {k for k, t in state.items() if isinstance(t, torch.nn.Parameter) and t.requires_grad and id(t) not in adapters}
    added = {k for k in state if not k.startswith("encoder.")}
    assert {"image_proj.weight", "text_proj.weight"} <= set(saved) and "encoder.model.visual_projection.weight" not in saved
    assert any(k.startswith("fusion.") for k in saved) and any(k.startswith("encoder.model.text_model.") for k in saved)
    assert set(saved) == trained | added
    assert not any(k.startswith("encoder.model.vision_model.") for k in saved), "the adapted tower is peft's file's"
    for key, value in saved.items():
        assert torch.equal(value, state[key].detach()), key


def test_running_statistics_are_kept_for_towers_they_move_in() -> None:
    """BatchNorm's running mean moves in training even under frozen or adapted weights."""
    encoder = Encoder()
    encoder.conv, encoder.norm = torch.nn.Conv2d(3, 4, 1), torch.nn.BatchNorm2d(4)
    encoder.requires_grad_(False)
    model = torch.nn.Module()
    model.encoder = encoder
    stats = ["encoder.norm.num_batches_tracked", "encoder.norm.running_mean", "encoder.norm.running_var"]
    assert sorted(outside_adapters(model, encoder)) == stats, "frozen weights are the base's; the statistics are not"


def test_lora_on_a_layer_norm_is_refused_naming_the_type_and_what_lora_adapts(tmp_path: Path, clip_dir: Path) -> None:
    with pytest.raises(ConfigError) as info:
        prepare(validate(experiment(tmp_path, clip_dir, {"name": "lora", "vision": {"target_modules": ["q_proj", "layer_norm1"]}})))
    says = str(info.value)
    assert says.startswith("peft.vision.target_modules: 'layer_norm1' is a torch.nn.LayerNorm, which lora cannot adapt")
    assert "(peft's lora adapts torch.nn.Linear, torch.nn.Embedding, torch.nn.Conv1d, torch.nn.Conv2d" in says
    offered = says.rpartition("modules of this tower it can adapt: ")[2].split(", ")
    assert {"q_proj", "v_proj", "fc1", "patch_embedding", "position_embedding"} <= set(offered)
    assert not any("norm" in name for name in offered)

    regex = {"name": "lora", "vision": {"target_modules": r".*\.0\.layer_norm1"}}
    says = "'encoder.layers.0.layer_norm1' (matched by the regex '.*\\.0\\.layer_norm1') is a torch.nn.LayerNorm, which lora cannot"
    with pytest.raises(ConfigError, match=re.escape(says)):
        prepare(validate(experiment(tmp_path, clip_dir, regex)))

    ia3 = {"name": "peft", "method": "ia3", "vision": {"target_modules": ["position_embedding"]}}
    with pytest.raises(ConfigError) as info:  # IA3 adapts fewer types: no Embedding
        prepare(validate(experiment(tmp_path, clip_dir, ia3)))
    assert "'position_embedding' is a torch.nn.Embedding, which ia3 cannot adapt" in str(info.value)
    assert "position_embedding" not in str(info.value).rpartition("it can adapt: ")[2]
    assert not any(tmp_path.iterdir())


def test_a_missing_target_lists_only_modules_the_method_adapts(tmp_path: Path, clip_dir: Path) -> None:
    with pytest.raises(ConfigError, match=r"^peft\.vision\.target_modules: 'query' is not a module of this tower") as info:
        prepare(validate(experiment(tmp_path, clip_dir, {"name": "lora", "vision": {"target_modules": ["query"]}})))
    listed = str(info.value).rpartition("(modules lora can adapt: ")[2].rstrip(")").split(", ")
    assert "q_proj" in listed and "fc1" in listed and not any("norm" in name for name in listed)


def test_cli_refuses_lora_on_a_layer_norm_in_one_line_before_the_run_directory(tmp_path: Path) -> None:
    result = cli(
        "run", "--encoder", "clip", "--fusion", "none", "--peft", "lora", "--max-steps", "1", "--batch-size", "4",
        "--set", "dataset.train_size=8", "--set", "dataset.val_size=8",
        "--set", 'peft.vision.target_modules=["layer_norm1"]', "--runs-dir", "runs",
        cwd=tmp_path,
    )  # fmt: skip
    line = one_error_line(result)
    assert "peft.vision.target_modules: 'layer_norm1' is a torch.nn.LayerNorm, which lora cannot adapt" in line
    assert "torch.nn.Linear" in line and "q_proj" in line
    assert not (tmp_path / "runs").exists()
