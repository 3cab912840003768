"""`text`: EDA-style caption augmentation: synonym replacement, insertion, adjacent swap and deletion of words."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import TYPE_CHECKING

from mmreg.components import Augmenter
from mmreg.errors import ConfigError

if TYPE_CHECKING:
    import numpy as np

    from mmreg.components import Sample

WORD = re.compile(r"^(\W*)(.*?)(\W*)$")  # leading punctuation, the word, trailing punctuation


def read_synonyms(path: str) -> dict[str, list[str]]:
    """The table in a JSON file, refused at build with the file named if it is not word -> list of words."""
    file = Path(path).expanduser()
    if not file.is_file():
        raise ConfigError(f"augmenter 'text': synonyms file {file} not found; point synonyms_file at a JSON file or unset it")
    try:
        table = json.loads(file.read_text(encoding="utf-8-sig"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"augmenter 'text': synonyms file {file} is not UTF-8 JSON ({exc}); fix the file") from exc
    if not (
        isinstance(table, dict)
        and all(isinstance(v, list) and all(isinstance(s, str) for s in v) for v in table.values())
    ):
        raise ConfigError(
            f'augmenter \'text\': synonyms file {file} must hold one JSON object of word -> list of synonyms, '
            f'like {{"red": ["crimson", "scarlet"]}}; fix the file'
        )
    return table


def normalise(table: dict[str, list[str]]) -> dict[str, list[str]]:
    """Lower-cased keys (lookup ignores case) and only usable synonyms; words without any are dropped."""
    out: dict[str, list[str]] = {}
    for word, alternatives in table.items():
        usable = [s.strip() for s in alternatives if s.strip() and s.strip().lower() != word.strip().lower()]
        if word.strip() and usable:
            out.setdefault(word.strip().lower(), []).extend(usable)
    return out


class TextAugment(Augmenter):
    """Changes ``sample.caption`` only: questions and answers are left alone, they carry the VQA target.

    The caption is split on whitespace and the four operations run in EDA's order:
    synonyms, insertion, swap, deletion, each word drawing its own chance. Punctuation
    stays attached to its word; synonyms keep a capitalised word capitalised. A caption
    is never emptied: if deletion would remove every word, one random word stays.
    """

    def __init__(
        self,
        *,
        p_synonym: float,
        p_insert: float,
        p_swap: float,
        p_delete: float,
        synonyms: dict[str, list[str]] | None,
        synonyms_file: str | None,
        seed: int,
    ) -> None:
        del seed  # every draw comes from the per-sample rng
        self.p_synonym, self.p_insert, self.p_swap, self.p_delete = p_synonym, p_insert, p_swap, p_delete
        table = read_synonyms(synonyms_file) if synonyms_file is not None else {}
        table.update(synonyms or {})
        self.synonyms = normalise(table)

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        return dataclasses.replace(sample, caption=self.augment(sample.caption, rng))

    def augment(self, text: str, rng: np.random.Generator) -> str:
        words = text.split()
        if not words:
            return text
        words = self.replace_synonyms(words, rng)
        words = self.insert(words, rng)
        words = self.swap(words, rng)
        words = self.delete(words, rng)
        return " ".join(words)

    def replace_synonyms(self, words: list[str], rng: np.random.Generator) -> list[str]:
        out = []
        for token in words:
            lead, word, trail = _split(token)
            choices = self.synonyms.get(word.lower())
            if choices and rng.random() < self.p_synonym:
                new = choices[int(rng.integers(len(choices)))]
                if word[:1].isupper():
                    new = new[:1].upper() + new[1:]
                token = lead + new + trail
            out.append(token)
        return out

    def insert(self, words: list[str], rng: np.random.Generator) -> list[str]:
        """Copies of the caption's own words (punctuation stripped), so no new vocabulary appears."""
        bare = [w for w in (_split(t)[1] for t in words) if w]
        if not bare:
            return words
        out = list(words)
        for _ in words:
            if rng.random() < self.p_insert:
                out.insert(int(rng.integers(len(out) + 1)), bare[int(rng.integers(len(bare)))])
        return out

    def swap(self, words: list[str], rng: np.random.Generator) -> list[str]:
        out, i = list(words), 0
        while i < len(out) - 1:
            if rng.random() < self.p_swap:
                out[i], out[i + 1] = out[i + 1], out[i]
                i += 2  # a swapped word is not swapped again
            else:
                i += 1
        return out

    def delete(self, words: list[str], rng: np.random.Generator) -> list[str]:
        keep = [w for w in words if rng.random() >= self.p_delete]
        return keep or [words[int(rng.integers(len(words)))]]


def _split(token: str) -> tuple[str, str, str]:
    match = WORD.match(token)
    assert match is not None  # the pattern matches any string
    return match.group(1), match.group(2), match.group(3)
