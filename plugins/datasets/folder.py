"""`folder`: images sorted into one sub-folder per class, captioned from a template naming the class."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mmreg.errors import DataError
from mmreg_plugins.datasets.files import DiskDataset, ImageSplit, Record, hold_out

EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp"})


def class_folders(folder: Path) -> dict[str, list[Path]]:
    """Class name -> its images (sorted, found in sub-folders too); hidden entries are skipped."""
    if not folder.is_dir():
        raise DataError(f"dataset folder {folder} not found; set dataset.root to a folder of class sub-folders")
    entries = sorted(p for p in folder.iterdir() if not p.name.startswith("."))
    if not entries:
        raise DataError(f"dataset folder {folder} is empty; put one sub-folder of images per class in it")
    classes = [p for p in entries if p.is_dir()]
    if not classes:
        raise DataError(f"dataset folder {folder} has no class folders; put each class's images in a sub-folder named after it")
    images = {}
    for sub in classes:
        found = sorted(
            p for p in sub.rglob("*") if p.suffix.lower() in EXTENSIONS and p.is_file() and not p.name.startswith(".")
        )
        if not found:
            raise DataError(
                f"class folder {sub} has no images ({', '.join(sorted(EXTENSIONS))}); add some or remove the folder"
            )
        images[sub.name] = found
    return images


class Folder(DiskDataset):
    """An image-folder dataset (torchvision's ImageFolder layout): label = folder, caption from the template."""

    dataset_name = "folder"
    fields = frozenset({"image", "caption", "label"})

    def __init__(self, *, root: str, template: str, val_fraction: float, seed: int) -> None:
        top = Path(root)
        if (top / "train").is_dir() and (top / "val").is_dir():
            images = {name: class_folders(top / name) for name in ("train", "val")}
        else:
            images = self._hold_out(class_folders(top), val_fraction, np.random.default_rng(seed))
        self.classes = sorted(set(images["train"]) | set(images["val"]))
        ids = {label: i for i, label in enumerate(self.classes)}
        self._splits = {
            name: ImageSplit(
                [
                    Record(path, template.format(label=label.replace("_", " ")), ids[label])
                    for label, paths in by_class.items()
                    for path in paths
                ]
            )
            for name, by_class in images.items()
        }

    @staticmethod
    def _hold_out(images: dict[str, list[Path]], fraction: float, rng: np.random.Generator) -> dict[str, dict[str, list[Path]]]:
        """Hold out ``fraction`` of each class, so both splits see every class with two or more images."""
        splits: dict[str, dict[str, list[Path]]] = {"train": {}, "val": {}}
        for label, paths in images.items():
            held = set(hold_out(len(paths), fraction, rng))
            splits["train"][label] = [p for i, p in enumerate(paths) if i not in held]
            splits["val"][label] = [p for i, p in enumerate(paths) if i in held]
        return splits
