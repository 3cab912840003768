"""Pairwise fusions trained on hard negatives (``itm`` beside a contrastive loss, ALBEF): on every
encoder with separate towers, every pairwise fusion and both tasks that score pairs, every weight
learns; retrieval then ranks on a shortlist of the contrastive space by default, every pair on
request; what cannot work is refused in one line before anything is written; a third party's
scaffolded pairwise fusion trains with it unchanged."""

from __future__ import annotations

import json

import pytest
import torch

from mmreg.api import collate_for, prepare
from mmreg.config import validate
from mmreg.metrics import TRAINED_SHORTLIST, RetrievalEvaluation, retrieval_metrics
from test_cli import cli, one_error_line
from test_combinations import ENCODERS, train_steps
from test_training import TINY, two_processes_against_one
from test_scaffold import generated  # noqa: F401  # the fixture: every kind scaffolded and installed

SMALL = {
    "dataset": {"name": "shapes", "train_size": 16, "val_size": 8, "image_size": 32},
    "model": {"dim": 32},
    "train": {"batch_size": 8},
}
TASKS = {
    "retrieval": {"infonce": {}, "itm": {}},
    "classification": {"ce": {}, "infonce": {}, "itm": {"negatives": 2}},
}


@pytest.mark.parametrize("task", list(TASKS))
@pytest.mark.parametrize("fusion", ["concat", "cross-attention", "gated"])
@pytest.mark.parametrize("encoder", list(ENCODERS))
def test_every_pairwise_fusion_and_encoder_trains_on_hard_negatives(encoder, fusion, task):
    p = prepare(validate({**SMALL, "encoder": ENCODERS.get(encoder, {"name": encoder}), "fusion": {"name": fusion}, "loss": TASKS[task], "task": task}))
    shared = p.model.encoder.shared_space
    assert isinstance(p.model.itc_image_proj, torch.nn.Identity) == shared  # the encoder's own space, else the model's
    losses = train_steps(p, 2)  # every trainable weight has a gradient after the first step
    assert all(torch.isfinite(torch.tensor(losses)))


