"""The conformance kit: checks a component of any kind against mmreg's contracts.

Built-ins are tested with it, and a plugin author calls it from their own tests::

    from mmreg.testing import check_balancer, check_fusion, check_loss
    check_fusion(MyFusion(dim=16, rank=4), dim=16)
    check_loss(MyLoss())
    check_balancer(MyBalancer(), experiment)

A broken contract raises ``ContractViolation`` (an AssertionError) whose message
names the component, the contract and what was seen.
"""

from __future__ import annotations

from .augmenters import check_augmenter
from .balancers import check_balancer
from .contract import ContractViolation, fingerprint
from .datasets import check_dataset
from .encoders import check_encoder, check_language_model, check_single_stream, check_towers, check_uint8_pixels
from .fusions import check_fusion, sample_modalities
from .losses import check_loss, sample_step
from .peft import check_peft
from .tasks import check_task

__all__ = [
    "ContractViolation",
    "check_augmenter",
    "check_balancer",
    "check_dataset",
    "check_encoder",
    "check_fusion",
    "check_loss",
    "check_peft",
    "check_language_model",
    "check_single_stream",
    "check_task",
    "check_towers",
    "check_uint8_pixels",
    "fingerprint",
    "sample_modalities",
    "sample_step",
]
