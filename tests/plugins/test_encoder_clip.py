"""The `clip` encoder plugin: tiny preset, EOS pooling, save/load round trip, errors, registry."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

import mmreg_plugins.encoders.clip_plugin as clip_plugin
from mmreg.components import Modality
from mmreg.errors import ConfigError, InvalidParams
from mmreg.plugins import PluginHost
from mmreg_plugins.encoders.clip import ClipEncoder

build = ClipEncoder.create

CAPTIONS = ["A red circle at the top.", "a blue square, on the left", "a green triangle in the centre"]


@pytest.fixture(scope="module")
def encoder() -> ClipEncoder:
    torch.manual_seed(0)
    return build(captions=CAPTIONS).eval()


def images(n: int) -> list[Image.Image]:
    return [Image.new("RGB", (50, 40), (40 * i, 200 - 30 * i, 90)) for i in range(n)]


def test_tokenize_pads_to_longest_with_bos_eos_and_spells_unseen_words(encoder: ClipEncoder) -> None:
    tok = encoder.tokenizer
    batch = encoder.tokenize(["a red circle", "a purple circle at the top left"])
    ids, mask = batch["input_ids"], batch["attention_mask"]
    width = ids.shape[1]  # the longest: "purple" is in no caption, so it takes several byte-level pieces
    assert ids.shape == mask.shape and width > 9
    assert (ids[:, 0] == tok.bos_token_id).all()
    assert ((ids == tok.eos_token_id).sum(dim=1) == 1).all()
    assert ids[0, 4].item() == tok.eos_token_id and (ids[0, 5:] == tok.pad_token_id).all()
    assert mask[0].tolist() == [1] * 5 + [0] * (width - 5) and mask[1].all()
    assert tok.unk_token_id not in ids
    assert tok.decode(ids[1], skip_special_tokens=True).strip() == "a purple circle at the top left"  # nothing lost
    assert tok.convert_ids_to_tokens(ids[0, 1:4].tolist()) == ["Ġa", "Ġred", "Ġcircle"]  # caption words: one token each


def test_tokenize_truncates_at_max_length_and_keeps_eos() -> None:
    enc = build(captions=CAPTIONS, max_length=6)
    ids = enc.tokenize(["a red circle at the top on the left"])["input_ids"]
    assert ids.shape == (1, 6)
    assert ids[0, -1].item() == enc.tokenizer.eos_token_id


def test_preprocess_and_encode_shapes(encoder: ClipEncoder) -> None:
    pixels = encoder.preprocess(images(3))
    assert pixels.shape == (3, 3, 32, 32) and pixels.dtype == torch.float32
    with torch.no_grad():
        img = encoder.encode_images(pixels)
        batch = encoder.tokenize(CAPTIONS[:2])
        txt = encoder.encode_texts(**batch)
    assert isinstance(img, Modality) and isinstance(txt, Modality)
    assert img.pooled.shape == (3, encoder.image_pooled_dim) == (3, 64)
    assert img.tokens.shape == (3, 1 + (32 // 8) ** 2, encoder.image_token_dim) == (3, 17, 64)
    assert img.mask is None
    length = batch["input_ids"].shape[1]
    assert txt.pooled.shape == (2, encoder.text_pooled_dim) == (2, 64)
    assert txt.tokens.shape == (2, length, encoder.text_token_dim)
    assert txt.mask.dtype == torch.bool and torch.equal(txt.mask, batch["attention_mask"].bool())
    assert encoder.gives_tokens


def test_dims_follow_params() -> None:
    enc = build(captions=CAPTIONS, hidden_size=32, projection_dim=16, image_size=16, heads=2)
    assert (enc.image_token_dim, enc.text_token_dim, enc.image_pooled_dim, enc.text_pooled_dim) == (32, 32, 16, 16)
    with torch.no_grad():
        img = enc.encode_images(enc.preprocess(images(1)))
    assert img.tokens.shape == (1, 1 + 2 * 2, 32) and img.pooled.shape == (1, 16)


def test_text_pooling_is_at_the_eos_token(encoder: ClipEncoder) -> None:
    tok = encoder.tokenizer
    assert encoder.model.config.text_config.eos_token_id == tok.eos_token_id != 2
    batch = encoder.tokenize(["a red circle", "a blue square on the left"])
    ids, mask = batch["input_ids"], batch["attention_mask"]
    eos_at = 4
    assert ids[0, eos_at].item() == tok.eos_token_id and mask[0, eos_at + 1 :].eq(0).all()
    word = len(tok) - 1  # the largest id: argmax (eos_token_id == 2) pooling would pool here
    with torch.no_grad():
        base = encoder.encode_texts(ids, mask)
        padded = ids.clone()
        padded[0, eos_at + 1] = word
        after_pad = encoder.encode_texts(padded, mask)
        worded = ids.clone()
        worded[0, 2] = tok.convert_tokens_to_ids("Ġblue")
        after_word = encoder.encode_texts(worded, mask)
        by_hand = encoder.model.text_projection(base.tokens[0, eos_at])
    torch.testing.assert_close(base.pooled[0], by_hand)
    torch.testing.assert_close(after_pad.pooled, base.pooled)
    assert not torch.allclose(after_word.pooled[0], base.pooled[0])
    torch.testing.assert_close(after_word.pooled[1], base.pooled[1])


def test_save_and_load_pretrained_round_trip(encoder: ClipEncoder, tmp_path) -> None:
    encoder.model.save_pretrained(tmp_path)
    encoder.save_preprocessing(tmp_path)
    loaded = build(captions=[], pretrained=str(tmp_path)).eval()
    assert isinstance(loaded, ClipEncoder)
    texts = ["a red circle", "a purple square at the top left"]
    batch, again = encoder.tokenize(texts), loaded.tokenize(texts)
    assert all(torch.equal(batch[k], again[k]) for k in ("input_ids", "attention_mask"))
    pixels, pixels_again = encoder.preprocess(images(2)), loaded.preprocess(images(2))
    torch.testing.assert_close(pixels_again, pixels)
    with torch.no_grad():
        torch.testing.assert_close(loaded.encode_images(pixels).pooled, encoder.encode_images(pixels).pooled)
        torch.testing.assert_close(loaded.encode_texts(**batch).pooled, encoder.encode_texts(**batch).pooled)
    assert (loaded.image_pooled_dim, loaded.text_token_dim) == (encoder.image_pooled_dim, encoder.text_token_dim)


def test_missing_pretrained_path_is_a_one_line_config_error(tmp_path) -> None:
    missing = tmp_path / "no-such-checkpoint"
    with pytest.raises(ConfigError) as info:
        build(captions=CAPTIONS, pretrained=str(missing))
    message = str(info.value)
    assert str(missing) in message and "\n" not in message
    assert "save_pretrained" in message


def test_non_clip_checkpoint_is_a_config_error(tmp_path) -> None:
    from transformers import BertConfig

    BertConfig(hidden_size=8, num_hidden_layers=1, num_attention_heads=1, intermediate_size=8).save_pretrained(tmp_path)
    with pytest.raises(ConfigError, match="'bert' checkpoint, not 'clip'"):
        build(captions=CAPTIONS, pretrained=str(tmp_path))


def test_no_captions_still_builds_a_tokenizer_of_every_byte() -> None:
    tok = build(captions=[]).tokenizer
    ids = tok("Ça va? 日本")["input_ids"]
    assert len(tok) == 4 + 256 and tok.unk_token_id not in ids
    assert tok.decode(ids, skip_special_tokens=True).strip() == "ça va? 日本"


def test_build_through_the_registry() -> None:
    host = PluginHost(strict=True)
    host.register_object("encoder-clip", clip_plugin)
    registry = host.registry("encoders")
    assert "clip" in registry and registry.get("clip").help
    enc = registry.build("clip", {"hidden_size": 32}, captions=CAPTIONS)
    assert isinstance(enc, ClipEncoder) and enc.text_token_dim == 32
    with pytest.raises(InvalidParams, match="no parameter 'hidden'"):
        registry.build("clip", {"hidden": 32}, captions=CAPTIONS)
    with pytest.raises(InvalidParams, match="not a multiple of heads"):
        registry.build("clip", {"hidden_size": 30}, captions=CAPTIONS)
