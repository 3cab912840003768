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
    check_towers(encoder)


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
