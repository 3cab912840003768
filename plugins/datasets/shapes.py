"""`shapes`: a synthetic image-caption dataset of coloured shapes, offline and deterministic."""

from __future__ import annotations

from collections.abc import Sequence
from typing import overload

import numpy as np
from PIL import Image, ImageDraw
from pydantic import BaseModel, ConfigDict, Field

from mmreg.components import Dataset, Sample
from mmreg.errors import DataError
from mmreg.hookspecs import hookimpl

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


class ShapesParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    train_size: int = Field(4000, ge=1, description="number of training samples")
    val_size: int = Field(256, ge=1, description="number of validation samples")
    image_size: int = Field(64, ge=16, description="side of the square images in pixels")
    noise: float = Field(12.0, ge=0, description="std of the per-pixel background noise (0-255 scale)")


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


class ShapesSplit(Sequence[Sample]):
    """A split whose samples are drawn on access from (seed, split, index)."""

    def __init__(self, seed: int, split: int, size: int, image_size: int, noise: float) -> None:
        self.seed, self.split, self.size, self.image_size, self.noise = seed, split, size, image_size, noise

    def __len__(self) -> int:
        return self.size

    @overload
    def __getitem__(self, index: int) -> Sample: ...
    @overload
    def __getitem__(self, index: slice) -> list[Sample]: ...
    def __getitem__(self, index: int | slice) -> Sample | list[Sample]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(self.size))]
        if not -self.size <= index < self.size:
            raise IndexError(index)
        index %= self.size
        rng = np.random.default_rng([self.seed, self.split, index])
        kind, colour, size, row, col = _draw_attributes(rng)
        image = render(KINDS[kind], colour, size, row, col, self.image_size, rng, self.noise)
        return Sample(image, _caption(kind, colour, size, row, col), kind)

    def caption(self, index: int) -> str:
        """The caption alone, without drawing the image."""
        return _caption(*_draw_attributes(np.random.default_rng([self.seed, self.split, index])))


def _draw_attributes(rng: np.random.Generator) -> tuple[int, str, str, int, int]:
    kind = int(rng.integers(len(KINDS)))
    colour = list(COLOURS)[int(rng.integers(len(COLOURS)))]
    size = list(SIZES)[int(rng.integers(len(SIZES)))]
    return kind, colour, size, int(rng.integers(3)), int(rng.integers(3))


def _caption(kind: int, colour: str, size: str, row: int, col: int) -> str:
    return f"a {size} {colour} {KINDS[kind]} {_position(row, col)}"


class Shapes(Dataset):
    """Coloured shapes with captions naming kind, colour, size and position; label = kind."""

    fields = frozenset({"image", "caption", "label"})
    classes = list(KINDS)

    def __init__(self, *, train_size: int, val_size: int, image_size: int, noise: float, seed: int) -> None:
        self._splits = {
            name: ShapesSplit(seed, code, train_size if name == "train" else val_size, image_size, noise)
            for name, code in SPLITS.items()
        }

    def split(self, name: str) -> ShapesSplit:
        if name not in self._splits:
            raise DataError(f"dataset 'shapes' has no split '{name}' (splits: {', '.join(self._splits)})")
        return self._splits[name]

    def captions(self, name: str) -> list[str]:
        split = self.split(name)
        return [split.caption(i) for i in range(len(split))]


@hookimpl
def mmreg_register_datasets(register):
    register(
        "shapes",
        Shapes,
        params=ShapesParams,
        help="synthetic coloured shapes with captions; offline, deterministic from the seed",
    )
