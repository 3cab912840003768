"""Throughput and model FLOPs utilisation (MFU) of mmreg training a CLIP ViT-B/32-sized model in bf16,
with and without torch.compile, against transformers' Trainer on the same model and batch.

With a CUDA GPU (``--device auto`` finds one): the clip encoder at ViT-B/32's vision shape (224 px,
32 px patches, width 768, 12 layers, 12 heads, projection 512; the text tower shares the width, so
it is wider than CLIP's 512), random init, ``--fusion none --loss clip``, batch 256, bf16 autocast
and TF32 as `mmreg run` sets them, mmreg's fused AdamW against the Trainer's ``adamw_torch_fused``.
Without one: a small CPU version (the tiny preset, 32 px, fp32, batch 32), and the JSON says so
(``"mode": "cpu-small"``, ``"mfu"`` null: a CPU has no peak in the table).

Both sides are benchmarks/trainer.py's (``side_by_side``, ``run_mmreg``, ``run_hf``): the same
CLIPModel, loss, pre-processed examples, stacking and timing (batch size / the median step, after
``--warmup`` steps), repetitions rotating the order of the four sides. FLOPs per step are counted
once with ``torch.utils.flop_counter.FlopCounterMode`` over one forward and backward of mmreg's
model on one batch: matmuls, convolutions and attention by the counter's rules (2 per
multiply-add); elementwise work is not counted, as MFU is defined (PaLM, Chowdhery et al. 2022,
appendix B). MFU = FLOPs per step x steps/s / the device's peak dense bf16 FLOPs from ``PEAK_BF16``
(vendor datasheets, without sparsity; ``--peak-tflops`` for a device not in it). The Trainer trains
the same CLIPModel with the same loss, so its FLOPs per step are the same. Prints progress to
stderr and ONE JSON object as the last line of stdout.

    python benchmarks/gpu.py                     # a GPU if there is one, else the small CPU version
    python benchmarks/gpu.py --device cuda --steps 60 --warmup 20 --repetitions 3   # batch 256 unless --batch-size
"""

from __future__ import annotations

import argparse
import atexit
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

import common
import trainer as side

# Dense (no sparsity) bf16 tensor-core peaks, FLOP/s, by a substring of torch.cuda.get_device_name; first match wins.
PEAK_BF16 = (
    ("H200", 989e12),
    ("H100 PCIe", 756e12),
    ("H100", 989e12),  # SXM
    ("A100", 312e12),
    ("L40S", 362e12),
    ("L4", 121e12),
    ("A10", 125e12),
)
VIT_B32 = {"image_size": 224, "patch_size": 32, "hidden_size": 768, "layers": 12, "heads": 12, "projection_dim": 512, "max_length": 77}
SIDES = ("mmreg", "mmreg+compile", "trainer", "trainer+compile")


def parse_args() -> argparse.Namespace:
    def own(ap: argparse.ArgumentParser) -> None:
        ap.add_argument(
            "--examples", type=int, default=None,
            help="pre-processed examples in memory (default 8 batches on a GPU, 1024 on the CPU, as trainer.py): "
            "each side starts an epoch when they run out, which costs the Trainer more",
        )
        ap.add_argument("--lr", type=float, default=1e-4)
        ap.add_argument("--peak-tflops", type=float, default=None, help="the device's dense bf16 peak, when it is not in PEAK_BF16")

    args = common.parse_args(__doc__.split("\n\n")[0], own, "side")
    args.weight_decay, args.schedule, args.hf_optim = 0.0, "linear", None
    return args


def peak_flops(device: torch.device, override_tflops: float | None) -> tuple[float | None, str]:
    """(peak dense bf16 FLOP/s, device name); None on a device the table does not know."""
    if device.type != "cuda":
        return None, "cpu"
    name = torch.cuda.get_device_name(device)
    if override_tflops:
        return override_tflops * 1e12, name
    return next((peak for key, peak in PEAK_BF16 if key in name), None), name


def flops_per_step(model: torch.nn.Module, batch: dict[str, torch.Tensor], device: torch.device) -> int:
    """FLOPs of one forward and backward of ``model`` on ``batch`` (torch.utils.flop_counter's count)."""
    from torch.utils.flop_counter import FlopCounterMode

    model = model.to(device).train()
    batch = {k: v.to(device) for k, v in batch.items()}
    with FlopCounterMode(display=False) as counter:
        loss, _ = model(batch)
        loss.backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops()


