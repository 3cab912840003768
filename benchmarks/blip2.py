"""The tiny BLIP-2 (OPT and T5) against the tiny BLIP on shapes captioning after the same step
budget: BLEU-4, CIDEr-D, trainable and total parameters and mean step time of each, with the
trivial baseline of always emitting the most common training caption.

Every run has the same seed, data, batch size, lr, steps and task (`max_new_tokens` 12, prompt
"a picture of"); evaluation runs once, at the end. BLIP-2 keeps its defaults: only the Q-Former,
the query tokens and the language projection train (the ViT and the language model are frozen,
and random: tiny preset, offline; `blip2-opt-lora` adds LoRA on the language model; `blip2-opt-lm`'s
language model was first trained on the training captions alone, text only, `--lm-steps` steps, then
frozen, as BLIP-2 assumes a language model that knows the language); BLIP trains all its weights. The step time is the mean interval
between consecutive optimizer steps (balance.py's `StepClock`). Prints progress to stderr and ONE
JSON object as the last line of stdout.

    python benchmarks/blip2.py                 # --steps, --train-size, --val-size, --batch-size, --lr, --beams, --device, --threads, --seed, --models, --lm-steps
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import tempfile
from pathlib import Path
from typing import Any

import torch
from balance import StepClock
from captioning import most_common_caption
from common import environment, log

import mmreg
from mmreg.plugins import load_plugins

PROMPT = "a picture of"

MODELS: dict[str, dict[str, Any]] = {
    "blip2-opt": {
        "encoder": {"name": "blip2", "hidden_size": 64, "language_model": "opt"},
        "loss": {"lm": {"label_smoothing": 0.0}},
    },
    "blip2-t5": {
        "encoder": {"name": "blip2", "hidden_size": 64, "language_model": "t5"},
        "loss": {"lm": {"label_smoothing": 0.0}},
    },
    "blip2-opt-lora": {  # the same, with LoRA adapters on the language model's attention (r 16) training too
        "encoder": {"name": "blip2", "hidden_size": 64, "language_model": "opt"},
        "loss": {"lm": {"label_smoothing": 0.0}},
        "peft": {"name": "lora", "vision": "full", "text": {"r": 16, "lora_alpha": 32}, "bridge": "full"},
    },
    "blip2-opt-lm": {  # BLIP-2's premise offline: the frozen OPT was first trained as a language model on the captions alone
        "encoder": {"name": "blip2", "pretrained": "(pretrained below)"},
        "loss": {"lm": {"label_smoothing": 0.0}},
    },
    "blip": {"encoder": {"name": "blip", "hidden_size": 64}, "loss": {"lm": {}}, "model": {"dim": 64}},
}


def pretrain_language_model(dataset: dict[str, Any], seed: int, steps: int, batch_size: int, lr: float, directory: Path) -> float:
    """Save into ``directory`` a tiny BLIP-2 (OPT, hidden 64) whose language model was first trained on the
    training captions alone, text only, as it later reads them ("a picture of" + caption + end), for ``steps``
    steps: the frozen language model that already knows the language BLIP-2 assumes, which no offline
    preset has. Its Q-Former, queries and ViT stay as drawn. Returns the language model's last loss."""
    host = load_plugins()
    data = host.registry("datasets").build(dataset["name"], {k: v for k, v in dataset.items() if k != "name"}, seed=seed)
    captions = data.texts("train")
    torch.manual_seed(seed)
    encoder = host.registry("encoders").build("blip2", {"hidden_size": 64, "language_model": "opt"}, captions=captions)
    lm, tokenizer = encoder.language_model.train().requires_grad_(True), encoder.tokenizer  # the encoder froze it
    optimizer = torch.optim.AdamW(lm.parameters(), lr=lr)
    draw = random.Random(seed)
    loss = torch.tensor(float("nan"))
    for _ in range(steps):
        texts = [f"{PROMPT} {c}" for c in draw.sample(captions, batch_size)]
        rows = [ids + [tokenizer.eos_token_id] if ids[-1] != tokenizer.eos_token_id else ids for ids in tokenizer(texts)["input_ids"]]
        width = max(map(len, rows))
        ids = torch.tensor([r + [tokenizer.pad_token_id] * (width - len(r)) for r in rows])
        mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows])
        loss = lm(input_ids=ids, attention_mask=mask, labels=ids.masked_fill(mask == 0, -100)).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    encoder.model.save_pretrained(directory)
    encoder.save_preprocessing(directory)
    return loss.item()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--train-size", type=int, default=2048)
    ap.add_argument("--val-size", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--beams", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--models", default=",".join(MODELS), help=f"comma list of {', '.join(MODELS)} (default all)")
    ap.add_argument("--lm-steps", type=int, default=1000, help="steps training blip2-opt-lm's language model on the captions first (default 1000)")
    args = ap.parse_args()
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = [m for m in models if m not in MODELS]
    if unknown or not models:
        ap.error(f"--models: unknown {unknown}; choose from {', '.join(MODELS)}")
    if args.threads:
        torch.set_num_threads(args.threads)
    dataset = {"name": "shapes", "train_size": args.train_size, "val_size": args.val_size}
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as runs:
        for name in models:
            log(f"{name} ...")
            setup = MODELS[name]
            if name == "blip2-opt-lm":
                checkpoint = Path(runs) / "lm-pretrained"
                lm_loss = pretrain_language_model(dataset, args.seed, args.lm_steps, args.batch_size, args.lr, checkpoint)
                log(f"  language model trained on the captions alone: loss {lm_loss:.3f} after {args.lm_steps} steps")
                setup = {**setup, "encoder": {"name": "blip2", "pretrained": str(checkpoint)}}
            clock = StepClock()
            summary = mmreg.run(
                {
                    **setup,
                    "seed": args.seed,
                    "runs_dir": runs,
                    "task": {"name": "captioning", "num_beams": args.beams, "max_new_tokens": 12, "prompt": PROMPT},
                    "fusion": {"name": "none"},
                    "dataset": dataset,
                    "train": {
                        "max_steps": args.steps, "batch_size": args.batch_size, "eval_batch_size": 64, "eval_every": args.steps,
                        "lr": args.lr, "device": args.device,
                    },
                },
                progress=False,
                callbacks=[clock],
            )  # fmt: skip
            step_ms = 1000 * statistics.fmean(clock.seconds())
            results[name] = {
                "bleu4": round(summary["metrics"]["bleu4"], 4),
                "cider": round(summary["metrics"]["cider"], 4),
                "trainable_parameters": summary["trainable_parameters"],
                "parameters": summary["parameters"],
                "step_ms": round(step_ms, 2),
                "train_seconds": round(summary["train_seconds"], 2),
                **({"lm_pretraining_loss": round(lm_loss, 4), "lm_steps": args.lm_steps} if name == "blip2-opt-lm" else {}),
            }
            log(f"  {results[name]}")
    ratios = {
        f"{name}_over_blip": round(results[name]["step_ms"] / results["blip"]["step_ms"], 3)
        for name in ("blip2-opt", "blip2-t5", "blip2-opt-lora", "blip2-opt-lm")
        if name in results and "blip" in results
    }
    print(
        json.dumps(
            {
                "steps": args.steps,
                "train_size": args.train_size,
                "val_size": args.val_size,
                "batch_size": args.batch_size,
                "lr": args.lr,
                "beams": args.beams,
                "seed": args.seed,
                "models": results,
                "step_time_ratio": ratios,
                "most_common_caption": most_common_caption(dataset, args.seed),
                "environment": environment(),
            }
        )
    )


if __name__ == "__main__":
    main()
