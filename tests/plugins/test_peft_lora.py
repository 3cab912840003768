"""`lora`: per-tower LoRA through peft; frozen base, adapters in peft's format, honest counts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import mmreg
from mmreg.api import prepare, resolve
from mmreg.config import validate
from mmreg.errors import ConfigError
from mmreg.history import rebuild_run
from mmreg.plugins import load_plugins
from mmreg_plugins.encoders.clip import ClipParams, build_tiny

SIZES = {"train_size": 32, "val_size": 16, "image_size": 32}
TRAIN = {"batch_size": 8, "eval_batch_size": 16, "lr": 3e-3, "max_steps": 3}


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny CLIP saved with save_pretrained: base weights that come from a file, as a real checkpoint's do."""
    directory = tmp_path_factory.mktemp("clip")
    captions = load_plugins().registry("datasets").build("shapes", SIZES, seed=0).texts("train")
    torch.manual_seed(0)
    encoder = build_tiny(ClipParams(hidden_size=32, projection_dim=32, layers=2), captions)
    encoder.model.save_pretrained(directory)
    encoder.save_preprocessing(directory)
    return directory


def lora_experiment(tmp_path: Path, clip_dir: Path, **peft: object) -> dict:
    return {
        "encoder": {"name": "clip", "pretrained": str(clip_dir)},
        "fusion": {"name": "none"},
        "peft": {"name": "lora", **peft},
        "dataset": {"name": "shapes", **SIZES},
        "model": {"dim": 32},
        "train": TRAIN,
        "runs_dir": str(tmp_path),
        "name": "lora",
    }


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory: pytest.TempPathFactory, clip_dir: Path) -> dict:
    tmp = tmp_path_factory.mktemp("runs")
    return mmreg.run(lora_experiment(tmp, clip_dir), progress=False)


def test_frozen_base_weights_are_bit_identical_after_a_lora_run(lora_run: dict, clip_dir: Path) -> None:
    from transformers import CLIPModel

    base = CLIPModel.from_pretrained(clip_dir).state_dict()
    trained = load_file(Path(lora_run["run_dir"]) / "model.safetensors")
    compared = 0
    for key, value in trained.items():
        if ".base_model.model." not in key or "lora_" in key:
            continue
        tower, _, rest = key.removeprefix("encoder.model.").partition(".base_model.model.")
        original = base[f"{tower}.{rest.replace('.base_layer', '')}"]
        assert torch.equal(value, original), key
        compared += 1
    tower_keys = [k for k in base if k.startswith(("vision_model.", "text_model."))]
    assert compared == len(tower_keys) > 0
    assert any("lora_B" in k and trained[k].abs().sum() > 0 for k in trained), "the adapters did not train"