def main() -> None:
    args = parse_args()
    from mmreg.precision import cuda_capability, tf32_applies, tf32_matmuls
    from mmreg.train import pick_device

    device = pick_device("auto" if args.device == "cpu" else args.device)
    gpu = device.type == "cuda"
    if gpu and not any(a.startswith("--batch-size") for a in sys.argv):
        args.batch_size = 256  # the GPU version's own default; common's 32 is the CPU scripts'
    if not gpu:  # the small CPU version
        device = torch.device("cpu")
        args.batch_size = min(args.batch_size, 32)
    args.examples = max(args.examples or (8 * args.batch_size if gpu else 1024), args.batch_size)
    args.precision = "bf16" if gpu else "fp32"
    encoder = VIT_B32 if gpu else {"preset": "tiny"}
    tmp = Path(tempfile.mkdtemp(prefix="mmreg-bench-gpu-"))
    atexit.register(shutil.rmtree, tmp, True)
    started = time.perf_counter()
    exp, base, clip, examples = side.side_by_side(args, device, tmp, encoder)
    batch = side.stack([examples[i] for i in range(args.batch_size)])
    flops = flops_per_step(base, batch, device)
    peak, device_name = peak_flops(device, args.peak_tflops)
    parameters = sum(p.numel() for p in clip.parameters())
    common.log(f"prepared {len(examples)} examples in {time.perf_counter() - started:.1f}s; {parameters} parameters; "
               f"{flops / 1e9:.1f} GFLOPs per step of {args.batch_size}; device {device_name}, peak {peak}")

    def one(name: str, run_args: argparse.Namespace, rep: str) -> float:
        run_args = argparse.Namespace(**{**vars(run_args), "compile": name.endswith("+compile")})
        if name.startswith("mmreg"):
            return side.run_mmreg(base, examples, exp, run_args, tmp / f"{name}-{rep}")[0][0]
        return side.run_hf(clip, examples, run_args, device, tmp / f"{name}-{rep}")[0][0]

    rates: dict[str, list[float]] = {name: [] for name in SIDES}
    with tf32_matmuls(tf32_applies(device.type, cuda_capability(device), True)):  # as `mmreg run` sets it, for both sides
        # One short untimed run of each first: cold start and torch.compile's first compilation
        prime = argparse.Namespace(**{**vars(args), "steps": min(args.steps, args.warmup + 5)})
        for name in SIDES:
            began = time.perf_counter()
            one(name, prime, "prime")
            common.log(f"{name}: first run of {prime.steps} steps took {time.perf_counter() - began:.1f}s")
        for rep in range(args.repetitions):
            order = SIDES[rep % len(SIDES) :] + SIDES[: rep % len(SIDES)]  # rotate which side goes first
            for name in order:
                rates[name].append(one(name, args, str(rep)))
            common.log(f"rep {rep + 1}/{args.repetitions}: " + ", ".join(f"{n} {rates[n][-1]:.1f}" for n in SIDES) + " samples/s")

    def summary(name: str) -> dict[str, float | None]:
        rate = statistics.median(rates[name])
        mfu = None if peak is None else flops * rate / args.batch_size / peak
        return {"samples_per_s": round(rate, 2), "mfu": None if mfu is None else round(mfu, 4), "reps": [round(r, 2) for r in rates[name]]}

    results = {name: summary(name) for name in SIDES}
    m, mc, t, tc = (results[n]["samples_per_s"] for n in SIDES)
    print(json.dumps({
        "benchmark": "gpu",
        "mode": "gpu" if gpu else "cpu-small",
        "note": None if gpu else "no CUDA GPU here: the tiny CLIP in fp32 on the CPU, not the ViT-B/32 GPU figures",
        "ratio": round(m / t, 4),
        "ratio_compiled": round(mc / tc, 4),
        "compile_speedup": round(mc / m, 4),
        "target": "ratio >= 1.0; mfu >= 0.4 on a GPU (open_clip's published ViT-B/32 throughput is about 0.10-0.16)",
        **results,
        "flops_per_step": flops,
        "flops_counted_by": "torch.utils.flop_counter.FlopCounterMode, one forward + backward of mmreg's model",
        "peak_bf16_flops": peak,
        "statistic": "median over repetitions of batch_size / each one's median step",
        "encoder": encoder,
        "parameters": parameters,
        "batch_size": args.batch_size,
        "precision": args.precision,
        "steps": args.steps,
        "warmup": args.warmup,
        "repetitions": args.repetitions,
        "device": device_name,
        **common.environment(),
    }))


if __name__ == "__main__":
    main()
