"""`digits`: scikit-learn's 1797 real 8x8 handwritten digits, upscaled and captioned; ships offline."""

from __future__ import annotations

import numpy as np
from PIL import Image

from mmreg.components import Dataset, Sample, Samples
from mmreg.errors import DataError
from mmreg_plugins.datasets.files import hold_out

NAMES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
SPLITS = ("train", "val")


class DigitsSplit(Samples):
    """The 8x8 pixel arrays of one split; each image is upscaled to RGB only when accessed."""

    def __init__(self, pixels: np.ndarray, labels: np.ndarray, image_size: int, captions: list[str]) -> None:
        self.pixels, self.labels, self.image_size, self.captions = pixels, labels, image_size, captions

    def __len__(self) -> int:
        return len(self.labels)

    def sample(self, index: int) -> Sample:
        gray = Image.fromarray(self.pixels[index])
        image = gray.resize((self.image_size, self.image_size), Image.Resampling.BILINEAR).convert("RGB")
        return Sample(image, self.captions[index], int(self.labels[index]))


class Digits(Dataset):
    """Handwritten digits 0-9 (label = digit), split per digit so both splits keep the class balance."""

    fields = frozenset({"image", "caption", "label"})
    classes = list(NAMES)

    def __init__(self, *, image_size: int, val_fraction: float, caption_names_digit: bool, caption_accuracy: float = 1.0, seed: int) -> None:
        from sklearn.datasets import load_digits  # imported here: sklearn is slow to import and `mmreg list` needs none of it

        digits = load_digits()
        pixels = np.round(digits.images * (255 / 16)).astype(np.uint8)  # values are 0..16
        labels = digits.target.astype(np.int64)
        rng = np.random.default_rng(seed)
        val = np.zeros(len(labels), dtype=bool)
        for digit in range(len(NAMES)):
            members = np.flatnonzero(labels == digit)
            val[members[hold_out(len(members), val_fraction, rng)]] = True
        named = labels.copy()  # the digit each caption names
        if caption_accuracy < 1:
            wrong = np.random.default_rng([seed, 1]).random(len(labels)) >= caption_accuracy
            shift = np.random.default_rng([seed, 2]).integers(1, len(NAMES), size=len(labels))
            named[wrong] = (labels[wrong] + shift[wrong]) % len(NAMES)  # another digit, each equally likely
        self._splits = {}
        for name, chosen in zip(SPLITS, (~val, val)):
            captions = [f"a handwritten digit {NAMES[d]}" if caption_names_digit else "a handwritten digit" for d in named[chosen]]
            self._splits[name] = DigitsSplit(pixels[chosen], labels[chosen], image_size, captions)

    def split(self, name: str) -> DigitsSplit:
        if name not in self._splits:
            raise DataError(f"dataset 'digits' has no split '{name}' (splits: {', '.join(self._splits)})")
        return self._splits[name]

    def check(self, name: str) -> list[tuple[int, str]]:
        self.split(name)
        return []  # held in memory: nothing can be missing or corrupt

    def texts(self, name: str, field: str = "caption") -> list[str]:
        if field != "caption":
            raise DataError(f"dataset 'digits' has no '{field}' texts, only captions")
        return list(self.split(name).captions)
