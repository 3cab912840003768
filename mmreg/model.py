"""Composes encoder, projections, fusion and losses into one nn.Module."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .components import Encoded, Encoder, Fusion, Loss, Modality, PairwiseFusion, Pairs, Step, Task
from .distributed import all_rows, gather_modality, is_distributed, rank_offset
from .errors import IncompatibleParts
from .metrics import OWN_IMAGE
from .pixels import normalize_pixels
from .tasks import evaluating, head_over_fusion, modality_logits, splits_modalities

ACROSS_BATCH = frozenset({"scores", "pairs", "views"})  # Step fields that compare a sample with the rest of the batch


def projection(width: int, dim: int) -> nn.Module:
    """Map an encoder's width to the shared width; no layer when they already agree."""
    return nn.Identity() if width == dim else nn.Linear(width, dim)


@dataclass
class Features:
    """One batch encoded for training: what ``MultimodalModel.step_from`` reads, and all that depends
    on the encoder's weights (``mmreg.accumulate`` caches it across micro-batches)."""

    encoded: Encoded
    views: tuple[Modality, Modality] | None = None  # two augmented views of each image, where a loss reads "views"


def detached(step: Step) -> Step:
    """What a balancer reads of a ``Step`` (``mmreg.components.GradientStep``): the pooled vectors,
    the head's logits and labels and the unimodal logits, without gradients."""

    def pooled(m: Modality) -> Modality:
        return Modality(pooled=None if m.pooled is None else m.pooled.detach())

    unimodal = None if step.unimodal is None else {k: v.detach() for k, v in step.unimodal.items()}
    logits = None if step.logits is None else step.logits.detach()
    return Step(pooled(step.image), pooled(step.text), logits=logits, labels=step.labels, unimodal=unimodal)


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
        if encoder.single_stream or encoder.conditions_language_model:  # raw inputs or the language model's: nothing to project
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
        self.pairs = "pairs" in self.needs
        if self.pairs:  # ALBEF's image-text contrastive space beside the fusion (components.Pairs)
            if not isinstance(fusion, PairwiseFusion) or encoder.single_stream:
                raise IncompatibleParts(
                    f"a loss reading pairs picks the pairs a pairwise fusion scores, and {type(fusion).__name__} with "
                    f"{type(encoder).__name__} scores every pair at once; use a pairwise fusion (one with a match_head)"
                )
            shared = encoder.shared_space
            self.itc_image_proj = nn.Identity() if shared else nn.Linear(encoder.image_pooled_dim, dim)
            self.itc_text_proj = nn.Identity() if shared else nn.Linear(encoder.text_pooled_dim, dim)
        # Tell the parts what training reads, so weights feeding nothing are frozen, not left without gradient.
        encoder.use(tokens=self.tokens or task.needs_image_tokens, pooled=not self.tokens or self.pairs)
        fusion.use(score=bool({"scores", "pairs"} & self.needs), fuse=head is not None and task.reads_fused)
        self.wants_unimodal = False  # fill Step.unimodal (a balancer reads it; set by mmreg.balance.Balancing)
        self.kept: list[Step] | None = None  # each step's outputs without gradients, while a balancer reads them
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
        if self.encoder.conditions_language_model:  # the language model reads the text, with the image queries
            text = Modality(tokens=batch["input_ids"], mask=batch["attention_mask"].bool())
            return Encoded(raw, text, Modality(tokens=raw.tokens, mask=raw.mask) if self.task.needs_image_tokens else None)
        image_tokens = Modality(tokens=raw.tokens, mask=raw.mask) if self.task.needs_image_tokens else None
        raw_text = self.encoder.encode_texts(batch["input_ids"], batch["attention_mask"])
        pooled = None
        if self.pairs:
            pooled = (self.itc_image_proj(raw.pooled), self.itc_text_proj(raw_text.pooled))
        elif self.encoder.shared_space and raw.pooled is not None and raw_text.pooled is not None:
            pooled = (raw.pooled, raw_text.pooled)
        return Encoded(self._project(raw, self.image_proj), self._project(raw_text, self.text_proj), image_tokens, pooled)  # type: ignore[arg-type]

    def features(self, batch: Mapping[str, torch.Tensor]) -> Features:
        """Everything of a training batch that the encoder computes (``Features``); pixels are normalised here."""
        batch = normalize_pixels(batch, self.encoder)  # the views' pixels too
        views = None
        if "views" in self.needs:
            views = (self.encode_images(batch["view0_pixel_values"]), self.encode_images(batch["view1_pixel_values"]))
        return Features(self._encode(batch), views)

    def step(self, batch: Mapping[str, torch.Tensor]) -> Step:
        return self.step_from(self.features(batch), batch)

    def step_from(self, features: Features, batch: Mapping[str, torch.Tensor]) -> Step:
        """The ``Step`` of a batch from its ``features``: scores, the head's outputs, the pairs.
        ``batch`` gives what the task's head reads beside the features (labels, caption ids)."""
        encoded = features.encoded
        image, text = encoded.image, encoded.text
        step = Step(image, text, labels=batch.get("labels"), views=features.views)
        if self.pairs:
            step.scores, step.pairs = self._contrastive(encoded, batch.get("image_group"))
            step.offset = step.pairs.offset if is_distributed() and self.sharded else None  # [B, B] otherwise, as below
        elif "scores" in self.needs:
            # Under data parallelism each process contrasts against the whole global batch,
            # not its local slice (open_clip's gather-with-grad); alone, nothing changes.
            if not is_distributed():
                step.scores = self.fusion.score(image, text)
            elif self.sharded:  # only this process's rows: 1/P of the pairs (see Step)
                step.scores, step.offset = self.fusion.score(image, gather_modality(text)), rank_offset(len(image))
            else:
                step.scores = self.fusion.score(gather_modality(image), gather_modality(text))
        if self.head is not None:
            for name, value in self.task.forward(self.head, self.fusion, encoded, dict(batch)).items():
                setattr(step, name, value)
        if "logit_scale" in self.needs:
            step.logit_scale = self.encoder.logit_scale  # type: ignore[attr-defined]
        if self.wants_unimodal:  # without dropout: the same logits as evaluation, and no draw that would change the run's masks
            with torch.no_grad(), evaluating(self.fusion, self.head):
                step.unimodal = self.unimodal_logits(encoded, dict(batch))
        return step

    @property
    def gives_unimodal(self) -> bool:
        """Whether ``unimodal_logits`` applies: a fusion declaring ``gives_unimodal`` over two streams,
        and a task head reading its ``fuse`` that gives logits."""
        return splits_modalities(self.fusion, self.encoder) and self.head is not None and head_over_fusion(self.task)

    def unimodal_logits(self, encoded: Encoded, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Each modality's own logits, {"image": [N, C], "text": [N, C]} (``mmreg.tasks.modality_logits``:
        OGM-GE's split of a concatenation head). Raises IncompatibleParts where ``gives_unimodal`` is False."""
        if not self.gives_unimodal:
            raise IncompatibleParts(
                f"fusion {type(self.fusion).__name__} with task '{self.task.name}' gives no unimodal logits; "
                "use a fusion declaring gives_unimodal (none, concat) and a task whose head reads the fusion"
            )
        return modality_logits(self.task, self.head, self.fusion, encoded, batch)  # type: ignore[arg-type]

    def _contrastive(self, encoded: Encoded, groups: torch.Tensor | None) -> tuple[torch.Tensor, Pairs]:
        """ALBEF's two views of one batch: the cosine of the contrastive pooled vectors for the losses
        reading "scores" ([b, B] rows sharded, else every process's [B, B]), and the fusion's scorer over
        every process's images and captions for the loss that picks pairs (``Pairs``)."""
        assert encoded.pooled is not None
        image_vectors, text_vectors = (F.normalize(v, dim=-1) for v in encoded.pooled)
        rows, offset = len(image_vectors), 0
        image, text = encoded.image, encoded.text
        if is_distributed():
            offset = rank_offset(rows)
            all_images, all_texts = all_rows(image_vectors), all_rows(text_vectors)
            image, text = gather_modality(image), gather_modality(text)
            groups = None if groups is None else all_rows(groups)
            scores = image_vectors @ all_texts.T if self.sharded else all_images @ all_texts.T
        else:
            all_images, all_texts = image_vectors, text_vectors
            scores = image_vectors @ text_vectors.T
        with torch.no_grad():  # the whole [B, B]: the scores themselves unless they are this process's rows
            similarity = (scores.detach() if scores.shape[0] == len(all_images) else all_images @ all_texts.T).float()
        matches = torch.eye(len(similarity), dtype=torch.bool, device=similarity.device)
        if groups is not None:  # captions of one image are not its negatives (BLIP masks them likewise)
            matches |= (groups.unsqueeze(0) == groups.unsqueeze(1)) & (groups != OWN_IMAGE).unsqueeze(1)
        pairs = Pairs(image, text, similarity, matches, offset, rows, self.fusion)  # type: ignore[arg-type]
        return scores, pairs

    def losses_of(self, step: Step) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The weighted total loss of a ``Step`` and each loss's unweighted value."""
        parts = {name: loss(step) for name, loss in self.losses.items()}
        if self.kept is not None and self.training:
            self.kept.append(detached(step))
        total = sum(self.loss_weights[name] * value for name, value in parts.items())
        return total, parts  # type: ignore[return-value]

    def forward(self, batch: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The weighted total loss and each loss's unweighted value."""
        return self.losses_of(self.step(batch))
