"""How the conformance kit reports a broken contract: an AssertionError naming the contract and what was seen."""

from __future__ import annotations

import hashlib
import random

import numpy as np
import torch

from ..components import Sample


class ContractViolation(AssertionError):
    """A component broke one of mmreg's contracts; the message names the contract and what was seen.

    An AssertionError, so pytest shows it as a failed assertion in a plugin's own tests.
    """

    def __init__(self, component: str, contract: str, seen: str) -> None:
        self.component, self.contract, self.seen = component, contract, seen
        super().__init__(f"{component} breaks the contract '{contract}': {seen}")


def expect(condition: object, component: str, contract: str, seen: str) -> None:
    """Raise ContractViolation(component, contract, seen) unless ``condition`` holds."""
    if not condition:
        raise ContractViolation(component, contract, seen)


def fingerprint(sample: Sample) -> str:
    """A digest of every field of a sample, images by mode, size and pixels: equal digests, equal samples."""
    digest = hashlib.sha256()
    for name in ("caption", "label", "question", "answer", "answers", "answer_type", "question_id"):
        digest.update(f"{name}={getattr(sample, name)!r};".encode())
    for image in (sample.image, *(sample.views or ())):
        digest.update(f"{image.mode}{image.size}".encode())
        digest.update(image.tobytes())
    return digest.hexdigest()


def scramble_global_rngs(seed: int) -> None:
    """Different global random states, so an augmenter drawing from them is caught."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
