"""The conformance kit: checks any fusion or encoder against mmreg's contracts.

Built-ins are tested with it, and a plugin author can call it from their own
tests::

    from mmreg.testing import check_fusion
    check_fusion(MyFusion(dim=16, rank=4), dim=16)
"""

from __future__ import annotations

import torch

from .adapters import target_names
from .components import Encoder, Fusion, Modality, PairwiseFusion


def sample_modalities(n: int, m: int, dim: int, *, seed: int = 0) -> tuple[Modality, Modality]:
    """Random image (no padding) and text (padded, lengths 1..L) features of width ``dim``."""
    g = torch.Generator().manual_seed(seed)
    text_len = 5
    mask = torch.arange(text_len).expand(m, text_len) < torch.arange(m).remainder(text_len).add(1).unsqueeze(1)
    image = Modality(torch.randn(n, dim, generator=g), torch.randn(n, 4, dim, generator=g))
    text = Modality(torch.randn(m, dim, generator=g), torch.randn(m, text_len, dim, generator=g), mask)
    return image, text


def check_fusion(fusion: Fusion, dim: int) -> None:
    """``score`` is [N, M], ``fuse`` is [N, out_dim], padding is ignored, every weight gets a gradient,
    and a pairwise fusion's scores are its head over ``fuse`` of each pair, however chunked."""
    fusion.eval()
    image, text = sample_modalities(3, 4, dim)
    scores = fusion.score(image, text)
    assert scores.shape == (3, 4), f"score gave {tuple(scores.shape)}, expected (3, 4)"
    fused = fusion.fuse(image, text.index(slice(0, 3)))
    assert fused.shape == (3, fusion.out_dim), f"fuse gave {tuple(fused.shape)}, expected (3, {fusion.out_dim})"

    if text.tokens is not None and text.mask is not None:
        noisy = text.tokens.masked_fill(~text.mask.unsqueeze(-1), 1e3)
        padded = fusion.score(image, Modality(text.pooled, noisy, text.mask))
        torch.testing.assert_close(padded, scores, msg="padding tokens changed the scores")

    if isinstance(fusion, PairwiseFusion):
        for i in range(3):
            for j in range(4):
                pair = fusion.match_head(fusion.fuse(image.index(slice(i, i + 1)), text.index(slice(j, j + 1))))
                torch.testing.assert_close(scores[i, j], pair[0], atol=1e-5, rtol=1e-5)
        chunk, fusion.pair_chunk = fusion.pair_chunk, 5
        try:
            torch.testing.assert_close(fusion.score(image, text), scores, atol=1e-5, rtol=1e-5)
        finally:
            fusion.pair_chunk = chunk

    if not any(p.requires_grad for p in fusion.parameters()):
        return  # a parameter-free fusion such as `none`
    fusion.train()
    fusion.zero_grad()
    (fusion.score(image, text).sum() + fusion.fuse(image, text.index(slice(0, 3))).sum()).backward()
    silent = [n for n, p in fusion.named_parameters() if p.requires_grad and (p.grad is None or not p.grad.abs().sum() > 0)]
    assert not silent, f"weights without gradient: {silent}"


def check_encoder(encoder: Encoder, images: list, texts: list[str]) -> None:
    """Outputs have the widths the encoder declares, token masks agree with the tokenizer, and
    declared towers are distinct modules of the encoder holding their default LoRA targets."""
    encoder.eval()
    check_uint8_pixels(encoder, images)
    if encoder.single_stream:
        check_single_stream(encoder, images, texts)
        return
    with torch.no_grad():
        image = encoder.encode_images(encoder.preprocess(images))
        batch = encoder.tokenize(texts)
        text = encoder.encode_texts(batch["input_ids"], batch["attention_mask"])
    n, m = len(images), len(texts)
    assert image.pooled is not None and image.pooled.shape == (n, encoder.image_pooled_dim)
    assert text.pooled is not None and text.pooled.shape == (m, encoder.text_pooled_dim)
    if encoder.gives_tokens:
        assert image.tokens is not None and image.tokens.shape[0] == n and image.tokens.shape[2] == encoder.image_token_dim
        assert text.tokens is not None and text.tokens.shape[:2] == batch["input_ids"].shape
        assert text.tokens.shape[2] == encoder.text_token_dim
        assert text.mask is not None and torch.equal(text.mask, batch["attention_mask"].bool())
    check_towers(encoder)


def check_uint8_pixels(encoder: Encoder, images: list) -> None:
    """Where the encoder gives uint8 pixels (``pixel_inputs_uint8``), normalising them on the device
    (``mmreg.pixels.normalize_pixels``) gives its ``pixel_inputs`` to 1e-5: what a checkpoint was trained on."""
    from .pixels import normalize_pixels

    raw = encoder.pixel_inputs_uint8(images)
    if raw is None:
        return
    assert raw["pixel_values"].dtype == torch.uint8, f"pixel_inputs_uint8 gave {raw['pixel_values'].dtype}, not uint8"
    ours, theirs = normalize_pixels(raw, encoder), encoder.pixel_inputs(images)
    assert ours.keys() == theirs.keys(), f"pixel_inputs_uint8 gave {sorted(ours)}, pixel_inputs {sorted(theirs)}"
    for key, value in theirs.items():
        assert ours[key].shape == value.shape, f"{key}: {tuple(ours[key].shape)} vs {tuple(value.shape)}"
        worst = (ours[key].float() - value.float()).abs().max().item()
        assert worst <= 1e-5, f"{key} normalised on the device differs from pixel_inputs by up to {worst:.2e}"


def check_single_stream(encoder: Encoder, images: list, texts: list[str]) -> None:
    """A single-stream encoder's own fusion: ``fuse`` over matched pairs gives [n, out_dim],
    ``score`` every image against every text [n, m], from the raw inputs as the model hands them."""
    from .components import Modality

    fusion = encoder.joint_fusion()
    pixels, batch = encoder.pixel_inputs(images), encoder.tokenize(texts)
    mask = pixels.get("pixel_mask")
    image = Modality(tokens=pixels["pixel_values"], mask=None if mask is None else mask.bool())
    text = Modality(tokens=batch["input_ids"], mask=batch["attention_mask"].bool())
    n, m = len(images), len(texts)
    with torch.no_grad():
        assert fusion.fuse(image, text.index(slice(0, n))).shape == (n, fusion.out_dim)
        assert fusion.score(image, text).shape == (n, m)
    check_towers(encoder)


def check_towers(encoder: Encoder) -> None:
    """Each declared tower's path leads to a module whose default targets it holds; no weight is in two towers."""
    owner: dict[int, str] = {}
    for name, tower in encoder.towers().items():
        module = tower.module(encoder)
        present = target_names(module)
        missing = [t for t in tower.targets if t not in present]
        assert tower.targets and not missing, f"{name} tower: default targets {missing or '(none)'} not among its modules {present}"
        for p in module.parameters():
            assert id(p) not in owner, f"a weight is in both the {owner[id(p)]} and the {name} tower"
            owner[id(p)] = name
