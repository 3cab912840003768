"""Predictions from a trained run (the API behind `mmreg predict`): each task plugin's own
``Task.predict`` (VQA answers, classes, best-matching captions, generated captions)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .errors import ConfigError
from .plugins import PluginHost


def predict_images(
    run: str | Path,
    images: Sequence[str | Path],
    *,
    texts: Sequence[str] = (),
    top_k: int = 5,
    checkpoint: str = "best",
    device: str = "auto",
    runs_dir: str | Path = "runs",
    host: PluginHost | None = None,
) -> list[dict[str, Any]]:
    """``[{"image": path, "predictions": [{..., "score": float}, ...]}]``, one per image, in order,
    each list best first (at most ``top_k``). ``texts``: the question or caption read with each
    image (one for all, or one per image), or retrieval's candidate captions.

    Raises ConfigError for ``top_k`` < 1, a bad checkpoint or texts that do not fit the task, and
    DataError for an image that cannot be read.
    """
    import torch

    from .history import load_run, rebuild_run, weights_for
    from .images import read_image_files
    from .train import pick_device

    if top_k < 1:
        raise ConfigError(f"--top-k must be at least 1, got {top_k}")
    run_path = load_run(run, runs_dir).path
    weights, _ = weights_for(run_path, checkpoint)
    loaded = read_image_files(images)
    p = rebuild_run(run_path, weights, host)
    model = p.model.to(pick_device(device)).eval()
    with torch.inference_mode():
        results = p.task.predict(model, model.encoder.pixel_inputs(loaded), list(texts), top_k)
    return [{"image": str(path), "predictions": preds} for path, preds in zip(images, results, strict=True)]





def vqa_results(
    run: str | Path, split: str = "val", *, checkpoint: str = "best", device: str = "auto", runs_dir: str | Path = "runs",
    batch_size: int = 32, host: PluginHost | None = None,
) -> list[dict[str, Any]]:
    """The run's answer to every question of ``split`` in the official VQA results format,
    ``[{"question_id": int, "answer": str}]`` (the sample's ``question_id``, else its index).

    Raises ConfigError for a run whose task does not answer questions.
    """
    import torch

    from .history import load_run, rebuild_run, weights_for
    from .train import pick_device

    run_path = load_run(run, runs_dir).path
    p = rebuild_run(run_path, weights_for(run_path, checkpoint)[0], host)
    if p.task.target != "answer":
        raise ConfigError(f"run {run_path.name} trained task '{p.task.name}', which answers no questions; --results needs a vqa run")
    samples = p.val_split if split == "val" else p.train_split
    model = p.model.to(pick_device(device)).eval()
    results = []
    with torch.inference_mode():
        for start in range(0, len(samples), batch_size):
            chunk = samples[start : start + batch_size]
            answers = p.task.predict(model, model.encoder.pixel_inputs([s.image for s in chunk]), [s.question for s in chunk], 1)
            results += [
                {"question_id": s.question_id if s.question_id is not None else start + i, "answer": a[0]["answer"]}
                for i, (s, a) in enumerate(zip(chunk, answers, strict=True))
            ]
    return results
__all__ = ["predict_images", "vqa_results"]