def test_adapters_load_with_peft_alone_and_give_the_same_embeddings(lora_run: dict, clip_dir: Path) -> None:
    from peft import PeftModel
    from transformers import CLIPModel

    run_dir = Path(lora_run["run_dir"])
    config = json.loads((run_dir / "adapters" / "vision" / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA" and config["r"] == 16 and config["lora_alpha"] == 32
    assert sorted(config["target_modules"]) == ["q_proj", "v_proj"]
    assert json.loads((run_dir / "adapters" / "text" / "adapter_config.json").read_text())["r"] == 8

    clip = CLIPModel.from_pretrained(clip_dir).eval()
    vision = PeftModel.from_pretrained(clip.vision_model, run_dir / "adapters" / "vision").eval()
    text = PeftModel.from_pretrained(clip.text_model, run_dir / "adapters" / "text").eval()

    p = rebuild_run(run_dir, run_dir / "model.safetensors")
    encoder = p.model.encoder.eval()
    samples = p.val_split[:4]
    pixels = encoder.preprocess([s.image for s in samples])
    tokens = encoder.tokenize([s.caption for s in samples])
    with torch.no_grad():
        inside = encoder.encode_images(pixels).tokens, encoder.encode_texts(tokens["input_ids"], tokens["attention_mask"]).tokens
        outside = vision(pixel_values=pixels).last_hidden_state, text(**tokens).last_hidden_state
    for a, b in zip(inside, outside, strict=True):
        assert torch.allclose(a, b, atol=1e-6)


def test_trainable_counts_equal_peft_counting_the_docs_model(lora_run: dict, clip_dir: Path) -> None:
    from peft import LoraConfig, get_peft_model
    from transformers import CLIPModel

    clip = CLIPModel.from_pretrained(clip_dir)
    for name, tower, r, alpha in (("vision", clip.vision_model, 16, 32), ("text", clip.text_model, 8, 16)):
        config = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=0.1, target_modules=["q_proj", "v_proj"])
        trainable, total = get_peft_model(tower, config).get_nb_trainable_parameters()
        assert lora_run["towers"][name] == {"parameters": total, "trainable_parameters": trainable}
    share = 100 * lora_run["trainable_parameters"] / lora_run["parameters"]
    assert lora_run["trainable_percent"] == pytest.approx(share, abs=1e-4) and share < 50


def test_eval_reloads_the_lora_run_and_gives_its_final_metrics(lora_run: dict) -> None:
    from mmreg.history import evaluate_run

    result = evaluate_run(lora_run["run_dir"], checkpoint="final", device="cpu")
    assert {k: result[k] for k in lora_run["metrics"]} == lora_run["metrics"]


def test_per_tower_settings_and_a_tower_left_full_or_frozen(tmp_path: Path, clip_dir: Path) -> None:
    from peft import PeftModel

    settings = {"vision": {"r": 4, "target_modules": ["q_proj", "k_proj", "v_proj"]}, "text": "freeze"}
    exp = resolve(validate(lora_experiment(tmp_path, clip_dir, **settings)), load_plugins())
    assert exp.peft.params["vision"]["lora_alpha"] == 32  # unset fields keep the docs' defaults
    model = prepare(exp).model
    vision, text = model.encoder.model.vision_model, model.encoder.model.text_model
    assert isinstance(vision, PeftModel) and vision.peft_config["default"].r == 4
    assert sorted(vision.peft_config["default"].target_modules) == ["k_proj", "q_proj", "v_proj"]
    assert not isinstance(text, PeftModel) and not any(p.requires_grad for p in text.parameters())
    full = prepare(validate(lora_experiment(tmp_path, clip_dir, text="full"))).model.encoder.model.text_model
    assert not isinstance(full, PeftModel) and all(p.requires_grad for p in full.parameters())


@pytest.mark.parametrize(
    ("peft", "says"),
    [
        ({"vision": {"r": 0}}, "peft.vision.r must be a whole number of at least 1 (got 0)"),
        ({"text": {"rank": 8}}, "peft.text.rank: LoraConfig has no field 'rank'"),
        ({"vision": "frozen"}, "peft.vision is 'frozen'; give a table of lora settings, or one of: full, freeze"),
        (
            {"vision": {"target_modules": ["query"]}},
            "peft.vision.target_modules: 'query' is not a module of this tower",
        ),
    ],
)
def test_bad_lora_settings_name_the_setting_and_what_is_allowed(tmp_path: Path, clip_dir: Path, peft: dict, says: str) -> None:
    with pytest.raises(ConfigError, match="^" + says.replace("(", r"\(").replace(")", r"\)")) as info:
        prepare(validate(lora_experiment(tmp_path, clip_dir, **peft)))
    if "target_modules" in says:
        listed = str(info.value).rpartition("(modules lora can adapt: ")[2]
        assert "q_proj" in listed and "fc1" in listed and "layer_norm1" not in listed
    assert not any(tmp_path.iterdir()), "nothing is written for a refused setting"


def test_lora_on_dual_with_a_timm_vit_trains(tmp_path: Path) -> None:
    summary = mmreg.run(
        {
            "encoder": {"name": "dual"},
            "fusion": {"name": "none"},
            "peft": {"name": "lora"},
            "dataset": {"name": "shapes", **SIZES},
            "model": {"dim": 32},
            "train": {**TRAIN, "max_steps": 4},
            "runs_dir": str(tmp_path),
        },
        progress=False,
    )
    run_dir = Path(summary["run_dir"])
    assert json.loads((run_dir / "adapters" / "vision" / "adapter_config.json").read_text())["target_modules"] == ["qkv"]
    assert sorted(json.loads((run_dir / "adapters" / "text" / "adapter_config.json").read_text())["target_modules"]) == ["query", "value"]
    losses = [json.loads(line)["loss"] for line in (run_dir / "metrics.jsonl").read_text().splitlines() if '"train"' in line]
    assert all(torch.isfinite(torch.tensor(losses)))
    adapters = load_file(run_dir / "adapters" / "vision" / "adapter_model.safetensors")
    assert any("lora_B" in k and v.abs().sum() > 0 for k, v in adapters.items()), "lora_B starts at zero; training moved it"
    assert 0 < summary["towers"]["vision"]["trainable_parameters"] < summary["towers"]["vision"]["parameters"]
