"""`blip`: the tiny preset captions through its own decoder; a checkpoint loads with from_pretrained."""

from __future__ import annotations

import pytest
import torch

import mmreg
from mmreg.api import collate_for, prepare
from mmreg.config import validate
from mmreg.errors import ConfigError
from mmreg.plugins import load_plugins

TINY = {
    "seed": 0,
    "task": {"name": "captioning", "max_new_tokens": 6},
    "encoder": {"name": "blip", "hidden_size": 32},
    "fusion": {"name": "none"},
    "loss": {"lm": {}},
    "model": {"dim": 32},
    "dataset": {"name": "shapes", "train_size": 32, "val_size": 16},
    "train": {"max_steps": 3, "batch_size": 8, "eval_batch_size": 16},
}


def test_captioning_trains_blips_own_decoder(tmp_path):
    p = prepare(validate(TINY))
    decoder = p.model.encoder.text_decoder
    assert p.model.head.decoder is decoder
    assert not any(k.startswith("head.") for k in p.model.state_dict())  # saved once, as the encoder's
    before = decoder.bert.encoder.layer[0].crossattention.self.query.weight.detach().clone()
    summary = mmreg.run({**TINY, "runs_dir": str(tmp_path)}, progress=False)
    assert set(summary["metrics"]) == {"cider", "bleu4"}
    from safetensors.torch import load_file

    saved = load_file(f"{summary['run_dir']}/model.safetensors")
    assert not torch.equal(saved["encoder.model.text_decoder.bert.encoder.layer.0.crossattention.self.query.weight"], before)


def tiny_checkpoint(directory):
    """A BlipForConditionalGeneration and BlipProcessor (BERT word pieces) saved as a hub checkpoint is."""
    from transformers import BertTokenizerFast, BlipConfig, BlipForConditionalGeneration, BlipImageProcessor, BlipProcessor

    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "large", "small", "red", "blue", "green", "circle", "square", "cross"]
    vocab = directory / "vocab.txt"
    vocab.write_text("\n".join(words) + "\n")
    tokenizer = BertTokenizerFast(vocab_file=str(vocab))
    shared = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2}
    text = {**shared, "vocab_size": len(words) + 1, "encoder_hidden_size": 32, "bos_token_id": len(words), "pad_token_id": 0, "sep_token_id": 3}
    config = BlipConfig(text_config=text, vision_config={**shared, "image_size": 32, "patch_size": 8})
    BlipForConditionalGeneration(config).save_pretrained(directory)
    BlipProcessor(BlipImageProcessor(size={"height": 32, "width": 32}), tokenizer).save_pretrained(directory)


def test_a_saved_checkpoint_loads_with_from_pretrained_and_captions(tmp_path):
    tiny_checkpoint(tmp_path)
    exp = {**TINY, "encoder": {"name": "blip", "pretrained": str(tmp_path)}}
    p = prepare(validate(exp))
    assert p.model.encoder.image_token_dim == 32 and p.task.bos_token_id == 14 and p.task.eos_token_id == 3
    batch = collate_for(p)(p.val_split[:2])
    assert batch["caption_ids"][0, 0].item() == 14  # the decoder starts from [DEC], as BLIP's does
    p.task.num_beams = 2
    with torch.no_grad():
        captions = p.task.generate(p.model.head, p.model.encode(batch).image_tokens)
    assert len(captions) == 2 and all(isinstance(c, str) for c in captions)
    # its decoder has an id ([DEC]) its tokenizer does not name, so the vocabulary cannot grow a prompt's new words
    with pytest.raises(ConfigError, match=r"prompt word '\w+' is not in the encoder's vocabulary, which cannot grow"):
        prepare(validate({**exp, "task": {**TINY["task"], "prompt": "a picture of"}}))


def test_a_prompt_of_new_words_joins_the_vocabulary_and_the_run_predicts_after_it(tmp_path):
    from PIL import Image

    from mmreg.predict import predict_images

    exp = {**TINY, "task": {**TINY["task"], "prompt": "A picture of"}, "runs_dir": str(tmp_path)}  # shapes' captions lack "picture", "of"
    p = prepare(validate(exp))
    tokenizer = p.model.encoder.tokenizer
    assert tokenizer.unk_token_id not in tokenizer("a picture of")["input_ids"]
    assert p.model.encoder.text_decoder.get_input_embeddings().num_embeddings == len(tokenizer)
    batch = collate_for(p)(p.val_split[:2])
    prompt = p.task.prompt_ids()
    assert batch["caption_ids"][0, 1 : len(prompt)].tolist() == prompt[1:]
    summary = mmreg.run(exp, progress=False)
    image = tmp_path / "shape.png"
    Image.new("RGB", (40, 40), (200, 30, 30)).save(image)
    [caption] = predict_images(summary["run_dir"], [image], device="cpu")[0]["predictions"]  # the rebuilt run's weights fit
    assert caption["caption"].startswith("A picture of")


def test_a_missing_checkpoint_is_one_line():
    with pytest.raises(ConfigError, match="cannot load BLIP checkpoint '/nowhere/blip'"):
        load_plugins().registry("encoders").build("blip", {"pretrained": "/nowhere/blip"}, captions=["a"])
