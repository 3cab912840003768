"""The fusion contract: ``score`` [N, M], ``fuse`` [N, out_dim], padding ignored, every weight trained."""

from __future__ import annotations

import torch

from ..components import Fusion, Modality, PairwiseFusion
from .contract import expect


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
    and a pairwise fusion's scores are its head over ``fuse`` of each pair, however chunked.

    Raises ContractViolation naming the broken contract."""
    who = f"fusion {type(fusion).__name__}"
    fusion.eval()
    image, text = sample_modalities(3, 4, dim)
    scores = fusion.score(image, text)
    expect(scores.shape == (3, 4), who, "score gives [N, M]", f"score of 3 images and 4 texts gave {tuple(scores.shape)}")
    fused = fusion.fuse(image, text.index(slice(0, 3)))
    expect(fused.shape == (3, fusion.out_dim), who, "fuse gives [N, out_dim]", f"fuse gave {tuple(fused.shape)}, out_dim is {fusion.out_dim}")

    if text.tokens is not None and text.mask is not None:
        noisy = text.tokens.masked_fill(~text.mask.unsqueeze(-1), 1e3)
        padded = fusion.score(image, Modality(text.pooled, noisy, text.mask))
        expect(torch.allclose(padded, scores, atol=1e-5, rtol=1e-4), who, "padding tokens are ignored",
               f"scores moved by up to {(padded - scores).abs().max().item():.3g} when padding changed")  # fmt: skip

    if isinstance(fusion, PairwiseFusion):
        for i in range(3):
            for j in range(4):
                pair = fusion.match_head(fusion.fuse(image.index(slice(i, i + 1)), text.index(slice(j, j + 1))))
                expect(torch.allclose(scores[i, j], pair[0], atol=1e-5, rtol=1e-5), who, "score is match_head(fuse(pair))",
                       f"score[{i}, {j}] = {scores[i, j].item():.4g}, match_head(fuse) = {pair[0].item():.4g}")  # fmt: skip
        chunk, fusion.pair_chunk = fusion.pair_chunk, 5
        try:
            expect(torch.allclose(fusion.score(image, text), scores, atol=1e-5, rtol=1e-5), who,
                   "score does not depend on pair_chunk", "scores changed with pair_chunk=5")  # fmt: skip
        finally:
            fusion.pair_chunk = chunk

    if not any(p.requires_grad for p in fusion.parameters()):
        return  # a parameter-free fusion such as `none`
    fusion.train()
    fusion.zero_grad()
    (fusion.score(image, text).sum() + fusion.fuse(image, text.index(slice(0, 3))).sum()).backward()
    silent = [n for n, p in fusion.named_parameters() if p.requires_grad and (p.grad is None or not p.grad.abs().sum() > 0)]
    expect(not silent, who, "every weight gets a gradient", f"weights without gradient: {silent}")
