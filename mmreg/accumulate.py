"""Accumulation that keeps every negative: K micro-batches trained as one batch of K x b for the
losses that compare a sample with the rest of the batch (``Step`` fields "scores", "pairs", "views").

A contrastive loss over each micro-batch alone sees b - 1 negatives per pair, not K*b - 1: it is
another objective than the batch the run reports. This is GradCache (Gao, Zhang, Han and Callan,
"Scaling Deep Contrastive Learning Batch Size under Memory Limited Setup", RepL4NLP 2021), the
representation-gradient form of open_clip's ``--accum-freq``:

1. every micro-batch is encoded without gradients, its random state kept (dropout, augmentation
   inside the model), and the features (``mmreg.model.Features``) are concatenated;
2. the losses are computed once over the whole batch from those features as leaf tensors and
   back-propagated: the fusion, head and loss weights get their gradients, and each feature its
   gradient of the whole batch's loss (the representation gradient);
3. each micro-batch is encoded again with gradients under its kept random state, and its features
   are back-propagated with their slice of the cached gradients.

The gradients are those of the K*b batch (to floating-point rounding); the memory is one
micro-batch's encoder activations plus every micro-batch's features, at the cost of encoding each
micro-batch twice (open_clip's form instead recomputes the loss K times). The fusion and the losses
run once over the whole batch: a pairwise fusion over all pairs costs (K*b)^2 passes there, the
shortlist (``itm``-style losses reading "pairs") b (1 + 2K') per process; a ``PairwiseFusion``
scores those pairs in K checkpointed chunks (``PairwiseFusion.recompute``: its activations are
recomputed chunk by chunk in backward, ``torch.utils.checkpoint``, random state kept), so it too
holds about 1/K of the whole batch's activations at once, for a second forward pass of the fusion.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F

from .components import Encoded, Modality, PairwiseFusion
from .model import ACROSS_BATCH, Features, MultimodalModel

PIXELS = ("pixel_values", "pixel_mask")  # encoded into the features; the whole batch needs no pixels


def across_batch(model: MultimodalModel) -> bool:
    """Whether a chosen loss compares samples across the batch, so accumulation must see the whole batch."""
    return bool(ACROSS_BATCH & model.needs)


def _modality_tensors(m: Modality | None) -> list[torch.Tensor | None]:
    return [None, None] if m is None else [m.pooled, m.tokens]


def feature_tensors(features: Features) -> list[torch.Tensor | None]:
    """The float tensors of ``features`` that gradients flow through, in a fixed order."""
    e = features.encoded
    out = [*_modality_tensors(e.image), *_modality_tensors(e.text), *_modality_tensors(e.image_tokens)]
    out += list(e.pooled) if e.pooled is not None else [None, None]
    for view in features.views or (None, None):
        out += _modality_tensors(view)
    return out


def _with(m: Modality | None, pooled: torch.Tensor | None, tokens: torch.Tensor | None) -> Modality | None:
    return None if m is None else Modality(pooled, tokens, m.mask)


def with_tensors(features: Features, tensors: Sequence[torch.Tensor | None]) -> Features:
    """``features`` with its float tensors replaced, in ``feature_tensors``' order (masks kept)."""
    e, t = features.encoded, list(tensors)
    encoded = Encoded(
        _with(e.image, t[0], t[1]), _with(e.text, t[2], t[3]), _with(e.image_tokens, t[4], t[5]),  # type: ignore[arg-type]
        None if e.pooled is None else (t[6], t[7]),  # type: ignore[arg-type]
    )  # fmt: skip
    views = None if features.views is None else (_with(features.views[0], t[8], t[9]), _with(features.views[1], t[10], t[11]))
    return Features(encoded, views)  # type: ignore[arg-type]


def cat_features(parts: Sequence[Features]) -> Features:
    """The micro-batches' features as one batch (token sequences padded, ``Modality.cat``)."""

    def cat(items: Sequence[Modality | None]) -> Modality | None:
        if items[0] is None:
            return None
        if items[0].tokens is not None and items[0].tokens.dim() == 4:
            return cat_pixels(items)  # type: ignore[arg-type]
        return Modality.cat(items)  # type: ignore[arg-type]

    first = parts[0].encoded
    encoded = Encoded(
        cat([p.encoded.image for p in parts]), cat([p.encoded.text for p in parts]), cat([p.encoded.image_tokens for p in parts]),  # type: ignore[arg-type]
        None if first.pooled is None else tuple(torch.cat([p.encoded.pooled[i] for p in parts]) for i in (0, 1)),  # type: ignore[arg-type,index]
    )  # fmt: skip
    views = None
    if parts[0].views is not None:
        views = tuple(cat([p.views[i] for p in parts]) for i in (0, 1))  # type: ignore[index]
    return Features(encoded, views)  # type: ignore[arg-type]


