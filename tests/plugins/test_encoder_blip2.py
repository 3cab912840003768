"""`blip2`: a saved Blip2ForConditionalGeneration (OPT or T5) trains and writes as transformers does;
LAVIS's defaults train only the Q-Former, its queries and the projection; captions and open-ended answers."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

import mmreg
from mmreg.api import collate_for, prepare
from mmreg.config import validate
from mmreg.errors import ConfigError, IncompatibleParts
from mmreg.export import export_run
from mmreg.plugins import load_plugins

CAPTIONS = ["a large red circle", "a small blue square", "a large green cross", "a small red square"]
BRIDGE = ("query_tokens", "qformer.", "language_projection.")  # what LAVIS trains


def tiny_checkpoint(directory, language_model: str) -> None:
    """A Blip2ForConditionalGeneration and Blip2Processor saved as a hub checkpoint is, with a tokenizer
    that adds special tokens as the real ones do: OPT's a leading </s>, T5's a final </s>."""
    from tokenizers.processors import TemplateProcessing
    from transformers import Blip2Config, Blip2ForConditionalGeneration, Blip2Processor, BlipImageProcessor

    from mmreg.text import build_tokenizer

    tokenizer = build_tokenizer(CAPTIONS + ["a picture of", "what shape is it"], 32)
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    single = f"{tokenizer.bos_token} $A" if language_model == "opt" else f"$A {tokenizer.eos_token}"
    tokenizer.backend_tokenizer.post_processor = TemplateProcessing(
        single=single, special_tokens=[(tokenizer.bos_token, bos), (tokenizer.eos_token, eos)]
    )
    processor = Blip2Processor(BlipImageProcessor(size={"height": 32, "width": 32}), tokenizer, num_query_tokens=4)
    ids = {"vocab_size": len(tokenizer), "pad_token_id": tokenizer.pad_token_id, "eos_token_id": eos}
    if language_model == "opt":
        text = {"model_type": "opt", "hidden_size": 32, "ffn_dim": 64, "word_embed_proj_dim": 32, "num_hidden_layers": 2,
                "num_attention_heads": 2, "bos_token_id": bos, **ids}  # fmt: skip
    else:
        text = {"model_type": "t5", "d_model": 32, "d_ff": 64, "d_kv": 16, "num_layers": 2, "num_heads": 2,
                "decoder_start_token_id": tokenizer.pad_token_id, **ids}  # fmt: skip
    config = Blip2Config(
        vision_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2, "image_size": 32, "patch_size": 8},
        qformer_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2, "encoder_hidden_size": 32},
        text_config=text, num_query_tokens=4, image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
    )  # fmt: skip
    torch.manual_seed(0)
    model = Blip2ForConditionalGeneration(config)
    with torch.no_grad():
        model.query_tokens.normal_(0.0, config.initializer_range)
    model.save_pretrained(directory)
    processor.save_pretrained(directory)


@pytest.fixture(scope="module", params=["opt", "t5"])
def checkpoint(request, tmp_path_factory):
    directory = tmp_path_factory.mktemp(f"blip2-{request.param}")
    tiny_checkpoint(directory, request.param)
    return request.param, directory


def experiment(directory, runs_dir=None, task=None, **extra):
    exp = {
        "seed": 0,
        "task": task or {"name": "captioning", "max_new_tokens": 5},
        "encoder": {"name": "blip2", "pretrained": str(directory), "max_length": 64},  # no caption cut: the references are whole
        "fusion": {"name": "none"},
        "loss": {"lm": {"label_smoothing": 0.0}},
        "dataset": {"name": "shapes", "train_size": 16, "val_size": 8},
        "train": {"max_steps": 2, "batch_size": 8, "eval_batch_size": 8, "lr": 1e-3},
        **extra,
    }
    if runs_dir is not None:
        exp["runs_dir"] = str(runs_dir)
    return exp


def shapes(n: int) -> list[Image.Image]:
    colours = [(220, 30, 30), (30, 30, 220), (30, 200, 30), (200, 200, 30)]
    return [Image.new("RGB", (40, 40), colours[i % 4]) for i in range(n)]


def reference(directory):
    from transformers import Blip2ForConditionalGeneration, Blip2Processor

    return Blip2ForConditionalGeneration.from_pretrained(directory).eval(), Blip2Processor.from_pretrained(directory)


@pytest.mark.parametrize("prompt", ["", "a picture of"])
def test_the_loss_is_transformers_labels_loss(checkpoint, prompt):
    kind, directory = checkpoint
    p = prepare(validate(experiment(directory, task={"name": "captioning", "prompt": prompt})))
    samples = p.val_split[:4]
    batch = collate_for(p)(samples)
    p.model.eval()
    with torch.no_grad():
        ours, parts = p.model(batch)
    model, processor = reference(directory)
    tokenizer, captions = processor.tokenizer, [s.caption for s in samples]
    images = [s.image for s in samples]
    if kind == "opt":  # the prompt and caption as one text, </s> closing it; only the caption is scored
        texts = [f"{prompt} {c}".strip() for c in captions]
        rows = [processor(images=images[:1], text=t)["input_ids"][0] + [tokenizer.eos_token_id] for t in texts]
        skip = 4 + len(tokenizer(prompt)["input_ids"])
        width = max(map(len, rows))
        input_ids = torch.tensor([r + [tokenizer.pad_token_id] * (width - len(r)) for r in rows])
        mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows])
        labels = input_ids.masked_fill(mask == 0, -100)
        labels[:, :skip] = -100
    else:  # T5's encoder reads the prompt, its decoder writes the caption
        inputs = processor(images=images, text=[prompt] * 4, return_tensors="pt")
        input_ids, mask = inputs["input_ids"], inputs["attention_mask"]
        targets = tokenizer(captions, padding=True, return_tensors="pt")
        labels = targets["input_ids"].masked_fill(targets["attention_mask"] == 0, -100)
    pixels = processor.image_processor(images, return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        theirs = model(pixel_values=pixels, input_ids=input_ids, attention_mask=mask, labels=labels).loss
    assert torch.allclose(ours, theirs, rtol=1e-5, atol=1e-6), (ours, theirs)
    assert torch.equal(batch["lm_labels"], labels)


@pytest.mark.parametrize("beams", [1, 3])
@pytest.mark.parametrize("prompt", ["", "a picture of"])
def test_captions_are_transformers_generate(checkpoint, prompt, beams):
    kind, directory = checkpoint
    p = prepare(validate(experiment(directory, task={"name": "captioning", "prompt": prompt, "num_beams": beams, "max_new_tokens": 6})))
    model, processor = reference(directory)
    images = shapes(3)
    p.model.eval()
    with torch.no_grad():
        ours = p.task.predict(p.model, p.model.encoder.pixel_inputs(images), [], 1)
    inputs = processor(images=images, text=[prompt] * 3, return_tensors="pt")
    out = model.generate(**inputs, num_beams=beams, max_new_tokens=6, do_sample=False)
    written = out if kind == "t5" else out[:, inputs["input_ids"].shape[1] :]
    theirs = [f"{prompt} {t.strip()}".strip() for t in processor.tokenizer.batch_decode(written, skip_special_tokens=True)]
    assert [c[0]["caption"] for c in ours] == theirs


def test_by_default_only_the_q_former_its_queries_and_the_projection_train(checkpoint, tmp_path):
    kind, directory = checkpoint
    summary = mmreg.run(experiment(directory, tmp_path), progress=False)
    before = load_file(str(directory / "model.safetensors"))
    after = {k.removeprefix("encoder.model."): v for k, v in load_file(f"{summary['run_dir']}/model.safetensors").items()}
    changed = {k for k in before if k in after and not torch.equal(before[k], after[k])}
    trains = {k for k in before if k.startswith(BRIDGE)}
    assert changed == trains and len(trains) > 10  # every bridge weight moved, nothing else by a bit
    assert any(k.startswith("language_model.") for k in before) and any(k.startswith("vision_model.") for k in before)
    parts = summary["parts"]
    assert parts["bridge"]["trainable_parameters"] == parts["bridge"]["parameters"] > 0
    assert parts["text"]["trainable_parameters"] == 0 and parts["vision"]["trainable_parameters"] == 0
    assert parts["text"]["frozen_parameters"] == parts["text"]["parameters"] > 0


def test_train_vision_trains_the_vit_in_fp32_under_autocast(checkpoint):
    kind, directory = checkpoint
    p = prepare(validate(experiment(directory, encoder={"name": "blip2", "pretrained": str(directory), "train_vision": True})))
    encoder = p.model.encoder
    assert all(t.requires_grad for t in encoder.model.vision_model.parameters())
    assert not any(t.requires_grad for t in encoder.model.language_model.parameters())
    seen = []
    hook = encoder.model.vision_model.register_forward_hook(lambda m, i, o: seen.append(o.last_hidden_state.dtype))
    batch = collate_for(p)(p.train_split[:2])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss, _ = p.model(batch)
    hook.remove()
    assert seen == [torch.float32] and torch.isfinite(loss)


@pytest.mark.parametrize("language_model", ["opt", "t5"])
def test_from_a_config_every_trainable_weight_gets_a_gradient(language_model):
    exp = experiment("unused", task={"name": "captioning", "prompt": "a picture of"})
    exp["encoder"] = {"name": "blip2", "language_model": language_model, "train_vision": True}
    p = prepare(validate(exp))
    queries = p.model.encoder.model.query_tokens
    assert queries.std() > 0.01 and not torch.equal(queries[0, 0], queries[0, 1])  # drawn as LAVIS does, not transformers' zeros
    loss, _ = p.model.train()(collate_for(p)(p.train_split[:8]))
    loss.backward()
    silent = [n for n, t in p.model.named_parameters() if t.requires_grad and (t.grad is None or not t.grad.abs().sum() > 0)]
    assert not silent and sum(t.requires_grad for t in p.model.parameters()) > 20


def test_open_ended_vqa_scores_what_is_written_by_the_official_accuracy(monkeypatch):
    from mmreg.components import Sample
    from mmreg_plugins.tasks.captioning import ConditionedLanguageModel

    exp = experiment("unused", task={"name": "vqa"})
    exp["encoder"] = {"name": "blip2", "max_length": 48}
    p = prepare(validate(exp))
    assert p.task.provides == {"token_logits"} and p.model.head is p.task.conditioned
    image = shapes(1)[0]
    samples = [
        Sample(image, "", question="how many?", answers=("2",) * 3 + ("3",) * 7, answer_type="number"),
        Sample(image, "", question="is it red?", answers=("yes",) * 10, answer_type="yes/no"),
        Sample(image, "", question="what is it?", answer="a circle"),
    ]
    batch = collate_for(p)(samples)
    assert p.task.prompts(["how many?"]) == ["Question: how many? Answer:"]
    written = {}

    def write(head, image, prompts, *, num_beams, max_new_tokens):
        written["prompts"] = prompts
        return ["Two.", "no", "Circle!"]

    monkeypatch.setattr(ConditionedLanguageModel, "write", write)
    [evaluation] = p.task.evaluations(p.model)
    evaluation.update(p.model, p.model.encode(batch), batch)
    scores = evaluation.compute()
    # "Two." normalises to "2": leaving out each "2" leaves 2 matches (2/3), each "3" 3 (1): (3 * 2/3 + 7) / 10
    assert scores["vqa_accuracy/number"] == pytest.approx(0.9)
    assert scores["vqa_accuracy/yes/no"] == 0.0
    # one human answer: exact match after normalisation ("Circle!" and "a circle" are both "circle")
    assert scores["vqa_accuracy"] == pytest.approx((0.9 + 0.0 + 1.0) / 3)
    assert written["prompts"] == ["Question: how many? Answer:", "Question: is it red? Answer:", "Question: what is it? Answer:"]
    # the answer trained on is the most common human one, after the prompt
    labels = batch["lm_labels"][0]
    assert p.model.encoder.tokenizer.decode(labels[labels >= 0], skip_special_tokens=True).strip() == "3"


def test_vqa_generates_end_to_end_and_refuses_the_wrong_form(tmp_path):
    exp = experiment("unused", tmp_path, task={"name": "vqa"})
    exp["encoder"] = {"name": "blip2", "language_model": "t5", "max_length": 48}
    summary = mmreg.run(exp, progress=False)
    assert set(summary["metrics"]) >= {"vqa_accuracy"} and 0.0 <= summary["metrics"]["vqa_accuracy"] <= 1.0
    with pytest.raises(ConfigError, match="task.answer = 'classify' scores an answer vocabulary"):
        prepare(validate({**exp, "task": {"name": "vqa", "answer": "classify"}}))
    clip = {**exp, "encoder": {"name": "clip", "hidden_size": 32, "projection_dim": 32, "layers": 1}, "task": {"name": "vqa", "answer": "generate"}}
    with pytest.raises(ConfigError, match="this encoder has none; use task.answer = 'classify'"):
        prepare(validate(clip))


def test_lora_on_the_language_model_trains_only_its_adapters_and_saves_them_as_peft_does(tmp_path):
    directory = tmp_path / "ckpt"
    tiny_checkpoint(directory, "opt")
    peft = {"name": "lora", "vision": "full", "text": {"r": 4, "lora_alpha": 8}, "bridge": "full"}
    summary = mmreg.run(experiment(directory, tmp_path / "runs", peft=peft), progress=False)
    run = summary["run_dir"]
    before = load_file(str(directory / "model.safetensors"))
    after = load_file(f"{run}/model.safetensors")
    adapters = {k for k in after if "lora_" in k}
    assert adapters and all(".language_model." in k for k in adapters)
    base = {k: v for k, v in after.items() if "lora_" not in k}
    changed = set()
    for key, value in base.items():
        name = key.removeprefix("encoder.model.").replace("base_model.model.", "").replace(".base_layer", "")
        if name in before and not torch.equal(before[name], value):
            changed.add(name)
    assert changed == {k for k in before if k.startswith(BRIDGE)}
    from peft import PeftModel
    from transformers import Blip2ForConditionalGeneration

    saved = json.loads((tmp_path / "runs").joinpath(run.split("/")[-1], "adapters", "text", "adapter_config.json").read_text())
    assert saved["r"] == 4 and sorted(saved["target_modules"]) == ["q_proj", "v_proj"]
    lm = Blip2ForConditionalGeneration.from_pretrained(directory).language_model
    loaded = PeftModel.from_pretrained(lm, f"{run}/adapters/text")
    lora = {k: v for k, v in loaded.state_dict().items() if "lora_B" in k}
    assert lora and any(v.abs().sum() > 0 for v in lora.values())  # B starts at zero: these trained

    # exported merged, or as the base model and peft's folder: both load in transformers and write alike
    from transformers import Blip2Processor

    result = export_run(run, tmp_path / "peft", adapters="peft")
    assert result["adapter_folders"] == ["text"] and result["merged_adapters"] == []
    export_run(run, tmp_path / "merged")
    merged = Blip2ForConditionalGeneration.from_pretrained(tmp_path / "merged" / "encoder").eval()
    base = Blip2ForConditionalGeneration.from_pretrained(tmp_path / "peft" / "encoder")
    assert torch.equal(base.language_model.get_input_embeddings().weight, before["language_model.model.decoder.embed_tokens.weight"])
    base.language_model = PeftModel.from_pretrained(base.language_model, tmp_path / "peft" / "adapters" / "text")
    processor = Blip2Processor.from_pretrained(tmp_path / "merged" / "encoder")
    inputs = processor(images=shapes(2), text=["a picture of"] * 2, return_tensors="pt")
    assert torch.equal(merged.generate(**inputs, max_new_tokens=5), base.eval().generate(**inputs, max_new_tokens=5))


def test_caption_command_and_export_agree_with_transformers(tmp_path):
    directory = tmp_path / "ckpt"
    tiny_checkpoint(directory, "opt")
    summary = mmreg.run(experiment(directory, tmp_path / "runs", task={"name": "captioning", "prompt": "a picture of", "max_new_tokens": 6}), progress=False)
    images = []
    for i, image in enumerate(shapes(2)):
        images.append(tmp_path / f"shape{i}.png")
        image.save(images[-1])
    command = [sys.executable, "-m", "mmreg", "caption", summary["run_dir"], *map(str, images), "--beams", "3", "--json", "--device", "cpu"]
    printed = json.loads(subprocess.run(command, capture_output=True, text=True, check=True).stdout)
    evaluated = subprocess.run([sys.executable, "-m", "mmreg", "eval", summary["run_dir"], "--device", "cpu", "--json"], capture_output=True, text=True, check=True)
    assert json.loads(evaluated.stdout)["cider"] == pytest.approx(summary["metrics"]["cider"])
    out = tmp_path / "export"
    export_run(summary["run_dir"], out)
    from transformers import Blip2ForConditionalGeneration, Blip2Processor

    model = Blip2ForConditionalGeneration.from_pretrained(out / "encoder").eval()
    processor = Blip2Processor.from_pretrained(out / "encoder")
    inputs = processor(images=[Image.open(i) for i in images], text=["a picture of"] * 2, return_tensors="pt")
    generated = model.generate(**inputs, num_beams=3, max_new_tokens=6)[:, inputs["input_ids"].shape[1] :]
    theirs = [f"a picture of {t.strip()}".strip() for t in processor.tokenizer.batch_decode(generated, skip_special_tokens=True)]
    assert [c["caption"] for c in printed] == theirs
    trained = load_file(f"{summary['run_dir']}/model.safetensors")["encoder.model.query_tokens"]
    assert torch.equal(model.query_tokens, trained)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"fusion": {"name": "gated"}}, "conditions a language model on image queries, which reads image and text together"),
        ({"loss": {"infonce": {}}}, "loss 'infonce' reads scores, but encoder 'blip2' is trained through the text its language model writes"),
    ],
)
def test_parts_that_cannot_fit_are_refused_before_anything_is_built(change, message):
    with pytest.raises(IncompatibleParts, match=message):
        prepare(validate({**experiment("unused"), "encoder": {"name": "blip2"}, **change}))


def test_a_missing_checkpoint_is_one_line():
    with pytest.raises(ConfigError, match="cannot load BLIP-2 checkpoint '/nowhere/blip2'"):
        load_plugins().registry("encoders").build("blip2", {"pretrained": "/nowhere/blip2"}, captions=["a"])


def test_gradient_checkpointing_gives_the_same_gradients():
    from mmreg.train import enable_gradient_checkpointing

    exp = experiment("unused")
    exp["encoder"] = {"name": "blip2", "language_model": "opt"}

    def gradients(checkpointed: bool) -> dict[str, torch.Tensor]:
        p = prepare(validate(exp))
        if checkpointed:
            enable_gradient_checkpointing(p.model)
            model = p.model.encoder.model
            assert model.qformer.encoder.layer[0].gradient_checkpointing and model.language_model.model.decoder.layers[0].gradient_checkpointing
        batch = collate_for(p)(p.train_split[:4])
        torch.manual_seed(1)  # the same dropout masks: checkpointing replays them
        p.model.train()(batch)[0].backward()
        return {n: t.grad for n, t in p.model.named_parameters() if t.requires_grad}

    plain, checkpointed = gradients(False), gradients(True)
    assert plain.keys() == checkpointed.keys() and all(torch.allclose(plain[k], checkpointed[k], atol=1e-6) for k in plain)


def test_the_kit_names_a_broken_language_model_contract():
    from mmreg.testing import ContractViolation, check_encoder
    from mmreg_plugins.encoders.blip2 import Blip2Encoder

    class Unscored(Blip2Encoder):
        def language_inputs(self, prompts, targets=None):
            out = super().language_inputs(prompts, targets)
            if "lm_labels" in out:
                out["lm_labels"].fill_(-100)
            return out

    encoder = load_plugins().registry("encoders").build("blip2", {}, captions=CAPTIONS)
    check_encoder(encoder, shapes(2), CAPTIONS)
    encoder.__class__ = Unscored
    with pytest.raises(ContractViolation, match="every target has a scored token"):
        check_encoder(encoder, shapes(2), CAPTIONS)


def test_data_inspect_states_trainable_and_frozen_parameters_per_part(checkpoint, tmp_path):
    from mmreg.inspection import inspect_data

    kind, directory = checkpoint
    parts = inspect_data(validate(experiment(directory)), n=4, out=tmp_path / "inspect")["parameters"]
    from transformers import Blip2ForConditionalGeneration

    model = Blip2ForConditionalGeneration.from_pretrained(directory)
    assert parts["vision"] == {"parameters": sum(t.numel() for t in model.vision_model.parameters()), "trainable_parameters": 0,
                               "frozen_parameters": sum(t.numel() for t in model.vision_model.parameters())}  # fmt: skip
    assert parts["bridge"]["frozen_parameters"] == 0 and parts["bridge"]["parameters"] == sum(t.numel() for t in model.qformer.parameters())
    assert parts["text"]["trainable_parameters"] == 0 and parts["text"]["frozen_parameters"] > 0
    # the query tokens and the language projection train outside the towers
    assert parts["fusion"]["trainable_parameters"] == model.query_tokens.numel() + sum(t.numel() for t in model.language_projection.parameters())


@pytest.mark.parametrize("language_model", ["opt", "t5"])
def test_frozen_parts_stored_in_bf16_halve_their_memory_and_keep_the_loss(language_model):
    def built(frozen_dtype: str):
        exp = experiment("unused", task={"name": "captioning", "prompt": "a picture of"})
        exp["encoder"] = {"name": "blip2", "language_model": language_model, "frozen_dtype": frozen_dtype}
        return prepare(validate(exp))

    full, half = built("fp32"), built("bf16")
    model = half.model.encoder.model
    assert {t.dtype for t in model.language_model.parameters()} == {torch.bfloat16} == {t.dtype for t in model.vision_model.parameters()}
    assert all(t.dtype == torch.float32 for t in half.model.parameters() if t.requires_grad)  # what trains stays fp32
    size = lambda p: sum(t.numel() * t.element_size() for t in p.model.parameters())  # noqa: E731
    frozen = sum(t.numel() for t in full.model.parameters() if not t.requires_grad)
    assert size(full) - size(half) == 2 * frozen
    batch = collate_for(full)(full.train_split[:4])
    with torch.no_grad():
        expected, _ = full.model.eval()(batch)
    loss, _ = half.model.eval()(batch)
    assert torch.allclose(loss, expected, rtol=2e-2)
    loss.backward()
    assert model.query_tokens.grad.abs().sum() > 0 and model.language_projection.weight.grad.dtype == torch.float32
