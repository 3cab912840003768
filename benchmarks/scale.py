"""Retrieval evaluation at scale: the time to evaluate N validation pairs with a pairwise fusion
(gated), scoring every pair in memory-bounded blocks against a shortlist of K candidates per
query rescored by the fusion (task.shortlist, as ALBEF and BLIP evaluate), at N = 1k, 4k, 16k;
and the pre-training check of unusable images at 1k and 100k files, full decode against headers
only (benchmarks/scale_check.py, which also runs alone).

Features are random tensors (the width and token counts of the model's features after
projection) fed to the real GatedFusion and the real RetrievalEvaluation, so the figures are
evaluation alone, without the encoder. Where the fusion's pairs would take longer than
--budget seconds, the time is the fusion's measured cost per pair (a block of image rows
against every caption) times the pairs, plus for the shortlist its measured ranking (cosine,
top K), and the JSON says "extrapolated" beside the figure.

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
from scale_check import check_figures
from mmreg.components import Encoded, Modality
from mmreg.metrics import RetrievalEvaluation, rows_per_block, shortlist_ranks
from mmreg_plugins.fusions.gated import GatedFusion


def own_args(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 4000, 16000], help="validation pairs N (default 1000 4000 16000)")
    ap.add_argument("--shortlist", type=int, default=128, help="K candidates per query (default 128, BLIP's k_test for COCO is 256)")
    ap.add_argument("--dim", type=int, default=64, help="shared width, model.dim (default 64)")
    ap.add_argument("--heads", type=int, default=4, help="attention heads of the gated fusion (default 4)")
    ap.add_argument("--image-tokens", type=int, default=17, help="image tokens per image (default 17: a 64-px ViT/16 with [CLS])")
    ap.add_argument("--text-tokens", type=int, default=16, help="tokens per caption (default 16)")
    ap.add_argument("--budget", type=float, default=30.0, help="seconds the fusion may take in one measured evaluation; beyond: extrapolated (default 30)")
    ap.add_argument("--probe-rows", type=int, default=4, help="image rows scored against every caption to measure the cost of a pair (default 4)")
    ap.add_argument("--memory-mb", type=int, default=512, help="eval.score_memory_mb (default 512)")
    ap.add_argument("--check-sizes", type=int, nargs="*", default=[1000, 100000], help="files for the pre-training check, full decode vs headers (default 1000 100000; none: skip)")
    ap.add_argument("--check-side", type=int, default=32, help="side of the synthetic check images in pixels (default 32)")


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
    evaluation = RetrievalEvaluation(model, shortlist=shortlist, memory_mb=memory_mb)  # type: ignore[arg-type]
    sync(device)
    start = time.perf_counter()
    for batch in batches:
        evaluation.update(model, batch, {})  # type: ignore[arg-type]
    evaluation.compute()
    sync(device)
    return time.perf_counter() - start


@torch.inference_mode()
def seconds_per_pair(fusion: GatedFusion, batches: list[Encoded], rows: int, device: torch.device) -> float:
    """The fusion's cost of one pair: the first ``rows`` images scored against every caption, as one
    block of the full scoring does (``shortlist_ranks`` rescores pairs with the same ``fuse``)."""
    image, text = Modality.cat([b.image for b in batches]), Modality.cat([b.text for b in batches])
    sync(device)
    start = time.perf_counter()
    fusion.score(image.index(slice(0, rows)), text)
    sync(device)
    return (time.perf_counter() - start) / (rows * len(text))


@torch.inference_mode()
def ranking_seconds(batches: list[Encoded], k: int, memory_mb: int, device: torch.device) -> float:
    """The shortlist's work without the fusion: cosine of every image with every caption, top K
    per query, ranks (the rescoring replaced by zeros)."""
    image, text = Modality.cat([b.image for b in batches]), Modality.cat([b.text for b in batches])
    pooled = (torch.cat([b.pooled[0] for b in batches]), torch.cat([b.pooled[1] for b in batches]))  # type: ignore[index]

    def zeros(image: Modality, text: Modality, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
        return torch.zeros(len(rows), device=device)

    sync(device)
    start = time.perf_counter()
    shortlist_ranks(zeros, pooled, image, text, torch.arange(len(text)), k, rows_per_block(len(text), memory_mb))
    sync(device)
    return time.perf_counter() - start


def evaluation_figures(args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    """Per N: the whole evaluation measured where the fusion's pairs fit in --budget seconds, else
    the fusion's measured cost per pair times the pairs (plus, for the shortlist, its measured ranking)."""
    torch.manual_seed(args.seed)
    fusion = GatedFusion(dim=args.dim, heads=args.heads, layers=1, dropout=0.0, ffn_mult=4).to(device).eval()
    out: dict[str, Any] = {}
    for n in args.sizes:
        batches = features(n, args, device)
        k = min(args.shortlist, n)
        per_pair = seconds_per_pair(fusion, batches, max(1, min(n, args.probe_rows)), device)
        full_pairs, short_pairs = n * n, 2 * n * k
        if per_pair * full_pairs <= args.budget:
            full, full_how = evaluate(fusion, batches, None, args.memory_mb, device), "measured"
        else:
            full, full_how = per_pair * full_pairs, "extrapolated: the fusion's measured seconds per pair x N^2 pairs"
        if per_pair * short_pairs <= args.budget:
            short, short_how = evaluate(fusion, batches, args.shortlist, args.memory_mb, device), "measured"
        else:
            short = ranking_seconds(batches, k, args.memory_mb, device) + per_pair * short_pairs
            short_how = "ranking measured, rescoring extrapolated: seconds per pair x 2NK pairs"
        out[str(n)] = {
            "full_seconds": round(full, 3),
            "full": full_how,
            "full_pairs": full_pairs,
            "shortlist_seconds": round(short, 3),
            "shortlist": short_how,
            "shortlist_pairs": short_pairs,
            "fusion_pairs_per_second": round(1 / per_pair),
            "speedup": round(full / short, 2),
        }
        log(f"N={n}: every pair {full:.1f}s ({full_how}), shortlist K={k} {short:.1f}s ({short_how})")
    sizes = [str(n) for n in args.sizes]
    if len(sizes) > 1:  # growth per step of N: (ratio of N)^2 for every pair, about the ratio of N for the shortlist
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
            "fusion": f"gated (1 layer, {args.heads} heads)",
            "dim": args.dim,
            "image_tokens": args.image_tokens,
            "text_tokens": args.text_tokens,
            "shortlist": args.shortlist,
            "device": str(device) + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""),
            "sizes": evaluation_figures(args, device),
        },
        # the pre-training check of unusable images (benchmarks/scale_check.py)
        "check": check_figures(args.check_sizes, args.check_side, 3, args.seed) if args.check_sizes else None,
        "environment": environment(),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
