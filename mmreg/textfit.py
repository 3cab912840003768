"""Text that does not fit the encoder: how many texts the tokenizer truncates, which become identical,
and how many characters it cannot represent (its unknown token)."""

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
    "max_tokens", "truncated", "distinct", "merged", "unknown_tokens",
    "with_unknown"}``: ``truncated`` counts texts longer than the encoder keeps,
    ``distinct`` the different token sequences before truncation, ``merged``
    those of them whose kept tokens equal another's, ``unknown_tokens`` the
    tokens that are the tokenizer's unknown token (characters a real vocabulary
    lacks, which the model never sees; always 0 for the tiny presets' byte-level
    tokenizer) and ``with_unknown`` the texts holding one. None when the encoder
    cannot give untruncated token ids (``Encoder.token_ids``).
    """
    full = encoder.token_ids(texts)
    if full is None:
        return None
    unk = getattr(encoder.tokenizer, "unk_token_id", None)
    unknown = [ids.count(unk) if unk is not None else 0 for ids in full]
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
        "unknown_tokens": sum(unknown),
        "with_unknown": sum(1 for n in unknown if n),
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
    """One line for the progress output when some texts were truncated or hold unknown tokens, else None."""
    parts = []
    for split, fit in fits.items():
        if fit is None:
            continue
        if fit["truncated"]:
            parts.append(
                f"{split} {fit['truncated']} of {fit['texts']} {fit['field']}s truncated at {fit['max_length']} tokens"
                f" ({fit['merged']} distinct became identical)"
            )
        if fit["unknown_tokens"]:
            parts.append(
                f"{split} {fit['with_unknown']} of {fit['texts']} {fit['field']}s hold characters the tokenizer cannot "
                f"represent ({fit['unknown_tokens']} unknown tokens)"
            )
    return "text that does not fit: " + "; ".join(parts) if parts else None
