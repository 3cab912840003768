"""Captioning on shapes after a fixed step budget: BLEU-4 and CIDEr-D of the trained decoder
against the trivial baseline of always emitting the most common training caption.

    python benchmarks/captioning.py            # --steps, --train-size, --val-size, --beams, --device
"""

from __future__ import annotations

import argparse
import json
import tempfile
from collections import Counter
from typing import Any

import torch

import mmreg
from mmreg.plugins import load_plugins


def most_common_caption(dataset: dict[str, Any], seed: int) -> dict[str, Any]:
    """The baseline of always emitting the most common training caption, scored by the same
    pycocoevalcap scorers on the same validation references: ``{"caption", "bleu4", "cider"}``."""
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider

    data = load_plugins().registry("datasets").build(dataset["name"], {k: v for k, v in dataset.items() if k != "name"}, seed=seed)
    common = Counter(data.texts("train")).most_common(1)[0][0]
    references = {i: [c] for i, c in enumerate(data.texts("val"))}
    constant = {i: [common] for i in references}
    bleu, _ = Bleu(4).compute_score(references, constant, verbose=0)
    cider, _ = Cider().compute_score(references, constant)
    return {"caption": common, "bleu4": float(bleu[3]), "cider": float(cider)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--train-size", type=int, default=2048)
    ap.add_argument("--val-size", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--beams", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    dataset = {"name": "shapes", "train_size": args.train_size, "val_size": args.val_size}
    with tempfile.TemporaryDirectory() as runs:
        summary = mmreg.run(
            {
                "seed": args.seed,
                "runs_dir": runs,
                "task": {"name": "captioning", "num_beams": args.beams, "max_new_tokens": 12},
                "encoder": {"name": "clip", "hidden_size": 64, "projection_dim": 64},
                "fusion": {"name": "none"},
                "loss": {"lm": {}},
                "model": {"dim": 64},
                "dataset": dataset,
                "train": {"max_steps": args.steps, "batch_size": args.batch_size, "eval_batch_size": 64, "lr": 1e-3, "device": args.device},
            },
            progress=False,
        )
    baseline = most_common_caption(dataset, args.seed)
    print(
        json.dumps(
            {
                "steps": args.steps,
                "train_size": args.train_size,
                "val_size": args.val_size,
                "beams": args.beams,
                "train_seconds": summary["train_seconds"],
                "decoder": {"bleu4": summary["metrics"]["bleu4"], "cider": summary["metrics"]["cider"]},
                "most_common_caption": baseline,
            }
        )
    )


if __name__ == "__main__":
    main()
