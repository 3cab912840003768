"""Retrieval evaluation at scale: the time to evaluate N validation pairs with a pairwise fusion
(gated), scoring every pair in memory-bounded blocks against a shortlist of K candidates per
query rescored by the fusion (eval.shortlist, as ALBEF and BLIP evaluate), at N = 1k, 4k, 16k.

Features are random tensors (the width and token counts of the model's features after
projection) fed to the real GatedFusion and the real RetrievalEvaluation, so the figures are
evaluation alone, without the encoder. Scoring every pair grows as N^2; where that would take
longer than --budget seconds, only the first image rows are scored (every row costs the same:
N pairs) and the time is extrapolated linearly in rows, and the JSON says so ("extrapolated").

    python benchmarks/scale.py                       # CPU, 1k/4k/16k, shortlist 128
    python benchmarks/scale.py --device cuda --budget 600
"""

from __future__ import annotations

import argparse
import json
import time
from types import SimpleNamespace
from typing import Any

import torch

from common import environment, log, parse_args, sync
from mmreg.components import Encoded, Modality
from mmreg.metrics import RetrievalEvaluation
from mmreg_plugins.fusions.gated import GatedFusion


def own_args(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 4000, 16000], help="validation pairs N (default 1000 4000 16000)")
    ap.add_argument("--shortlist", type=int, default=128, help="K candidates per query (default 128, BLIP's k_test for COCO is 256)")
    ap.add_argument("--dim", type=int, default=64, help="shared width, model.dim (default 64)")
    ap.add_argument("--image-tokens", type=int, default=17, help="image tokens per image (default 17: a 64-px ViT/16 with [CLS])")
    ap.add_argument("--text-tokens", type=int, default=16, help="tokens per caption (default 16)")
    ap.add_argument("--budget", type=float, default=20.0, help="seconds one full scoring may take before it is extrapolated (default 20)")
    ap.add_argument("--memory-mb", type=int, default=512, help="eval.score_memory_mb (default 512)")


def features(n: int, args: argparse.Namespace, device: torch.device) -> list[Encoded]:
    """N random (image tokens, caption tokens) pairs, in batches of 256 as the validation loader gives them."""
    g = torch.Generator().manual_seed(args.seed)
    out = []
    for s in range(0, n, 256):
        b = min(256, n - s)
        image = torch.randn(b, args.image_tokens, args.dim, generator=g).to(device)
        text = torch.randn(b, args.text_tokens, args.dim, generator=g).to(device)
        pooled = (torch.randn(b, args.dim, generator=g).to(device), torch.randn(b, args.dim, generator=g).to(device))
        out.append(Encoded(Modality(tokens=image), Modality(tokens=text, mask=torch.ones(b, args.text_tokens, dtype=torch.bool, device=device)), pooled=pooled))
    return out


@torch.inference_mode()
def evaluate(fusion: GatedFusion, batches: list[Encoded], shortlist: int | None, memory_mb: int, device: torch.device) -> float:
    """Seconds for RetrievalEvaluation over ``batches`` (shared_space: the shortlist ranks by ``Encoded.pooled``)."""
    model = SimpleNamespace(fusion=fusion, encoder=SimpleNamespace(shared_space=True))
    evaluation = RetrievalEvaluation(model, SimpleNamespace(shortlist=shortlist, score_memory_mb=memory_mb))  # type: ignore[arg-type]
    sync(device)
    start = time.perf_counter()
    for batch in batches:
        evaluation.update(model, batch, {})  # type: ignore[arg-type]
    evaluation.compute()
    sync(device)
    return time.perf_counter() - start


@torch.inference_mode()
def full_rows_seconds(fusion: GatedFusion, batches: list[Encoded], rows: int, device: torch.device) -> float:
    """Seconds to score the first ``rows`` images against every caption (what one block of the full scoring does)."""
    image, text = Modality.cat([b.image for b in batches]), Modality.cat([b.text for b in batches])
    sync(device)
    start = time.perf_counter()
    fusion.score(image.index(slice(0, rows)), text)
    sync(device)
    return time.perf_counter() - start


def evaluation_figures(args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    torch.manual_seed(args.seed)
    fusion = GatedFusion(dim=args.dim, heads=4, layers=1, dropout=0.0, ffn_mult=4).to(device).eval()
    out: dict[str, Any] = {}
    for n in args.sizes:
        batches = features(n, args, device)
        probe_rows = max(1, min(n, 8))
        per_row = full_rows_seconds(fusion, batches, probe_rows, device) / probe_rows
        if per_row * n <= args.budget:
            full, how = evaluate(fusion, batches, None, args.memory_mb, device), "measured"
        else:
            rows = max(1, min(n, int(args.budget / per_row)))
            full, how = full_rows_seconds(fusion, batches, rows, device) * n / rows, f"extrapolated from {rows} of {n} image rows"
        short = evaluate(fusion, batches, args.shortlist, args.memory_mb, device)
        out[str(n)] = {
            "full_seconds": round(full, 3),
            "full": how,
            "full_pairs": n * n,
            "shortlist_seconds": round(short, 3),
            "shortlist_pairs": 2 * n * min(args.shortlist, n),
            "speedup": round(full / short, 2),
        }
        log(f"N={n}: every pair {full:.2f}s ({how}), shortlist K={args.shortlist} {short:.2f}s")
    sizes = [str(n) for n in args.sizes]
    if len(sizes) > 1:  # growth per 4x N: ~16x for N^2, ~4x for the shortlist's rescoring
        out["growth"] = {
            f"{a}->{b}": {kind: round(out[b][f"{kind}_seconds"] / out[a][f"{kind}_seconds"], 2) for kind in ("full", "shortlist")}
            for a, b in zip(sizes, sizes[1:], strict=False)
        }
    return out


def main() -> None:
    args = parse_args(__doc__.splitlines()[0], own_args, "size")
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else args.device if args.device != "auto" else "cpu")
    result = {
        "evaluation": {
            "fusion": "gated (1 layer, 4 heads)",
            "dim": args.dim,
            "image_tokens": args.image_tokens,
            "text_tokens": args.text_tokens,
            "shortlist": args.shortlist,
            "device": str(device) + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""),
            "sizes": evaluation_figures(args, device),
        },
        "environment": environment(),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
