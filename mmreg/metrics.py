"""Evaluation metrics: retrieval recall@K in both directions, and accuracy, with the
``Evaluation`` accumulators task plugins compose.

Retrieval follows the standard protocol of Flickr30k and COCO (Karpathy splits): every
distinct image is scored once against every caption; image->text counts a hit when any of
the image's captions ranks in the top K, text->image when the caption's own image does.
With one caption per image this is the usual diagonal recall. Images are told apart by
``Sample.image_id``, which ``mmreg.data.Collate`` fills from the image's content where the
dataset gives none (``mmreg.identity``), so repeated pictures are one image on every data path.
Scores are computed in
blocks of image rows bounded in memory (``eval.score_memory_mb``), or, with
``task.shortlist=K``, only for the K best candidates of each query by pooled-vector cosine
(ALBEF, Li et al. 2021, section 4 "inference"; BLIP's ``evaluation`` with ``k_test``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F

from .components import Encoded, Evaluation, Modality, PairwiseFusion, Sample
from .errors import ConfigError

KS = (1, 5, 10)
BYTES_PER_PAIR = 24  # a float32 score and the two int64 pair indices PairwiseFusion.score builds
OWN_IMAGE = -1  # image_group of a row without image_id: its image is its own
MISS = torch.iinfo(torch.long).max  # the rank of a query whose match is not among its candidates


def recall_at_k(scores: torch.Tensor, k: int) -> float:
    """Fraction of rows whose matching column (the diagonal) ranks in the top ``k``.

    Ties count against the match: it must score strictly higher than all but
    k-1 others, so a constant scorer gets no credit.
    """
    n = scores.shape[0]
    if scores.shape[1] != n:
        raise ValueError(f"recall needs square scores with matches on the diagonal, got {tuple(scores.shape)}")
    positive = scores.diagonal().unsqueeze(1)
    rank = (scores >= positive).sum(dim=1) - 1  # others scoring at least as high
    return (rank < k).float().mean().item()


def retrieval_metric_names(ks: tuple[int, ...] = KS) -> list[str]:
    """The keys ``retrieval_metrics`` returns, in its order."""
    return [f"{kind}recall@{k}" for k in ks for kind in ("i2t_", "t2i_", "")]


def match_rank(scores: torch.Tensor, positive: torch.Tensor) -> torch.Tensor:
    """[Q] rank of each query's best-scoring match among its candidates: how many non-matches
    score at least as high (ties count against the match); ``MISS`` where no candidate matches.

    ``scores`` [Q, C] candidate scores, ``positive`` [Q, C] bool, True at the query's matches.
    """
    best = scores.masked_fill(~positive, float("-inf")).amax(dim=1, keepdim=True)
    rank = ((scores >= best) & ~positive).sum(dim=1)
    return rank.masked_fill(~positive.any(dim=1), MISS)


def recalls(i2t: torch.Tensor, t2i: torch.Tensor, ks: tuple[int, ...] = KS) -> dict[str, float]:
    """Recall@K in each direction from each query's ``match_rank``, and their mean as ``recall@K``."""
    out: dict[str, float] = {}
    for k in ks:
        a, b = (i2t < k).float().mean().item(), (t2i < k).float().mean().item()
        out.update({f"i2t_recall@{k}": a, f"t2i_recall@{k}": b, f"recall@{k}": (a + b) / 2})
    return out


def retrieval_metrics(scores: torch.Tensor, ks: tuple[int, ...] = KS, image_of_text: torch.Tensor | None = None) -> dict[str, float]:
    """Image->text and text->image recall@K of a whole [N_img, N_txt] score matrix, and their mean.

    ``image_of_text`` [N_txt] is the row of the image each caption describes (several captions
    may share one); None: caption j describes image j (a square matrix, matches on the diagonal).
    """
    if image_of_text is None:
        if scores.shape[0] != scores.shape[1]:
            raise ValueError(f"recall needs square scores with matches on the diagonal, got {tuple(scores.shape)}")
        image_of_text = torch.arange(scores.shape[0], device=scores.device)
    positive = image_of_text.unsqueeze(0) == torch.arange(scores.shape[0], device=scores.device).unsqueeze(1)
    return recalls(match_rank(scores, positive), match_rank(scores.T, positive.T), ks)


