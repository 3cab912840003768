"""`mmreg export`: a run's encoder, adapters merged, loads with its own libraries alone and gives the same embeddings."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import mmreg
from mmreg.errors import ConfigError
from mmreg.export import export_run
from mmreg.history import rebuild_run

SIZES = {"train_size": 32, "val_size": 16, "image_size": 32}


def lora_run(tmp_path: Path, encoder: dict) -> Path:
    summary = mmreg.run(
        {
            "encoder": encoder,
            "fusion": {"name": "gated", "heads": 2},
            "peft": {"name": "lora"},
            "dataset": {"name": "shapes", **SIZES},
            "model": {"dim": 32},
            "train": {"batch_size": 8, "eval_batch_size": 16, "lr": 3e-3, "max_steps": 3},
            "runs_dir": str(tmp_path / "runs"),
            "name": "r",
        },
        progress=False,
    )
    return Path(summary["run_dir"])


def test_clip_export_loads_with_transformers_alone_and_matches(tmp_path: Path) -> None:
    from transformers import AutoImageProcessor, AutoTokenizer, CLIPModel

    run_dir = lora_run(tmp_path, {"name": "clip", "hidden_size": 32, "projection_dim": 32})
    result = export_run(run_dir, tmp_path / "out", checkpoint="final")
    assert result["merged_adapters"] == ["text", "vision"]

    out = tmp_path / "out" / "encoder"
    clip = CLIPModel.from_pretrained(out).eval()
    tokenizer, processor = AutoTokenizer.from_pretrained(out), AutoImageProcessor.from_pretrained(out)
    assert not any("lora" in k for k in clip.state_dict()), "adapters are merged into the base weights"

    p = rebuild_run(run_dir, run_dir / "model.safetensors")  # the unmerged model, as trained
    encoder = p.model.encoder.eval()
    samples = p.val_split[:4]
    images, captions = [s.image for s in samples], [s.caption for s in samples]
    with torch.no_grad():
        tokens = encoder.tokenize(captions)
        inside = encoder.encode_images(encoder.preprocess(images)).pooled, encoder.encode_texts(**tokens).pooled
        batch = tokenizer(captions, padding="longest", return_tensors="pt")
        pixels = processor(images=images, return_tensors="pt")["pixel_values"]
        outside = clip.get_image_features(pixel_values=pixels).pooler_output, clip.get_text_features(**batch).pooler_output
    for a, b in zip(inside, outside, strict=True):
        assert torch.allclose(a, b, atol=1e-5)

    config = json.loads((tmp_path / "out" / "head" / "config.json").read_text())
    assert config["fusion"]["name"] == "gated" and config["dim"] == 32
    head = load_file(tmp_path / "out" / "head" / "model.safetensors")
    assert sorted(head) == config["tensors"] and any(k.startswith("fusion.") for k in head)
    with pytest.raises(ConfigError, match="already exists"):
        export_run(run_dir, tmp_path / "out", checkpoint="final")


def test_dual_export_loads_with_timm_and_transformers_alone_and_matches(tmp_path: Path) -> None:
    import timm
    from transformers import AutoModel, AutoTokenizer

    run_dir = lora_run(tmp_path, {"name": "dual"})
    proc = subprocess.run(
        [sys.executable, "-m", "mmreg", "export", str(run_dir), str(tmp_path / "out"), "--checkpoint", "final"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "adapters merged: text, vision" in proc.stdout

    vision = timm.create_model(f"local-dir:{tmp_path / 'out' / 'encoder' / 'vision'}", pretrained=True).eval()
    text = AutoModel.from_pretrained(tmp_path / "out" / "encoder" / "text").eval()
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "out" / "encoder" / "text")

    p = rebuild_run(run_dir, run_dir / "model.safetensors")
    encoder = p.model.encoder.eval()
    samples = p.val_split[:4]
    pixels = encoder.preprocess([s.image for s in samples])
    captions = [s.caption for s in samples]
    with torch.no_grad():
        tokens = encoder.tokenize(captions)
        assert torch.allclose(encoder.encode_images(pixels).tokens, vision.forward_features(pixels), atol=1e-5)
        batch = tokenizer(captions, padding="longest", return_tensors="pt")
        assert torch.allclose(encoder.encode_texts(**tokens).tokens, text(**batch).last_hidden_state, atol=1e-5)
