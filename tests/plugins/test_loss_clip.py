"""The `clip` loss against transformers' own CLIP loss."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from transformers import CLIPConfig, CLIPModel
from transformers.models.clip.modeling_clip import image_text_contrastive_loss

from mmreg.components import Modality, Step
from mmreg.plugins import load_plugins
from mmreg_plugins.losses.clip import CLIPLoss


def step(scores: torch.Tensor, logit_scale: torch.Tensor) -> Step:
    return Step(Modality(), Modality(), scores=scores, logit_scale=logit_scale)


def test_equals_transformers_loss_on_scaled_scores():
    scores = torch.randn(5, 5, generator=torch.Generator().manual_seed(0))
    logit_scale = torch.tensor(math.log(1 / 0.07))
    # image_text_contrastive_loss (CLIP's clip_loss) takes the text->image logits
    expected = image_text_contrastive_loss((scores * logit_scale.exp()).T)
    assert CLIPLoss(max_scale=100.0)(step(scores, logit_scale)).item() == pytest.approx(expected.item(), abs=1e-6)


def test_gradient_flows_into_the_logit_scale():
    logit_scale = torch.nn.Parameter(torch.tensor(2.0))
    CLIPLoss(max_scale=100.0)(step(torch.randn(4, 4), logit_scale)).backward()
    assert logit_scale.grad is not None and logit_scale.grad.abs() > 0


def test_multiplier_is_capped_at_max_scale():
    scores = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    loss = CLIPLoss(max_scale=2.0)
    # log-scale 10 is clamped to log 2: logits = 2 * scores, each row/column -log(e^2 / (e^2 + 1))
    expected = -math.log(math.e**2 / (math.e**2 + 1))
    assert loss(step(scores, torch.tensor(10.0))).item() == pytest.approx(expected, abs=1e-6)


def test_matches_clipmodel_return_loss_end_to_end():
    torch.manual_seed(0)
    config = CLIPConfig(
        text_config={"vocab_size": 50, "hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1,
                     "num_attention_heads": 2, "max_position_embeddings": 8},
        vision_config={"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1,
                       "num_attention_heads": 2, "image_size": 8, "patch_size": 4},
        projection_dim=8,
    )
    model = CLIPModel(config).eval()
    input_ids = torch.randint(0, 50, (3, 6))
    pixel_values = torch.randn(3, 3, 8, 8)
    with torch.no_grad():
        out = model(input_ids=input_ids, pixel_values=pixel_values, return_loss=True)
        scores = F.normalize(out.image_embeds, dim=-1) @ F.normalize(out.text_embeds, dim=-1).T
        ours = CLIPLoss(max_scale=100.0)(step(scores, model.logit_scale))
    assert ours.item() == pytest.approx(out.loss.item(), abs=1e-5)


def test_build_through_the_registry():
    loss = load_plugins().registry("losses").build("clip", {})
    assert isinstance(loss, CLIPLoss) and loss.needs == {"scores", "logit_scale"}
    assert list(loss.parameters()) == []  # the scale is the encoder's, not the loss's
