"""VQA on shapes after the same step budget: the official VQA accuracy of `vilt` (tiny preset)
and of `clip` + `gated`, both trained with ViLT's BCE on soft scores, against the baseline that
answers each question type (its first two words, as VQA's question types) with its most
common training answer.

    python benchmarks/vqa.py            # --steps, --train-size, --val-size, --device, --threads
"""

from __future__ import annotations

import argparse
import json
import tempfile
from collections import Counter

import torch

import mmreg
from mmreg.plugins import load_plugins
from mmreg_plugins.tasks._vqa_accuracy import normalise_answer, vqa_accuracy


def question_type(question: str) -> str:
    return " ".join(question.split()[:2])


def accuracy(prediction: str, answers: tuple[str, ...]) -> float:
    """As the vqa task scores: official accuracy over several answers, exact match over one."""
    humans = [normalise_answer(a) for a in answers]
    return vqa_accuracy(prediction, humans) if len(humans) > 1 else float(normalise_answer(prediction) == humans[0])


def baseline(dataset) -> float:
    """Each question type answered with its most common (normalised) training answer."""
    counts: dict[str, Counter[str]] = {}
    for sample in dataset.split("train"):
        counts.setdefault(question_type(sample.question), Counter()).update(normalise_answer(a) for a in sample.human_answers())
    val = dataset.split("val")
    best = {t: c.most_common(1)[0][0] for t, c in counts.items()}
    return sum(accuracy(best.get(question_type(s.question), ""), s.human_answers()) for s in val) / len(val)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--train-size", type=int, default=2048)
    ap.add_argument("--val-size", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    dataset = {"name": "shapes", "train_size": args.train_size, "val_size": args.val_size}
    models = {
        "vilt-tiny": {"encoder": {"name": "vilt", "hidden_size": 64}, "fusion": {"name": "none"}},
        "clip-gated": {"encoder": {"name": "clip", "hidden_size": 64, "projection_dim": 64}, "fusion": {"name": "gated"}, "model": {"dim": 64}},
    }
    out = {"steps": args.steps, "train_size": args.train_size, "val_size": args.val_size, "metric": "vqa_accuracy"}
    with tempfile.TemporaryDirectory() as runs:
        for name, parts in models.items():
            summary = mmreg.run(
                {
                    "seed": args.seed, "runs_dir": runs, "task": "vqa", "loss": {"bce": {}}, "dataset": dataset,
                    "train": {"max_steps": args.steps, "batch_size": args.batch_size, "lr": 1e-3, "eval_batch_size": 64, "device": args.device}, **parts,
                },  # fmt: skip
                progress=False,
            )
            out[name] = summary["best"]["value"] if summary.get("best") else summary["metrics"]["vqa_accuracy"]
    out["baseline-most-common-per-question-type"] = baseline(load_plugins().registry("datasets").build("shapes", {k: v for k, v in dataset.items() if k != "name"}, seed=args.seed))
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