def cat_pixels(parts: Sequence[Modality]) -> Modality:
    """A single-stream encoder's raw images ([N, 3, H, W] as tokens, ``pixel_mask`` [N, H, W] as mask)
    as one batch: each padded at the bottom and right to the largest height and width, the padding
    masked out, as ViLT's processor pads the images of one batch."""
    height = max(p.tokens.shape[2] for p in parts)  # type: ignore[union-attr]
    width = max(p.tokens.shape[3] for p in parts)  # type: ignore[union-attr]
    pixels, masks = [], []
    for part in parts:
        tokens = part.tokens
        assert tokens is not None
        mask = part.mask if part.mask is not None else torch.ones(tokens.shape[0], *tokens.shape[2:], dtype=torch.bool, device=tokens.device)
        pad = (0, width - tokens.shape[3], 0, height - tokens.shape[2])
        pixels.append(F.pad(tokens, pad))
        masks.append(F.pad(mask, pad, value=False))
    return Modality(None, torch.cat(pixels), torch.cat(masks))


def cat_batches(batches: Sequence[Mapping[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """The micro-batches' tensors (labels, caption ids; not pixels) as one batch; per-batch padded
    sequences ([b, L]) are right-padded with 0 to the longest, which their masks mark as padding."""
    out = {}
    for key in batches[0]:
        if key in PIXELS or key.startswith("view"):
            continue
        parts = [b[key] for b in batches]
        if parts[0].dim() >= 2:
            length = max(p.shape[1] for p in parts)
            parts = [F.pad(p, (0, 0) * (p.dim() - 2) + (0, length - p.shape[1])) for p in parts]
        out[key] = torch.cat(parts)
    return out


def _rng_state(device: torch.device) -> tuple[torch.Tensor, torch.Tensor | None]:
    return torch.get_rng_state(), torch.cuda.get_rng_state(device) if device.type == "cuda" else None


def _set_rng_state(state: tuple[torch.Tensor, torch.Tensor | None], device: torch.device) -> None:
    torch.set_rng_state(state[0])
    if state[1] is not None:
        torch.cuda.set_rng_state(state[1], device)


class CachedBatch:
    """One optimizer step over K micro-batches as one batch (GradCache, see the module).

    ``loss(micro_batches)`` encodes them without gradients and gives the whole batch's weighted
    loss and its parts; ``backward(loss, backward)`` back-propagates it (``backward``: the
    accelerator's, which scales an fp16 loss) and then each micro-batch's encoder through its
    features. ``autocast``: the context each forward runs in (the run's precision).
    """

    def __init__(self, model: MultimodalModel, autocast: Callable[[], Any]) -> None:
        self.model, self.autocast = model, autocast
        self._pending: list[tuple[Mapping[str, torch.Tensor], Any]] = []
        self._leaves: list[torch.Tensor | None] = []

    def loss(self, micro_batches: Sequence[Mapping[str, torch.Tensor]]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        device = self.model.device
        parts, self._pending = [], []
        for batch in micro_batches:
            state = _rng_state(device)
            with torch.no_grad(), self.autocast():
                parts.append(self.model.features(batch))
            self._pending.append((batch, state))
        whole = cat_features(parts)
        self._leaves = [None if t is None else t.detach().requires_grad_(t.is_floating_point()) for t in feature_tensors(whole)]
        fusion = self.model.fusion
        if isinstance(fusion, PairwiseFusion):  # the fusion over the whole batch in K checkpointed chunks
            fusion.recompute = len(micro_batches)
        try:
            with self.autocast():
                step = self.model.step_from(with_tensors(whole, self._leaves), cat_batches(micro_batches))
                return self.model.losses_of(step)
        finally:
            if isinstance(fusion, PairwiseFusion):
                fusion.recompute = 0

    def backward(self, loss: torch.Tensor, backward: Callable[[torch.Tensor], None]) -> None:
        backward(loss)
        device, start = self.model.device, 0
        after = _rng_state(device)  # the state one pass over the micro-batches leaves, as without the replay
        for batch, state in self._pending:
            _set_rng_state(state, device)
            with self.autocast():
                tensors = feature_tensors(self.model.features(batch))
            outputs, grads = [], []
            for tensor, leaf in zip(tensors, self._leaves, strict=True):
                if tensor is None or leaf is None or leaf.grad is None or not tensor.requires_grad:
                    continue
                rows = slice(start, start + tensor.shape[0])
                outputs.append(tensor)
                grads.append(leaf.grad[(rows, *(slice(0, n) for n in tensor.shape[1:]))].to(tensor.dtype))
            if outputs:
                torch.autograd.backward(outputs, grads)
            start += batch["pixel_values"].shape[0]
        _set_rng_state(after, device)
        self._pending, self._leaves = [], []


def average_gradients(params: Sequence[torch.nn.Parameter]) -> None:
    """Every process's gradients replaced by their mean, as DDP's reducer leaves them (the cached
    path calls the bare model, so DDP's hooks do not fire); one all-reduce over them flattened."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    flat = torch._utils._flatten_dense_tensors(grads)
    torch.distributed.all_reduce(flat)
    flat /= torch.distributed.get_world_size()
    for grad, mean in zip(grads, torch._utils._unflatten_dense_tensors(flat, grads), strict=True):
        grad.copy_(mean)


__all__ = ["CachedBatch", "across_batch", "average_gradients", "cat_batches", "cat_features"]
