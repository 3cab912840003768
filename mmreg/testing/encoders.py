"""The encoder contract: declared widths, token masks, towers holding their default LoRA targets."""

from __future__ import annotations

import torch

from ..adapters import target_names
from ..components import Encoder, Modality
from .contract import expect


def check_encoder(encoder: Encoder, images: list, texts: list[str]) -> None:
    """Outputs have the widths the encoder declares, token masks agree with the tokenizer, and
    declared towers are distinct modules of the encoder holding their default LoRA targets.

    Raises ContractViolation naming the broken contract."""
    encoder.eval()
    check_uint8_pixels(encoder, images)
    if encoder.single_stream:
        check_single_stream(encoder, images, texts)
        return
    who = f"encoder {type(encoder).__name__}"
    with torch.no_grad():
        image = encoder.encode_images(encoder.preprocess(images))
        batch = encoder.tokenize(texts)
        text = encoder.encode_texts(batch["input_ids"], batch["attention_mask"])
    n, m = len(images), len(texts)
    for what, out, rows, width in (("image", image, n, encoder.image_pooled_dim), ("text", text, m, encoder.text_pooled_dim)):
        seen = "none" if out.pooled is None else str(tuple(out.pooled.shape))
        expect(out.pooled is not None and out.pooled.shape == (rows, width), who, f"{what} pooled is [N, {what}_pooled_dim]",
               f"{seen} for {rows} inputs, {what}_pooled_dim {width}")  # fmt: skip
    if encoder.gives_tokens:
        expect(image.tokens is not None and image.tokens.shape[0] == n and image.tokens.shape[2] == encoder.image_token_dim,
               who, "image tokens are [N, L, image_token_dim]", f"{None if image.tokens is None else tuple(image.tokens.shape)}")  # fmt: skip
        expect(text.tokens is not None and text.tokens.shape[:2] == batch["input_ids"].shape and text.tokens.shape[2] == encoder.text_token_dim,
               who, "text tokens are [N, L, text_token_dim]", f"{None if text.tokens is None else tuple(text.tokens.shape)} for input_ids {tuple(batch['input_ids'].shape)}")  # fmt: skip
        expect(text.mask is not None and torch.equal(text.mask, batch["attention_mask"].bool()), who,
               "the text mask is the attention mask", "the mask differs from tokenize's attention_mask")  # fmt: skip
    if encoder.conditions_language_model:
        check_language_model(encoder, images, texts)
    check_towers(encoder)


def check_language_model(encoder: Encoder, images: list, texts: list[str]) -> None:
    """An encoder conditioning a language model on image queries (``conditions_language_model``):
    ``language_inputs`` of prompts and targets give ``lm_*`` tensors of N rows, every row with a scored
    token; ``language_logits`` gives logits [N, L, V] and labels [N, L] whose cross-entropy is finite;
    ``generate_text`` writes N strings, the same twice, from ``language_inputs`` without targets.

    Raises ContractViolation naming the broken contract."""
    who, n = f"encoder {type(encoder).__name__}", len(images)
    targets = [texts[i % len(texts)] for i in range(n)]
    with torch.no_grad():
        image = encoder.encode_images(encoder.preprocess(images))
        batch = encoder.language_inputs(["a picture of"] * n, targets)
        rows = {k: tuple(v.shape) for k, v in batch.items()}
        expect(all(k.startswith("lm_") and s[0] == n for k, s in rows.items()), who,
               "language_inputs gives lm_* tensors of one row per prompt", f"{rows} for {n} prompts")  # fmt: skip
        logits, labels = encoder.language_logits(image, batch)
        expect(logits.ndim == 3 and labels.shape == logits.shape[:2], who, "language_logits gives logits [N, L, V] and labels [N, L]",
               f"logits {tuple(logits.shape)}, labels {tuple(labels.shape)}")  # fmt: skip
        expect(bool(((labels >= 0).sum(dim=1) > 0).all()), who, "every target has a scored token", f"scored per row {(labels >= 0).sum(dim=1).tolist()}")
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1).float(), labels.flatten(), ignore_index=-100)
        expect(bool(torch.isfinite(loss)), who, "the language model's loss is finite", f"{loss.item()}")
        prompts = encoder.language_inputs(["a picture of"] * n)
        written = [encoder.generate_text(image, prompts, num_beams=1, max_new_tokens=4) for _ in range(2)]
    expect(len(written[0]) == n and all(isinstance(t, str) for t in written[0]), who, "generate_text writes one string per image", f"{written[0]!r}")
    expect(written[0] == written[1], who, "generate_text is deterministic", f"{written[0]!r} then {written[1]!r}")


