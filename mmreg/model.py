"""Composes encoder, projections, fusion and losses into one nn.Module."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from .components import Encoded, Encoder, Fusion, Loss, Modality, Step, Task
from .distributed import gather_modality, is_distributed, rank_offset
from .pixels import normalize_pixels


def projection(width: int, dim: int) -> nn.Module:
    """Map an encoder's width to the shared width; no layer when they already agree."""
    return nn.Identity() if width == dim else nn.Linear(width, dim)


class MultimodalModel(nn.Module):
    """encoder -> projection to ``dim`` -> fusion -> task head -> weighted losses.

    Only the features the fusion reads are projected (tokens or pooled vectors),
    so no parameter sits in the graph without receiving a gradient. The ``task``
    plugin owns the head: what it reads and which ``Step`` fields it fills.
    """

    def __init__(
        self,
        encoder: Encoder,
        fusion: Fusion,
        losses: Mapping[str, tuple[float, Loss]],
        dim: int,
        task: Task,
        head: nn.Module | None = None,
    ) -> None:
        super().__init__()
        self.encoder, self.fusion, self.dim = encoder, fusion, dim
        self.tokens = fusion.needs_tokens
        if encoder.single_stream:  # the fusion reads the raw inputs: nothing to project
            self.image_proj, self.text_proj = nn.Identity(), nn.Identity()
        elif self.tokens:
            self.image_proj = projection(encoder.image_token_dim, dim)
            self.text_proj = projection(encoder.text_token_dim, dim)
        else:
            self.image_proj = projection(encoder.image_pooled_dim, dim)
            self.text_proj = projection(encoder.text_pooled_dim, dim)
        self.losses = nn.ModuleDict({name: loss for name, (_, loss) in losses.items()})
        self.loss_weights = {name: weight for name, (weight, _) in losses.items()}
        self.needs = frozenset().union(*(loss.needs for loss in self.losses.values()))
        self.sharded = all(loss.sharded for loss in self.losses.values() if "scores" in loss.needs)
        self.task, self.head = task, head
        # Tell the parts what training reads, so weights feeding nothing are frozen, not left without gradient.
        encoder.use(tokens=self.tokens or task.needs_image_tokens, pooled=not self.tokens)
        fusion.use(score="scores" in self.needs, fuse=head is not None and task.reads_fused)
        if "logit_scale" in self.needs:  # a loss trains the encoder's own scale (CLIP's), which use() froze
            encoder.logit_scale.requires_grad_(True)  # type: ignore[attr-defined]

    def _project(self, features: Modality, proj: nn.Module) -> Modality:
        if self.tokens:
            return Modality(tokens=proj(features.tokens), mask=features.mask)
        return Modality(pooled=proj(features.pooled))

    @property
    def device(self) -> torch.device:
        """Where the model's weights are (``mmreg.components.ModelView.device``)."""
        return next(self.parameters()).device

    def encode_images(self, pixel_values: torch.Tensor) -> Modality:
        return self._project(self.encoder.encode_images(pixel_values), self.image_proj)

    def encode_texts(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> Modality:
        return self._project(self.encoder.encode_texts(input_ids, attention_mask), self.text_proj)

    def encode(self, batch: Mapping[str, torch.Tensor]) -> Encoded:
        """Both modalities projected, and the encoder's own image tokens where the task reads them;
        for a single-stream encoder, the raw inputs its own fusion reads (``Encoder.single_stream``).
        uint8 pixels (``Encoder.pixel_inputs_uint8``) are normalised here, on the model's device."""
        return self._encode(normalize_pixels(batch, self.encoder))

    def _encode(self, batch: Mapping[str, torch.Tensor]) -> Encoded:
        """``encode`` of a batch whose pixels are already normalised."""
        if self.encoder.single_stream:
            mask = batch.get("pixel_mask")
            image = Modality(tokens=batch["pixel_values"], mask=None if mask is None else mask.bool())
            return Encoded(image, Modality(tokens=batch["input_ids"], mask=batch["attention_mask"].bool()))
        raw = self.encoder.encode_images(batch["pixel_values"])
        image_tokens = Modality(tokens=raw.tokens, mask=raw.mask) if self.task.needs_image_tokens else None
        raw_text = self.encoder.encode_texts(batch["input_ids"], batch["attention_mask"])
        shared = self.encoder.shared_space and raw.pooled is not None and raw_text.pooled is not None
        pooled = (raw.pooled, raw_text.pooled) if shared else None
        return Encoded(self._project(raw, self.image_proj), self._project(raw_text, self.text_proj), image_tokens, pooled)  # type: ignore[arg-type]

    def step(self, batch: Mapping[str, torch.Tensor]) -> Step:
        batch = normalize_pixels(batch, self.encoder)  # the views' pixels too
        features = self._encode(batch)
        image, text = features.image, features.text
        step = Step(image, text, labels=batch.get("labels"))
        if "scores" in self.needs:
            # Under data parallelism each process contrasts against the whole global batch,
            # not its local slice (open_clip's gather-with-grad); alone, nothing changes.
            if not is_distributed():
                step.scores = self.fusion.score(image, text)
            elif self.sharded:  # only this process's rows: 1/P of the pairs (see Step)
                step.scores, step.offset = self.fusion.score(image, gather_modality(text)), rank_offset(len(image))
            else:
                step.scores = self.fusion.score(gather_modality(image), gather_modality(text))
        if self.head is not None:
            for name, value in self.task.forward(self.head, self.fusion, features, dict(batch)).items():
                setattr(step, name, value)
        if "views" in self.needs:
            step.views = (self.encode_images(batch["view0_pixel_values"]), self.encode_images(batch["view1_pixel_values"]))
        if "logit_scale" in self.needs:
            step.logit_scale = self.encoder.logit_scale  # type: ignore[attr-defined]
        return step

    def forward(self, batch: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The weighted total loss and each loss's unweighted value."""
        step = self.step(batch)
        parts = {name: loss(step) for name, loss in self.losses.items()}
        total = sum(self.loss_weights[name] * value for name, value in parts.items())
        return total, parts  # type: ignore[return-value]
