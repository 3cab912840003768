"""Retrieval evaluation: several captions per image (the Flickr30k/COCO protocol), scoring in
memory-bounded blocks, and the ALBEF-style shortlist, on hand-made scores and a real fusion."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from mmreg.components import Encoded, Modality, Sample
from mmreg.errors import ConfigError
from mmreg.metrics import (
    MISS,
    RetrievalEvaluation,
    blocked_ranks,
    distinct_images,
    image_group,
    image_groups,
    protocol_text,
    recall_at_k,
    recalls,
    retrieval_metrics,
    rows_per_block,
    shortlist_ranks,
)
from mmreg.sampling import EpochBatches, caption_groups
from mmreg_plugins.fusions.concat import ConcatFusion
from mmreg_plugins.fusions.gated import GatedFusion


def test_several_captions_per_image_on_a_hand_checked_matrix():
    # 2 images, 5 captions: captions 0, 1, 2 describe image 0; captions 3, 4 image 1
    scores = torch.tensor(
        [
            [0.1, 0.9, 0.3, 0.5, 0.2],  # image 0: its best caption (1, 0.9) ranks first
            [0.8, 0.0, 0.7, 0.6, 0.1],  # image 1: its best caption (3, 0.6) is beaten by captions 0 and 2
        ]
    )
    image_of_text = torch.tensor([0, 0, 0, 1, 1])
    m = retrieval_metrics(scores, ks=(1, 5), image_of_text=image_of_text)
    assert m["i2t_recall@1"] == 0.5  # image 0 hits, image 1 misses
    # text->image, per caption: 0: 0.1 < 0.8 miss; 1: hit; 2: 0.3 < 0.7 miss; 3: 0.6 > 0.5 hit; 4: 0.1 < 0.2 miss
    assert m["t2i_recall@1"] == pytest.approx(2 / 5)
    assert m["i2t_recall@5"] == m["t2i_recall@5"] == 1.0
    # one caption per image reduces to the diagonal recall
    square = torch.randn(6, 6)
    assert retrieval_metrics(square, ks=(2,))["i2t_recall@2"] == recall_at_k(square, 2)
    assert retrieval_metrics(square, ks=(2,), image_of_text=torch.arange(6)) == retrieval_metrics(square, ks=(2,))


def test_image_ids_group_rows_and_none_is_its_own_image():
    samples = [Sample(None, "a", image_id="x"), Sample(None, "b"), Sample(None, "c", image_id="x"), Sample(None, "d")]  # type: ignore[arg-type]
    groups = image_groups(samples)["image_group"]
    assert groups[0] == groups[2] == image_group("x") and groups[1] == groups[3] == -1
    rows, image_of_text = distinct_images(groups)
    assert rows.tolist() == [0, 1, 3] and image_of_text.tolist() == [0, 1, 0, 2]
    assert image_groups([Sample(None, "a")]) == {}  # type: ignore[arg-type]  # no ids: batches stay as they were


def gated_features(n_images: int, captions: int, seed: int = 0) -> tuple[GatedFusion, list[Encoded], list[dict[str, torch.Tensor]]]:
    """A real gated fusion and the batches of a split of ``n_images`` images with ``captions`` each."""
    torch.manual_seed(seed)
    fusion = GatedFusion(dim=16, heads=2, layers=1, dropout=0.0, ffn_mult=2).eval()
    images = torch.randn(n_images, 3, 16).repeat_interleave(captions, 0)  # the rows of one image share its features
    texts, mask = torch.randn(n_images * captions, 4, 16), torch.rand(n_images * captions, 4) > 0.2
    mask[:, 0] = True
    groups = torch.arange(n_images).repeat_interleave(captions) * 7 + 1
    batches, features = [], []
    for s in range(0, len(texts), 5):
        features.append(Encoded(Modality(tokens=images[s : s + 5]), Modality(tokens=texts[s : s + 5], mask=mask[s : s + 5])))
        batches.append({"image_group": groups[s : s + 5]})
    return fusion, features, batches


def evaluate(fusion: torch.nn.Module, features: list[Encoded], batches: list[dict], model: object = None, **settings: object) -> tuple[dict[str, float], dict]:
    model = model or SimpleNamespace(fusion=fusion, encoder=SimpleNamespace(shared_space=False))
    evaluation = RetrievalEvaluation(model, **{"shortlist": None, "memory_mb": 512, **settings})  # type: ignore[arg-type]
    for f, b in zip(features, batches, strict=True):
        evaluation.update(model, f, b)  # type: ignore[arg-type]
    return evaluation.compute(), evaluation.report


@torch.inference_mode()
def test_blocked_scoring_equals_the_whole_matrix():
    fusion, features, batches = gated_features(n_images=12, captions=3)
    image = Modality.cat([f.image for f in features]).index(torch.arange(0, 36, 3))
    text = Modality.cat([f.text for f in features])
    whole = retrieval_metrics(fusion.score(image, text), image_of_text=torch.arange(12).repeat_interleave(3))
    assert rows_per_block(36, 1) > 12  # the default budget holds all rows at once; a tiny one, a row at a time
    one_block, report = evaluate(fusion, features, batches)
    row_blocks, _ = evaluate(fusion, features, batches, memory_mb=0.0005)  # 524 bytes: one image row per block
    assert rows_per_block(36, 0.0005) == 1
    assert one_block == pytest.approx(whole) and row_blocks == pytest.approx(whole)
    assert 0 < whole["recall@5"] < 1  # an untrained fusion: neither trivially all hits nor all misses
    assert report == {"images": 12, "texts": 36, "captions_per_image": 3.0, "scoring": "all"}
    assert protocol_text({**report, "fusion": "gated"}) == (
        "12 images x 36 captions, a caption of the image counts as a match; scored all 12 x 36 pairs with gated"
    )


def test_blocks_of_any_size_give_the_ranks_of_the_whole_matrix():
    """More images than the 10 best non-matches kept per caption, blocks that split the images unevenly."""
    torch.manual_seed(2)
    image, text = torch.randn(40, 8), torch.randn(90, 8)
    image_of_text = torch.randint(0, 40, (90,))
    image_of_text[:40] = torch.arange(40)  # every image has a caption
    whole = retrieval_metrics(image @ text.T, image_of_text=image_of_text)

    def score(a: Modality, b: Modality) -> torch.Tensor:
        return a.pooled @ b.pooled.T  # type: ignore[operator]

    for block in (1, 7, 40):
        i2t, t2i = blocked_ranks(score, Modality(image), Modality(text), image_of_text, block, kmax=10)
        assert recalls(i2t, t2i) == whole


@torch.inference_mode()
def test_a_shortlist_as_long_as_the_split_equals_scoring_every_pair():
    torch.manual_seed(1)
    fusion = ConcatFusion(dim=8, hidden=16, layers=1, dropout=0.0, interactions=True).eval()
    image, text = torch.randn(10, 8), torch.randn(20, 8)
    features = [Encoded(Modality(image.repeat_interleave(2, 0)[s : s + 5]), Modality(text[s : s + 5])) for s in range(0, 20, 5)]
    batches = [{"image_group": torch.arange(10).repeat_interleave(2)[s : s + 5]} for s in range(0, 20, 5)]
    full, _ = evaluate(fusion, features, batches)
    listed, report = evaluate(fusion, features, batches, shortlist=20)
    assert listed == pytest.approx(full)
    assert report["scoring"] == "shortlist" and report["shortlist"] == 20 and report["shortlist_by"] == "projected"
    assert protocol_text({**report, "fusion": "concat"}).endswith("shortlist K=20 by pooled cosine, rescored with concat")
    short, _ = evaluate(fusion, features, batches, shortlist=2)
    assert short["recall@10"] <= full["recall@10"]  # a match outside the shortlist is a miss


def test_a_small_shortlist_misses_what_the_cosine_ranks_out():
    # cosine ranks for image 1 text 2 first and its own text 1 last; the fusion would rank text 1 first
    image_vectors = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, 0.1, 1.0]])
    text_vectors = torch.tensor([[1.0, 0.0, 0.0], [-1.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    fused = torch.eye(3) * 10  # the fusion's scores: every match far above every other pair

    def score_pairs(image: object, text: object, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
        return fused[rows, cols]

    def ranks(k: int) -> tuple[list[int], list[int]]:
        i2t, t2i = shortlist_ranks(score_pairs, (image_vectors, text_vectors), None, None, torch.arange(3), k, block=2)  # type: ignore[arg-type]
        return i2t.tolist(), t2i.tolist()

    # K=1, by cosine: image 0 lists text 0 (its own: hit), image 1 text 2 (its own text 1 is left out:
    # a miss, though the fusion ranks it first), image 2 text 2 (hit)
    i2t, t2i = ranks(1)
    assert i2t == [0, MISS, 0]
    # text 0 lists image 0 (hit); text 1 image 2 (cosine 0.07 over its own image 1's 0: miss);
    # text 2 image 1 (cosine 1 over its own image 2's 0.995: miss)
    assert t2i == [0, MISS, MISS]
    assert ranks(3) == ([0, 0, 0], [0, 0, 0])  # every candidate listed: the fusion ranks every match first


def test_a_shortlist_needs_pooled_vectors():
    fusion = GatedFusion(dim=16, heads=2, layers=1, dropout=0.0, ffn_mult=2)
    tokens_only = SimpleNamespace(fusion=fusion, encoder=SimpleNamespace(shared_space=False, single_stream=False))
    with pytest.raises(ConfigError, match="task.shortlist ranks candidates by the cosine of pooled vectors"):
        RetrievalEvaluation(tokens_only, shortlist=8, memory_mb=64)  # type: ignore[arg-type]
    RetrievalEvaluation(tokens_only, shortlist=None, memory_mb=64)  # type: ignore[arg-type]  # every pair: fine
    clip_like = SimpleNamespace(fusion=fusion, encoder=SimpleNamespace(shared_space=True))
    assert RetrievalEvaluation(clip_like, shortlist=8, memory_mb=64).source == "encoder"  # type: ignore[arg-type]


def test_one_caption_per_image_per_epoch_never_repeats_an_image_in_a_batch():
    groups = caption_groups([f"im{i // 3}" for i in range(30)] + [None, None])  # 10 images x 3 captions, 2 own images
    assert groups is not None and max(groups) + 1 == 12
    assert caption_groups(["a", "b", None, None]) is None  # no shared image: plain per-row sampling
    single = EpochBatches(32, 4, seed=3, groups=groups)
    assert len(single) == 3  # 12 images a epoch, in batches of 4
    seen = []
    for epoch in range(4):
        single.set_epoch(epoch)
        batches = list(single)
        for batch in batches:
            assert len({groups[i] for i in batch}) == len(batch)  # each image at most once
        seen.append(sorted(i for b in batches for i in b))
        # two processes of 2: their batches are the single-process batch, split
        ranks = [EpochBatches(32, 2, seed=3, rank=r, world=2, groups=groups) for r in (0, 1)]
        for r in ranks:
            r.set_epoch(epoch)
        assert [a + b for a, b in zip(*ranks, strict=True)] == batches
    assert len({tuple(s) for s in seen}) > 1  # another caption of some image in another epoch
    single.set_epoch(2)
    assert list(single) == list(single)  # the same (seed, epoch), the same batches


def test_a_run_on_three_captions_per_image_reports_the_protocol(tmp_path):
    """A tiny real run (CLIP, gated fusion, shortlist by CLIP's own embeddings) on a files dataset of
    8 + 4 images with 3 captions each: the table states the protocol, summary.json the counts."""
    import json

    from PIL import Image
    from test_cli import cli

    for split, count in (("train", 8), ("val", 4)):
        rows = ["image_path,caption"]
        for i in range(count):
            name = f"{split}{i}.png"
            Image.new("RGB", (16, 16), (30 * i, 200 - 20 * i, 90)).save(tmp_path / name)
            rows += [f"{name},picture {i} seen {how}" for how in ("once", "twice", "again")]
        (tmp_path / f"{split}.csv").write_text("\n".join(rows) + "\n")
    args = ["--dataset", "files", "--set", "dataset.train=train.csv", "--set", "dataset.val=val.csv", "--fusion", "gated",
            "--set", "fusion.layers=1", "--set", "fusion.heads=2", "--set", "encoder.hidden_size=32", "--set", "encoder.projection_dim=32",
            "--set", "model.dim=32", "--batch-size", "4", "--max-steps", "2", "--device", "cpu", "--set", "task.shortlist=5"]  # fmt: skip
    result = cli("run", *args, "--runs-dir", "runs", "--name", "caps", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    table = " ".join(result.stdout.split())
    assert "validation retrieval over 4 images and 12 texts" in table
    assert "data: train 8 images, 24 texts; val 4 images, 12 texts" in " ".join(result.stderr.split())
    summary = json.loads((tmp_path / "runs" / "caps" / "summary.json").read_text())
    assert summary["retrieval"] == {
        "images": 4, "texts": 12, "captions_per_image": 3.0, "scoring": "shortlist", "shortlist": 5, "shortlist_by": "encoder",
        "protocol": "4 images x 12 captions, a caption of the image counts as a match; shortlist K=5 by the encoder's pooled cosine, "
                    "rescored with the fusion",
        "chance@1": 0.25,
    }  # fmt: skip
    assert (summary["val_size"], summary["val_images"], summary["val_texts"]) == (12, 4, 12)
    assert (summary["train_images"], summary["train_texts"]) == (8, 24)
    assert summary["epochs"] == 1.0  # 8 images a epoch in batches of 4: one caption of each image per epoch
