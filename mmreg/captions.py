"""Captions from a trained run (the API behind `mmreg caption`): a task that generates text
(``generate`` on its task plugin, e.g. `captioning`) writes one caption per image."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .errors import ConfigError
from .plugins import PluginHost


def caption_images(
    run: str | Path,
    images: Sequence[str | Path],
    *,
    beams: int | None = None,
    prompt: str | None = None,
    checkpoint: str = "best",
    device: str = "auto",
    runs_dir: str | Path = "runs",
    host: PluginHost | None = None,
) -> list[dict[str, Any]]:
    """``[{"image": path, "caption": text}]``, one per image, in order.

    ``beams`` (beam width; 1 is greedy) and ``prompt`` (every caption starts with it) default
    to the run's ``eval`` settings. Raises ConfigError for a run whose task does not
    generate text, a bad checkpoint or beam width, or a prompt of unknown words, and
    DataError for an image that cannot be read; all before any model is built where possible.
    """
    import torch

    from .components import Modality
    from .history import load_run, rebuild_run, weights_for
    from .images import read_image_files
    from .train import pick_device

    if beams is not None and beams < 1:
        raise ConfigError(f"--beams must be at least 1, got {beams}")
    run_path = load_run(run, runs_dir).path
    weights, _ = weights_for(run_path, checkpoint)
    loaded = read_image_files(images)
    p = rebuild_run(run_path, weights, host)
    if not hasattr(p.task, "generate"):
        raise ConfigError(f"run {run_path.name} trained task '{p.task.name}', which does not generate text; give a captioning run")
    torch_device = pick_device(device)
    model = p.model.to(torch_device).eval()
    with torch.inference_mode():
        raw = model.encoder.encode_images(model.encoder.preprocess(loaded).to(torch_device))
        image = Modality(tokens=raw.tokens, mask=raw.mask)
        captions = p.task.generate(model.head, image, num_beams=beams, prompt=prompt)
    return [{"image": str(path), "caption": caption} for path, caption in zip(images, captions, strict=True)]


__all__ = ["caption_images"]
