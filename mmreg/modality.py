"""``Modality``, the features of one modality for a batch, and its mask helper: torch only, no other
mmreg module, so the core interfaces (mmreg.components), the shared layers and the data-parallel
helpers (mmreg.distributed) all import it without importing one another."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch


def full_mask(tokens: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """The mask, or all-True when a modality has no padding."""
    return mask if mask is not None else torch.ones(tokens.shape[:2], dtype=torch.bool, device=tokens.device)


@dataclass
class Modality:
    """One modality's features for a batch.

    ``pooled`` is [N, D]; ``tokens`` is [N, L, D]; ``mask`` is [N, L] bool, True
    at real (non-padding) tokens. An encoder gives pooled vectors and, if it can,
    tokens; after projection the model keeps only what the fusion reads.
    """

    pooled: torch.Tensor | None = None
    tokens: torch.Tensor | None = None
    mask: torch.Tensor | None = None

    def _present(self) -> torch.Tensor:
        present = self.pooled if self.pooled is not None else self.tokens
        assert present is not None, "a Modality holds pooled vectors, tokens or both"
        return present

    def __len__(self) -> int:
        return self._present().shape[0]

    @property
    def device(self) -> torch.device:
        return self._present().device

    def index(self, idx: torch.Tensor | slice) -> Modality:
        """The rows ``idx`` of every tensor (pairs are built by indexing)."""
        return Modality(*(None if t is None else t[idx] for t in (self.pooled, self.tokens, self.mask)))

    @staticmethod
    def cat(parts: Sequence[Modality]) -> Modality:
        """Concatenate batches, padding token sequences of different lengths."""
        first = parts[0]
        pooled = None if first.pooled is None else torch.cat([p.pooled for p in parts])  # type: ignore[misc]
        if first.tokens is None:
            return Modality(pooled)
        length = max(p.tokens.shape[1] for p in parts)  # type: ignore[union-attr]
        tokens, masks = [], []
        for p in parts:
            t = p.tokens
            assert t is not None
            m = full_mask(t, p.mask)
            pad = length - t.shape[1]
            tokens.append(torch.nn.functional.pad(t, (0, 0, 0, pad)))
            masks.append(torch.nn.functional.pad(m, (0, pad), value=False))
        return Modality(pooled, torch.cat(tokens), torch.cat(masks))


__all__ = ["Modality", "full_mask"]
