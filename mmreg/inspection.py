"""`mmreg data inspect`: what the model receives from a data set, read exactly as a run reads it, without training."""

from __future__ import annotations

import textwrap
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .config import Experiment

if TYPE_CHECKING:
    import torch
    from PIL import Image

    from .api import Prepared
    from .components import Encoder, Sample
    from .data import SplitView
    from .plugins import PluginHost

SPLITS = ("train", "val")
CELL = 128  # side of each image in samples.png, in pixels
LABEL_LINES = 3


def inspect_data(
    experiment: Experiment | Mapping[str, Any],
    *,
    split: str = "train",
    n: int = 16,
    out: str | Path = "data-inspect",
    host: PluginHost | None = None,
) -> dict[str, Any]:
    """Read the data set as ``mmreg.run`` would and write what the model receives into ``out``.

    The same dataset, image loader (``mmreg.images``), augmenters (``split="train"``
    only, as at the first epoch), image processor and tokenizer as a run; no
    optimizer, no training. Unusable samples and truncated texts are reported,
    not refused. Writes ``report.json`` (the returned report), ``samples.png``
    (the first ``n`` samples of the split in order, de-normalised, each with its
    text decoded back from its tokens) and ``batch.safetensors`` (the collated
    batch of those samples: ``pixel_values`` [n, 3, H, W] float32, ``input_ids``
    and ``attention_mask`` [n, L] int64, and ``labels`` or views where the run has
    them). Raises the errors of ``mmreg.api.prepare`` for bad settings.
    """
    from safetensors.torch import save_file

    from .api import collate_for, prepare
    from .data import AugmentedSplit
    from .errors import ConfigError
    from .pixels import normalize_pixels
    from .runs import atomic_path, check_destination, write_atomic, write_json
    from .streams import head, is_stream

    check_destination(out, "report folder", "--out")
    if split not in SPLITS:
        raise ConfigError(f"unknown split '{split}'; use train or val")
    if n < 1:
        raise ConfigError(f"--n {n}: show at least one sample")
    p = prepare(experiment, host, strict=False)
    splits = {"train": p.train_split, "val": p.val_split}
    report = build_report(p, splits)

    chosen: Sequence[Sample] = splits[split]
    if split == "train":
        chosen = AugmentedSplit(chosen, p.augmenters, p.exp.seed)  # epoch 0, as the run's first pass
    items = head(chosen, n) if is_stream(chosen) else [chosen[i] for i in range(min(n, len(chosen)))]
    encoder = p.model.encoder
    batch = {k: v.contiguous() for k, v in normalize_pixels(collate_for(p)(items), encoder).items()}
    texts = encoder.decode(batch["input_ids"]) or [getattr(s, p.task.text) for s in items]

    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    with atomic_path(folder / "batch.safetensors") as tmp:
        save_file(batch, str(tmp))
    write_atomic(folder / "samples.png", _png(sample_grid(batch["pixel_values"], texts, encoder)))
    report["shown"] = {"split": split, "samples": len(items)}
    write_json(folder / "report.json", report)
    return report


def build_report(p: Prepared, splits: Mapping[str, SplitView]) -> dict[str, Any]:
    """The report: sizes, images, unusable files, text fit, duplicates, class or answer counts, normalisation."""
    report: dict[str, Any] = {"samples": {name: len(view) for name, view in splits.items()}}
    report["images"] = {}
    report["duplicates"] = {}
    counts: dict[str, Counter[str]] = {}
    for name, view in splits.items():
        images, duplicates, labels = _scan(view, p.dataset.classes)
        report["images"][name] = images
        texts = p.dataset.texts(name, p.task.text)
        repeated = len(texts) - len(set(texts))
        report["duplicates"][name] = {"images": duplicates, f"{p.task.text}s": repeated}
        if p.task.target == "answer":
            counts[name] = Counter(p.dataset.texts(name, "answer"))
        elif labels:
            counts[name] = labels
    report["unusable"] = p.skipped
    report["text"] = p.text_fit
    if counts:
        report["answers" if p.task.target == "answer" else "classes"] = {name: dict(c.most_common()) for name, c in counts.items()}
    from .optim import part_counts

    report["parameters"] = part_counts(p.model)
    norm = p.model.encoder.image_normalization()
    report["image_mean"], report["image_std"] = norm if norm is not None else (None, None)
    return report


