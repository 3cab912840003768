"""`shapes`: a synthetic image-caption dataset of coloured shapes, offline and deterministic."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from mmreg.components import Dataset, Sample, Samples
from mmreg.errors import DataError

KINDS = ("circle", "square", "triangle", "diamond", "cross")
COLOURS = {
    "red": (220, 40, 40),
    "green": (40, 180, 60),
    "blue": (50, 80, 230),
    "yellow": (235, 215, 40),
    "purple": (150, 60, 200),
    "white": (240, 240, 240),
}
SIZES = {"small": 0.22, "large": 0.4}  # shape radius as a fraction of the image side
ROWS = ("top", "middle", "bottom")
COLS = ("left", "centre", "right")
SPLITS = {"train": 0, "val": 1}


def _position(row: int, col: int) -> str:
    if (ROWS[row], COLS[col]) == ("middle", "centre"):
        return "in the centre"
    if ROWS[row] == "middle":
        return f"on the {COLS[col]}"
    if COLS[col] == "centre":
        return f"at the {ROWS[row]}"
    return f"at the {ROWS[row]} {COLS[col]}"


def render(kind: str, colour: str, size: str, row: int, col: int, image_size: int, rng: np.random.Generator, noise: float) -> Image.Image:
    """Draw one shape on a noisy dark background."""
    side = image_size
    background = rng.normal(30.0, noise, size=(side, side, 3)) if noise else np.full((side, side, 3), 30.0)
    image = Image.fromarray(np.clip(background, 0, 255).astype(np.uint8))
    r = SIZES[size] * side / 2
    cell = side / 3
    cx = cell * (col + 0.5) + rng.uniform(-0.15, 0.15) * cell
    cy = cell * (row + 0.5) + rng.uniform(-0.15, 0.15) * cell
    fill = COLOURS[colour]
    draw = ImageDraw.Draw(image)
    if kind == "circle":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
    elif kind == "square":
        draw.rectangle([cx - r, cy - r, cx + r, cy + r], fill=fill)
    elif kind == "triangle":
        draw.polygon([(cx, cy - r), (cx + r, cy + r), (cx - r, cy + r)], fill=fill)
    elif kind == "diamond":
        draw.polygon([(cx, cy - r), (cx + r, cy), (cx, cy + r), (cx - r, cy)], fill=fill)
    else:  # cross
        w = r / 2.5
        draw.rectangle([cx - r, cy - w, cx + r, cy + w], fill=fill)
        draw.rectangle([cx - w, cy - r, cx + w, cy + r], fill=fill)
    return image


@dataclass(frozen=True)
class Attributes:
    kind: int
    colour: str
    size: str
    row: int
    col: int
    question_type: int

    @classmethod
    def draw(cls, rng: np.random.Generator) -> Attributes:
        """Drawn first from the sample's generator, so texts never need the image drawn."""
        kind = int(rng.integers(len(KINDS)))
        colour = list(COLOURS)[int(rng.integers(len(COLOURS)))]
        size = list(SIZES)[int(rng.integers(len(SIZES)))]
        return cls(kind, colour, size, int(rng.integers(3)), int(rng.integers(3)), int(rng.integers(4)))

    def caption(self, name_kind: bool) -> str:
        return f"a {self.size} {self.colour} {KINDS[self.kind] if name_kind else 'shape'} {_position(self.row, self.col)}"

    def qa(self) -> tuple[str, str]:
        """One question about the image and its one-word or one-phrase answer."""
        kind = KINDS[self.kind]
        if self.question_type == 0:
            return f"what colour is the {kind}?", self.colour
        if self.question_type == 1:
            return f"what shape is the {self.colour} object?", kind
        if self.question_type == 2:
            return f"what size is the {self.colour} {kind}?", self.size
        where = "centre" if (self.row, self.col) == (1, 1) else " ".join(
            w for w in (ROWS[self.row] if self.row != 1 else "", COLS[self.col] if self.col != 1 else "") if w
        )
        return f"where is the {self.colour} {kind}?", where

    def human_answers(self) -> tuple[str, ...] | None:
        """Ten answers as VQA collects them where a question allows several phrasings
        (a position: seven "left", three "on the left"); None where one answer is all there is."""
        _, answer = self.qa()
        if self.question_type != 3 or answer == "centre":
            return None
        return (answer,) * 7 + (f"on the {answer}",) * 3


class ShapesSplit(Samples):
    """A split whose samples are drawn on access from (seed, split, index)."""

    def __init__(self, seed: int, split: int, size: int, image_size: int, noise: float, caption_kind: bool) -> None:
        self.seed, self.split, self.size, self.image_size, self.noise = seed, split, size, image_size, noise
        self.caption_kind = caption_kind

    def __len__(self) -> int:
        return self.size

    def sample(self, index: int) -> Sample:
        rng = np.random.default_rng([self.seed, self.split, index])
        a = Attributes.draw(rng)
        image = render(KINDS[a.kind], a.colour, a.size, a.row, a.col, self.image_size, rng, self.noise)
        question, answer = a.qa()
        return Sample(image, a.caption(self.caption_kind), a.kind, question, answer, answers=a.human_answers())

    def text(self, index: int, field: str) -> str:
        """A text field alone, without drawing the image."""
        a = Attributes.draw(np.random.default_rng([self.seed, self.split, index]))
        if field == "caption":
            return a.caption(self.caption_kind)
        question, answer = a.qa()
        return {"question": question, "answer": answer}[field]

    def answers(self, index: int) -> tuple[str, ...]:
        """The human answers alone, without drawing the image."""
        a = Attributes.draw(np.random.default_rng([self.seed, self.split, index]))
        return a.human_answers() or (a.qa()[1],)


class Shapes(Dataset):
    """Coloured shapes with captions naming kind, colour, size and position; label = kind;
    one question per image about its colour, shape, size or position, with ten human answers
    where a position can be phrased two ways ("left", "on the left")."""

    fields = frozenset({"image", "caption", "label", "question", "answer"})
    classes = list(KINDS)

    def __init__(
        self, *, train_size: int, val_size: int, image_size: int, noise: float, caption_kind: bool, seed: int
    ) -> None:
        self._splits = {
            name: ShapesSplit(seed, code, train_size if name == "train" else val_size, image_size, noise, caption_kind)
            for name, code in SPLITS.items()
        }

    def split(self, name: str) -> ShapesSplit:
        if name not in self._splits:
            raise DataError(f"dataset 'shapes' has no split '{name}' (splits: {', '.join(self._splits)})")
        return self._splits[name]

    def check(self, name: str) -> list[tuple[int, str]]:
        self.split(name)
        return []  # drawn in memory: nothing can be missing or corrupt

    def texts(self, name: str, field: str = "caption") -> list[str]:
        split = self.split(name)
        return [split.text(i, field) for i in range(len(split))]

    def answers(self, name: str) -> list[tuple[str, ...]]:
        split = self.split(name)
        return [split.answers(i) for i in range(len(split))]