def image_group(image_id: str | None) -> int:
    """A stable int64 for an ``image_id`` (a 64-bit BLAKE2b digest), ``OWN_IMAGE`` for None."""
    if image_id is None:
        return OWN_IMAGE
    return int.from_bytes(hashlib.blake2b(image_id.encode(), digest_size=8).digest(), "little", signed=True)


def image_groups(samples: Sequence[Sample]) -> dict[str, torch.Tensor]:
    """``{"image_group": [N] int64}`` for a batch where a sample has an ``image_id``, else {}:
    the batch field ``RetrievalEvaluation`` groups captions by. Batches made by ``mmreg.data.Collate``
    carry an id on every sample (the dataset's, else the image's content id)."""
    if all(s.image_id is None for s in samples):
        return {}
    return {"image_group": torch.tensor([image_group(s.image_id) for s in samples], dtype=torch.long)}


def distinct_images(groups: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(rows, image_of_text): the row holding each distinct image (its first, in order of first
    appearance) and, per row, which of those images its caption describes. ``groups`` [N] from ``image_group``."""
    index: dict[tuple[bool, int], int] = {}
    rows, image_of_text = [], []
    for row, group in enumerate(groups.tolist()):
        key = (True, row) if group == OWN_IMAGE else (False, group)
        if key not in index:
            index[key] = len(rows)
            rows.append(row)
        image_of_text.append(index[key])
    return torch.tensor(rows, dtype=torch.long), torch.tensor(image_of_text, dtype=torch.long)


def rows_per_block(columns: int, memory_mb: float) -> int:
    """Query rows scored at once against ``columns`` candidates within about ``memory_mb`` MiB (at least one)."""
    return max(1, int(memory_mb * 2**20) // (BYTES_PER_PAIR * max(columns, 1)))


def blocked_ranks(
    score: Callable[[Modality, Modality], torch.Tensor], image: Modality, text: Modality, image_of_text: torch.Tensor, block: int, kmax: int,
    cosine: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """(i2t, t2i) ``match_rank`` of every pair scored by ``score(image, text)`` -> [n, m], plus the
    cosine of the ``cosine`` vectors ([n, D], [m, D]) where given, ``block`` image rows at a time,
    so no [N_img, N_txt] matrix is ever held.

    Image->text ranks are exact. For text->image only the ``kmax`` best non-matching images of
    each caption are kept across blocks: ranks are exact below ``kmax`` and at least ``kmax`` beyond.
    """
    n, m, device = len(image), len(text), text.device
    image_of_text = image_of_text.to(device)
    i2t = []
    top = torch.full((0, m), float("-inf"), device=device)  # the best non-matching scores of each caption so far
    match = torch.full((m,), float("-inf"), device=device)  # each caption's score with its own image
    for start in range(0, n, block):
        scores = score(image.index(slice(start, start + block)), text).float()
        if cosine is not None:
            scores = scores + F.normalize(cosine[0][start : start + block].float(), dim=-1) @ F.normalize(cosine[1].float(), dim=-1).T
        rows = torch.arange(start, start + len(scores), device=device)
        positive = image_of_text.unsqueeze(0) == rows.unsqueeze(1)
        i2t.append(match_rank(scores, positive))
        match = torch.maximum(match, scores.masked_fill(~positive, float("-inf")).amax(dim=0))
        candidates = torch.cat([top, scores.masked_fill(positive, float("-inf"))])
        top = candidates.topk(min(kmax, len(candidates)), dim=0).values
    t2i = (top >= match.unsqueeze(0)).sum(dim=0)
    return torch.cat(i2t).cpu(), t2i.cpu()


def shortlist_ranks(
    score_pairs: Callable[..., torch.Tensor], similarity: tuple[torch.Tensor, torch.Tensor], image: Modality, text: Modality,
    image_of_text: torch.Tensor, k: int, block: int, add_cosine: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """(i2t, t2i) ``match_rank`` among each query's ``k`` best candidates by the cosine of the
    ``similarity`` vectors ([N_img, D], [N_txt, D]), rescored by ``score_pairs(image, text, rows, cols)``
    (``PairwiseFusion.score_pairs``), plus that cosine where ``add_cosine`` (BLIP's k_test scoring:
    the matching logit plus the contrastive similarity); a query whose match is not shortlisted is a
    miss, as in ALBEF."""
    image_vectors, text_vectors = (F.normalize(v.float(), dim=-1) for v in similarity)
    image_of_text = image_of_text.to(text_vectors.device)
    ranks = []
    for queries, keys, is_image in ((image_vectors, text_vectors, True), (text_vectors, image_vectors, False)):
        out = []
        for start in range(0, len(queries), block):
            query_rows = torch.arange(start, min(start + block, len(queries)), device=keys.device)
            candidates = (queries[query_rows] @ keys.T).topk(min(k, len(keys)), dim=1).indices
            rows, cols = (query_rows.unsqueeze(1).expand_as(candidates), candidates) if is_image else (candidates, query_rows.unsqueeze(1).expand_as(candidates))
            scores = score_pairs(image, text, rows.reshape(-1), cols.reshape(-1)).float().reshape(candidates.shape)
            if add_cosine:
                scores = scores + (image_vectors[rows] * text_vectors[cols]).sum(dim=-1)
            positive = image_of_text[cols] == rows
            out.append(match_rank(scores, positive))
        ranks.append(torch.cat(out).cpu())
    return ranks[0], ranks[1]


TRAINED_SHORTLIST = 128  # candidates per query where the fusion trained on a contrastive shortlist (ALBEF's COCO k_test)


def shortlist_source(model: torch.nn.Module) -> str | None:
    """Which pooled vectors ``task.shortlist`` ranks by: "contrastive" (the image-text contrastive
    space a loss reading "pairs" trained, ``Encoded.pooled``), "encoder" (the encoder's own, in its
    shared space: ``Encoder.shared_space``), "projected" (the pooled vectors the fusion reads),
    or None where the model has none."""
    if "pairs" in getattr(model, "needs", ()):
        return "contrastive"
    if getattr(model.encoder, "shared_space", False):
        return "encoder"
    if not model.fusion.needs_tokens and not getattr(model.encoder, "single_stream", False):
        return "projected"
    return None


def adds_cosine(model: torch.nn.Module, rescore: str | None) -> bool:
    """Whether a pair's retrieval score adds the pooled cosine to the fusion's (retrieval's
    ``task.rescore``; None: where the fusion trained on hard negatives, BLIP's k_test scoring).
    Raises ConfigError for the cosine where the model has no pooled vectors to take it of."""
    source = shortlist_source(model)
    add = (rescore or ("fusion+cosine" if source == "contrastive" else "fusion")) == "fusion+cosine"
    if add and source is None:
        raise ConfigError("task.rescore=fusion+cosine adds the cosine of pooled vectors, and this encoder and fusion give none; use task.rescore=fusion")
    return add


def protocol_text(report: dict[str, Any]) -> str:
    """The retrieval protocol and scoring of a summary's ``retrieval`` entry, in words."""
    images, texts = report["images"], report["texts"]
    if report["captions_per_image"] == 1:
        protocol = f"{images:,} images x {texts:,} captions, one caption per image"
    else:
        protocol = f"{images:,} images x {texts:,} captions, a caption of the image counts as a match"
    fusion = report.get("fusion", "the fusion") + (" plus the pooled cosine" if report.get("rescore") == "fusion+cosine" else "")
    if report["scoring"] == "shortlist":
        by = {"encoder": "the encoder's pooled cosine", "contrastive": "the contrastive (ITC) cosine"}.get(report["shortlist_by"], "pooled cosine")
        scoring = f"shortlist K={report['shortlist']} by {by}, rescored with {fusion}"
    else:
        scoring = f"scored all {images:,} x {texts:,} pairs with {fusion}"
        if report.get("note"):
            scoring += f" ({report['note']})"
    return f"{protocol}; {scoring}"


class RetrievalEvaluation(Evaluation):
    """Recall@K of every distinct image against every caption of the split (``image_group`` in
    the batch groups captions of one image; without it every row is its own image), scored by
    the fusion's ``score`` in blocks of at most ``memory_mb`` MiB (``eval.score_memory_mb``), or over
    the ``shortlist`` best candidates of each query (retrieval's ``task.shortlist``).

    The shortlist needs pooled vectors (``shortlist_source``) and a fusion that scores pairs one by
    one (``PairwiseFusion``); another fusion's ``score`` is already one matrix product, so every
    pair is scored and the report says so. ``shortlist`` None: ``TRAINED_SHORTLIST`` where the fusion
    trained on a contrastive shortlist (a loss reading "pairs"), else every pair; "all": every pair.
    ``rescore``: what a pair scores, "fusion" (its ``score``) or "fusion+cosine" (plus the cosine of
    the pooled vectors, as BLIP's evaluation adds the contrastive similarity to the matching logit);
    None: "fusion+cosine" where the fusion trained on hard negatives, else "fusion".
    Raises ConfigError for a shortlist, or a cosine, without pooled vectors.
    """

    def __init__(
        self, model: torch.nn.Module | None = None, *, memory_mb: float = 512, shortlist: int | str | None = None, rescore: str | None = None
    ) -> None:
        self.names = tuple(retrieval_metric_names())
        self.memory_mb = memory_mb
        self.source = None if model is None else shortlist_source(model)
        if shortlist is None and self.source == "contrastive":
            shortlist = TRAINED_SHORTLIST
        self.shortlist = None if shortlist == "all" else shortlist
        self.add_cosine = model is not None and adds_cosine(model, rescore)
        if self.shortlist is not None and self.source is None:
            raise ConfigError(
                "task.shortlist ranks candidates by the cosine of pooled vectors, and this encoder and fusion give none "
                "(the fusion reads tokens, and the encoder's pooled vectors share no space); unset task.shortlist"
            )
        self.images: list[Modality] = []
        self.texts: list[Modality] = []
        self.pooled: list[tuple[torch.Tensor, torch.Tensor]] = []
        self.groups: list[torch.Tensor] = []
        self.fusion: Any = None
        self.report: dict[str, Any] = {}

    def update(self, model: torch.nn.Module, features: Encoded, batch: dict[str, torch.Tensor]) -> None:
        self.fusion = model.fusion
        self.images.append(features.image)
        self.texts.append(features.text)
        if self.shortlist is not None or self.add_cosine:
            if self.source in ("encoder", "contrastive") and features.pooled is not None:
                self.pooled.append(features.pooled)
            else:
                self.pooled.append((features.image.pooled, features.text.pooled))  # type: ignore[arg-type]
        rows = len(features.text)
        self.groups.append(batch["image_group"].cpu() if "image_group" in batch else torch.full((rows,), OWN_IMAGE))

    def compute(self) -> dict[str, float]:
        rows, image_of_text = distinct_images(torch.cat(self.groups))
        text = Modality.cat(self.texts)
        image = Modality.cat(self.images).index(rows.to(text.device))
        n, m = len(image), len(text)
        block = rows_per_block(max(n, m), self.memory_mb)
        self.report = {"images": n, "texts": m, "captions_per_image": round(m / n, 2), "scoring": "all"}
        pairwise = isinstance(self.fusion, PairwiseFusion)
        similarity = None
        if self.pooled:
            similarity = (torch.cat([p[0] for p in self.pooled])[rows.to(text.device)], torch.cat([p[1] for p in self.pooled]))
        if self.add_cosine:
            self.report["rescore"] = "fusion+cosine"
        if self.shortlist is not None and pairwise:
            block = rows_per_block(max(n, m, self.shortlist), self.memory_mb)
            i2t, t2i = shortlist_ranks(self.fusion.score_pairs, similarity, image, text, image_of_text, self.shortlist, block, self.add_cosine)  # type: ignore[arg-type]
            self.report.update(scoring="shortlist", shortlist=self.shortlist, shortlist_by=self.source)
        else:
            i2t, t2i = blocked_ranks(self.fusion.score, image, text, image_of_text, block, max(KS), similarity if self.add_cosine else None)
            if self.shortlist is not None:
                self.report["note"] = "its score is one matrix product: task.shortlist saves nothing and was not used"
        return recalls(i2t, t2i)


class AccuracyEvaluation(Evaluation):
    """Accuracy of the head's argmax against ``batch["labels"]`` over matched pairs (labels
    outside the training vocabulary, -100, count as wrong), reported as ``name`` (the task's)."""

    def __init__(self, task: Any, name: str) -> None:
        self.task, self.metric, self.correct, self.total = task, name, 0, 0
        self.names = (name,)

    def update(self, model: torch.nn.Module, features: Encoded, batch: dict[str, torch.Tensor]) -> None:
        logits = self.task.forward(model.head, model.fusion, features, batch)["logits"]
        self.correct += (logits.argmax(dim=-1) == batch["labels"]).sum().item()
        self.total += batch["labels"].numel()

    def compute(self) -> dict[str, float]:
        return {self.metric: self.correct / max(self.total, 1)}


def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    return (logits.argmax(dim=-1) == labels).float().mean().item()