def _scan(view: SplitView, classes: list[str] | None) -> tuple[dict[str, Any], int, Counter[str]]:
    """Formats, modes and sizes of a split's images as decoded, how many repeat an earlier image, and label counts."""
    import hashlib

    from .images import to_rgb
    from .streams import StreamSplit, originals

    formats: Counter[str] = Counter()
    modes: Counter[str] = Counter()
    sizes: Counter[tuple[int, int]] = Counter()
    labels: Counter[str] = Counter()
    seen: set[bytes] = set()
    duplicates = 0
    for sample in originals(view) if isinstance(view, StreamSplit) else (view.samples[i] for i in view.keep):
        image = sample.image
        formats[image.format or "in memory"] += 1
        modes[image.mode] += 1
        sizes[image.size] += 1
        rgb = to_rgb(image, view.background)
        digest = hashlib.blake2b(repr(rgb.size).encode() + rgb.tobytes(), digest_size=16).digest()
        duplicates += digest in seen
        seen.add(digest)
        if classes is not None and sample.label is not None:
            labels[classes[sample.label]] += 1
    by_area = sorted(sizes, key=lambda s: (s[0] * s[1], s))
    summary = {
        "formats": dict(formats.most_common()),
        "modes": dict(modes.most_common()),
        "sizes": {
            "min": _size(by_area[0]) if by_area else None,
            "max": _size(by_area[-1]) if by_area else None,
            "most_common": {_size(s): c for s, c in sizes.most_common(5)},
        },
    }
    return summary, duplicates, labels


def _size(size: tuple[int, int]) -> str:
    return f"{size[0]}x{size[1]}"


def viewable(pixel_values: torch.Tensor, encoder: Encoder) -> torch.Tensor:
    """[N, 3, H, W] as fed to the encoder -> [N, H, W, 3] uint8, de-normalised with the encoder's mean and std
    (each image stretched to 0-255 where the encoder does not say how it normalises)."""
    import torch

    x = pixel_values.float()
    norm = encoder.image_normalization()
    if norm is not None:
        mean, std = (torch.tensor(v, dtype=x.dtype).view(1, -1, 1, 1) for v in norm)
        x = x * std + mean
    else:
        low = x.amin(dim=(1, 2, 3), keepdim=True)
        x = (x - low) / (x.amax(dim=(1, 2, 3), keepdim=True) - low).clamp_min(1e-12)
    return (x.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1)


def sample_grid(pixel_values: torch.Tensor, texts: Sequence[str], encoder: Encoder) -> Image.Image:
    """The samples side by side, four to a row, each scaled to ``CELL`` pixels with its text below."""
    from PIL import Image, ImageDraw, ImageFont

    images = viewable(pixel_values, encoder).numpy()
    font = ImageFont.load_default(size=11)
    line_height, columns = 13, min(4, len(images))
    rows = -(-len(images) // columns)
    cell_h = CELL + 4 + LABEL_LINES * line_height
    grid = Image.new("RGB", (columns * (CELL + 8), rows * (cell_h + 8)), "white")
    draw = ImageDraw.Draw(grid)
    for i, (pixels, text) in enumerate(zip(images, texts, strict=True)):
        x, y = (i % columns) * (CELL + 8) + 4, (i // columns) * (cell_h + 8) + 4
        grid.paste(Image.fromarray(pixels, "RGB").resize((CELL, CELL), Image.Resampling.NEAREST), (x, y))
        lines = textwrap.wrap(text, width=22, max_lines=LABEL_LINES, placeholder=" ...") or ["(no text)"]
        for j, line in enumerate(lines):
            draw.text((x, y + CELL + 4 + j * line_height), line, fill="black", font=font)
    return grid


def _png(image: Image.Image) -> bytes:
    import io

    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


__all__ = ["inspect_data", "sample_grid", "viewable"]
