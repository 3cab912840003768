"""Text that does not fit the encoder: how many texts the tokenizer truncates, and which become identical."""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from .errors import DataError

if TYPE_CHECKING:
    from .components import Encoder

CHUNK = 1024  # texts tokenised at once: bounds the padded batch's memory


def measure(encoder: Encoder, texts: Sequence[str], field: str = "caption") -> dict[str, Any] | None:
    """Token lengths and truncation of one split's texts, as the encoder tokenises them for training.

    Returns ``{"field", "texts", "max_length", "min_tokens", "median_tokens",
    "max_tokens", "truncated", "distinct", "merged"}``: ``truncated`` counts texts
    longer than the encoder keeps, ``distinct`` the different token sequences
    before truncation, ``merged`` those of them whose kept tokens equal another's.
    None when the encoder cannot give untruncated token ids (``Encoder.token_ids``).
    """
    full = encoder.token_ids(texts)
    if full is None:
        return None
    fed: list[tuple[int, ...]] = []
    for start in range(0, len(texts), CHUNK):
        batch = encoder.tokenize(texts[start : start + CHUNK])
        mask = batch["attention_mask"].bool()
        fed.extend(tuple(ids[keep].tolist()) for ids, keep in zip(batch["input_ids"], mask, strict=True))
    lengths = [len(ids) for ids in full]
    kept_as: dict[tuple[int, ...], tuple[int, ...]] = {tuple(whole): kept for whole, kept in zip(full, fed, strict=True)}
    groups: dict[tuple[int, ...], int] = defaultdict(int)
    for kept in kept_as.values():
        groups[kept] += 1
    return {
        "field": field,
        "texts": len(texts),
        "max_length": encoder.max_length,
        "min_tokens": min(lengths, default=0),
        "median_tokens": statistics.median(lengths) if lengths else 0,
        "max_tokens": max(lengths, default=0),
        "truncated": sum(len(whole) > len(kept) for whole, kept in zip(full, fed, strict=True)),
        "distinct": len(kept_as),
        "merged": sum(size for size in groups.values() if size > 1),
    }


def check(fits: Mapping[str, dict[str, Any] | None], limit: float, encoder: Encoder) -> None:
    """Refuse (DataError) a split where truncation makes more than ``limit`` of the distinct texts identical."""
    for split, fit in fits.items():
        if fit is None or fit["merged"] <= limit * fit["distinct"]:
            continue
        what = f"{fit['field']}s"
        if encoder.max_length_setting is not None:
            raise_it = f"raise {encoder.max_length_setting} (--set {encoder.max_length_setting}={fit['max_tokens']} keeps them whole), "
        else:
            raise_it = "use an encoder with a longer limit, "
        raise DataError(
            f"split '{split}': truncation at {fit['max_length']} tokens makes {fit['merged']} of {fit['distinct']} distinct "
            f"{what} identical to another ({fit['merged'] / fit['distinct']:.0%}, limit {limit:.0%}); {raise_it}"
            f"shorten the {what}, or allow it with --set data.max_merged_by_truncation=1"
        )


def note(fits: Mapping[str, dict[str, Any] | None]) -> str | None:
    """One line for the progress output when some texts were truncated, else None."""
    parts = [
        f"{split} {fit['truncated']} of {fit['texts']} {fit['field']}s truncated at {fit['max_length']} tokens"
        f" ({fit['merged']} distinct became identical)"
        for split, fit in fits.items()
        if fit is not None and fit["truncated"]
    ]
    return "text that does not fit: " + "; ".join(parts) if parts else None
