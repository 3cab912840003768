"""Every registered fusion and encoder meets the contracts in mmreg.testing."""

from __future__ import annotations

import pytest
from PIL import Image

from mmreg.plugins import load_plugins
from mmreg.testing import check_encoder, check_fusion

HOST = load_plugins()
DIM = 16


@pytest.mark.parametrize("name", HOST.registry("fusions").names())
def test_fusion_conformance(name):
    entry = HOST.registry("fusions").get(name)
    params = {"heads": 2} if "heads" in entry.params.model_fields else {}
    check_fusion(HOST.registry("fusions").build(name, params, dim=DIM), DIM)


@pytest.mark.parametrize("name", HOST.registry("encoders").names())
def test_encoder_conformance(name):
    captions = ["a small red circle", "a large blue square at the top"]
    encoder = HOST.registry("encoders").build(name, {}, captions=captions)
    images = [Image.new("RGB", (40, 30), (200, 30, 30)), Image.new("RGB", (64, 64), (30, 30, 200))]
    check_encoder(encoder, images, [*captions, "an unseen word"])