def test_retrieval_ranks_on_the_shortlist_by_default_and_every_pair_on_request(tmp_path):
    flags = [
        "--loss", "infonce", "--loss", "itm", "--max-steps", "2", "--batch-size", "8", "--json", "--runs-dir", "runs",
        "--set", "encoder.hidden_size=32", "--set", "encoder.projection_dim=32", "--set", "encoder.layers=1", "--set", "fusion.heads=2",
        "--set", "dataset.train_size=16", "--set", "dataset.val_size=8", "--set", "dataset.image_size=32", "--set", "model.dim=32",
    ]  # fmt: skip
    run = cli("run", *flags, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    summary = json.loads(run.stdout)
    assert summary["retrieval"]["scoring"] == "shortlist" and summary["retrieval"]["shortlist"] == TRAINED_SHORTLIST
    assert summary["retrieval"]["shortlist_by"] == "contrastive"
    every = cli("eval", summary["run_dir"], "--set", "task.shortlist=all", "--json", cwd=tmp_path)
    assert every.returncode == 0, every.stderr
    evaluated = json.loads(every.stdout)
    assert evaluated["described"]["scoring"] == "all" and evaluated["described"]["rescore"] == "fusion+cosine"
    # 8 images fit in a shortlist of 128: every candidate is rescored, so both ways give the same ranks
    assert {k: v for k, v in evaluated.items() if "recall" in k} == summary["metrics"]
    shown = cli("eval", summary["run_dir"], cwd=tmp_path)
    assert "scored: 8 images x 8 captions" in " ".join(shown.stdout.split()) and "shortlist K=128" in shown.stdout

    p = prepare(validate({**SMALL, "loss": TASKS["retrieval"]}))
    assert RetrievalEvaluation(p.model).shortlist == TRAINED_SHORTLIST
    assert RetrievalEvaluation(p.model, shortlist="all").shortlist is None
    assert RetrievalEvaluation(p.model, shortlist=5).shortlist == 5
    assert RetrievalEvaluation(prepare(validate({**SMALL, "loss": {"infonce": {}}})).model).shortlist is None  # all pairs trained


def test_a_hard_negative_run_ranks_by_the_matching_logit_plus_the_contrastive_cosine_everywhere():
    """BLIP's k_test scoring, in evaluation (shortlisted or every pair) and in predict alike."""
    p = prepare(validate({**SMALL, "loss": TASKS["retrieval"]}))
    model = p.model.eval()
    assert RetrievalEvaluation(model).add_cosine and not RetrievalEvaluation(model, rescore="fusion").add_cosine
    assert not RetrievalEvaluation(prepare(validate({**SMALL, "loss": {"infonce": {}}})).model).add_cosine
    batch = collate_for(p)(list(p.val_split[:8]))
    with torch.no_grad():
        features = model.encode(batch)
        cosine = torch.nn.functional.normalize(features.pooled[0], dim=-1) @ torch.nn.functional.normalize(features.pooled[1], dim=-1).T
        expected = model.fusion.score(features.image, features.text) + cosine
        by_evaluation = []
        for shortlist in (TRAINED_SHORTLIST, "all"):
            evaluation = RetrievalEvaluation(model, shortlist=shortlist)
            evaluation.update(model, features, batch)
            by_evaluation.append(evaluation.compute())
        predicted = p.task.predict(model, {"pixel_values": batch["pixel_values"]}, [s.caption for s in p.val_split[:8]], top_k=8)
    assert by_evaluation[0] == by_evaluation[1] == retrieval_metrics(expected)  # 8 candidates all shortlisted
    for row, scores in zip(predicted, expected.tolist(), strict=True):
        assert [r["score"] for r in row] == pytest.approx(sorted(scores, reverse=True), abs=1e-5)


@pytest.mark.parametrize(
    ("flags", "words"),
    [
        (["--fusion", "none", "--loss", "infonce", "--loss", "itm"], ["loss 'itm' picks the pairs", "--fusion gated"]),
        (["--encoder", "vilt", "--fusion", "none", "--loss", "itm", "--loss", "infonce"], ["loss 'itm'", "separate towers"]),
        (["--loss", "itm"], ["loss 'itm' draws its negatives from the contrastive similarities", "--loss infonce"]),
    ],
    ids=["not-pairwise", "single-stream", "no-contrastive-loss"],
)
def test_what_cannot_work_is_refused_in_one_line(tmp_path, flags, words):
    line = one_error_line(cli("run", *flags, "--max-steps", "1", "--runs-dir", "runs", cwd=tmp_path))
    assert all(word in line for word in words), line
    assert not (tmp_path / "runs").exists()


def test_a_scaffolded_pairwise_fusion_trains_on_hard_negatives_unchanged(generated):  # noqa: F811
    root, env = generated
    run = cli(
        "run", "--fusion", "kit-fusion", "--loss", "infonce", "--loss", "itm", "--max-steps", "2", "--batch-size", "8",
        "--set", "encoder.hidden_size=16", "--set", "encoder.projection_dim=16", "--set", "model.dim=16",
        "--set", "dataset.train_size=16", "--set", "dataset.val_size=8", "--runs-dir", "runs", "--json", cwd=root, env=env,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    summary = json.loads(run.stdout)
    assert summary["steps"] == 2 and summary["retrieval"]["scoring"] == "shortlist"
    assert summary["final_loss"] == summary["final_loss"]  # finite


def test_data_parallel_hard_negatives_equal_the_single_process_batch(tmp_path):
    """2 processes (gloo), each scoring its own pairs and drawing their negatives from the global batch:
    the mean of the processes' losses and the averaged gradients equal one process's on the 16 pairs."""
    two_processes_against_one({**TINY, "loss": {"infonce": {}, "itm": {"sampling": "top"}}}, tmp_path)