def check_uint8_pixels(encoder: Encoder, images: list) -> None:
    """Where the encoder gives uint8 pixels (``pixel_inputs_uint8``), normalising them on the device
    (``mmreg.pixels.normalize_pixels``) gives its ``pixel_inputs`` to 1e-5: what a checkpoint was trained on.

    Raises ContractViolation naming the broken contract."""
    from ..pixels import normalize_pixels

    raw = encoder.pixel_inputs_uint8(images)
    if raw is None:
        return
    who, contract = f"encoder {type(encoder).__name__}", "pixel_inputs_uint8 normalised on the device equals pixel_inputs"
    expect(raw["pixel_values"].dtype == torch.uint8, who, contract, f"pixel_values of dtype {raw['pixel_values'].dtype}, not uint8")
    ours, theirs = normalize_pixels(raw, encoder), encoder.pixel_inputs(images)
    expect(ours.keys() == theirs.keys(), who, contract, f"keys {sorted(ours)} vs {sorted(theirs)}")
    for key, value in theirs.items():
        expect(ours[key].shape == value.shape, who, contract, f"{key}: {tuple(ours[key].shape)} vs {tuple(value.shape)}")
        worst = (ours[key].float() - value.float()).abs().max().item()
        expect(worst <= 1e-5, who, contract, f"{key} differs by up to {worst:.2e}")


def check_single_stream(encoder: Encoder, images: list, texts: list[str]) -> None:
    """A single-stream encoder's own fusion: ``fuse`` over matched pairs gives [n, out_dim],
    ``score`` every image against every text [n, m], from the raw inputs as the model hands them."""
    who = f"encoder {type(encoder).__name__}"
    fusion = encoder.joint_fusion()
    pixels, batch = encoder.pixel_inputs(images), encoder.tokenize(texts)
    mask = pixels.get("pixel_mask")
    image = Modality(tokens=pixels["pixel_values"], mask=None if mask is None else mask.bool())
    text = Modality(tokens=batch["input_ids"], mask=batch["attention_mask"].bool())
    n, m = len(images), len(texts)
    with torch.no_grad():
        fused, scores = fusion.fuse(image, text.index(slice(0, n))), fusion.score(image, text)
    expect(fused.shape == (n, fusion.out_dim), who, "joint fuse gives [N, out_dim]", f"{tuple(fused.shape)}")
    expect(scores.shape == (n, m), who, "joint score gives [N, M]", f"{tuple(scores.shape)}")
    check_towers(encoder)


def check_towers(encoder: Encoder) -> None:
    """Each declared tower's path leads to a module whose default targets it holds; no weight is in two towers."""
    who = f"encoder {type(encoder).__name__}"
    owner: dict[int, str] = {}
    for name, tower in encoder.towers().items():
        module = tower.module(encoder)
        present = target_names(module)
        missing = [t for t in tower.targets if t not in present]
        expect(tower.targets and not missing, who, "a tower holds its default targets",
               f"{name} tower: default targets {missing or '(none)'} not among its modules {present}")  # fmt: skip
        for p in module.parameters():
            expect(id(p) not in owner, who, "towers share no weight", f"a weight is in both the {owner.get(id(p))} and the {name} tower")
            owner[id(p)] = name
