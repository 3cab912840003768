"""`ogm_ge`: On-the-fly Gradient Modulation with Generalization Enhancement (Peng et al., CVPR 2022)."""

from __future__ import annotations

from collections.abc import Mapping

import torch

from mmreg.components import Balancer, GradientStep

MODALITIES = ("image", "text")


def confidence(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Sum over the batch of the softmax probability of the true class, [N, C] and [N] -> [] (OGM-GE's
    s^u); for soft targets [N, C] (VQA's answer scores) the probabilities weighted by them."""
    probabilities = logits.float().softmax(dim=-1)
    if labels.dim() == 2:
        return (probabilities * labels.float()).sum()
    return probabilities.gather(1, labels.unsqueeze(1)).sum()


def coefficients(scores: Mapping[str, torch.Tensor], alpha: float) -> dict[str, torch.Tensor]:
    """OGM-GE's Eq. (10) for two modalities: with rho = s_image / s_text, the dominant modality's
    coefficient is 1 - tanh(alpha * rho_u) (rho_u > 1 its own ratio), the other's 1; as the reference
    code (GeWu-Lab/OGM-GE_CVPR2022, ``relu(ratio)`` inside the tanh). No host sync."""
    ratio = scores["image"] / scores["text"]
    one = torch.ones_like(ratio)
    image_dominates = ratio > 1
    return {
        "image": torch.where(image_dominates, 1 - torch.tanh(alpha * ratio.clamp(min=0)), one),
        "text": torch.where(image_dominates, one, 1 - torch.tanh(alpha * (1 / ratio).clamp(min=0))),
    }


class OGMGE(Balancer):
    """Slows the modality that is ahead: each step, the softmax confidence on the true class of
    each modality's own logits (``GradientStep.outputs.unimodal``) gives their ratio rho; the dominant
    modality's gradients are multiplied by 1 - tanh(alpha * rho), and with ``noise`` both modalities'
    get Gaussian noise N(0, std(grad) + 1e-8) added per weight (the "GE", generalization enhancement),
    only in epochs ``modulation_starts`` to ``modulation_ends`` (inclusive, from 0).

    Acts on the weights serving one modality alone (``GradientStep.modalities``: each tower and its
    projections), all of them or, with ``parameters="conv"``, only 4-D convolution kernels as the
    reference code does for its ResNet encoders. Logs ``coeff_image``, ``coeff_text``, ``ratio``
    (s_image / s_text) and ``modulated`` (1 inside the window). Needs labels and logits from a
    classification-style head (a task whose head reads the fusion).
    """

    needs_unimodal = True

    def __init__(self, *, alpha: float, noise: bool, modulation_starts: int, modulation_ends: int | None, parameters: str) -> None:
        self.alpha, self.noise, self.parameters = alpha, noise, parameters
        self.starts, self.ends = modulation_starts, modulation_ends

    def __call__(self, step: GradientStep) -> dict[str, torch.Tensor | float]:
        out, labels = step.outputs, step.outputs.labels
        assert out.unimodal is not None and labels is not None, "ogm_ge reads unimodal logits and labels"
        scores = {m: confidence(out.unimodal[m], labels) for m in MODALITIES}
        coeff = coefficients(scores, self.alpha)
        inside = step.epoch >= self.starts and (self.ends is None or step.epoch <= self.ends)
        numbers: dict[str, torch.Tensor | float] = {"ratio": scores["image"] / scores["text"], "modulated": float(inside)}
        numbers.update({f"coeff_{m}": coeff[m] for m in MODALITIES})
        if not inside:
            return numbers
        for modality in MODALITIES:
            for _, weight in step.modalities[modality]:
                grad = weight.grad
                if grad is None or (self.parameters == "conv" and grad.dim() != 4):
                    continue
                modulated = grad * coeff[modality].to(grad.dtype)
                if self.noise:
                    std = grad.float().std() if grad.numel() > 1 else torch.zeros((), device=grad.device)
                    draw = torch.randn(grad.shape, generator=step.generator, device=grad.device, dtype=torch.float32)
                    modulated = modulated + (draw * (std + 1e-8)).to(grad.dtype)
                weight.grad = modulated
        return numbers
