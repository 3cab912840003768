"""Accumulation that keeps every negative (``mmreg.accumulate``): K micro-batches of b train as one
batch of K*b for losses that compare samples across the batch, with that batch's loss and gradients;
under data parallelism, in one process or two; through a kill and a resume."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from mmreg.accumulate import CachedBatch
from mmreg.api import collate_for, prepare
from mmreg.config import validate
from mmreg.results import Metric
from mmreg.train import Trainer
from test_training import FLAGS, HERE, TINY, assert_same_end, cli, kill_and_resume, torchrun

CONTRASTIVE = {
    "infonce": {"infonce": {}},
    "clip": {"clip": {}},
    "siglip": {"siglip": {}},
    "infonce+itm": {"infonce": {}, "itm": {"sampling": "top"}},  # hard negatives: the fusion scores (1 + 2K) b pairs
}
NO_DROPOUT = {"name": "gated", "heads": 2, "dropout": 0.0}  # the paths draw dropout masks in different orders


def experiment(losses: dict, **train) -> dict:
    return {**TINY, "fusion": NO_DROPOUT, "loss": losses, "train": {**TINY["train"], **train}}


def gradients(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: q.grad.clone() for name, q in model.named_parameters() if q.grad is not None}


@pytest.mark.parametrize("losses", CONTRASTIVE, ids=list(CONTRASTIVE))
def test_four_micro_batches_of_8_give_the_loss_and_gradients_of_one_batch_of_32(losses):
    p = prepare(validate(experiment(CONTRASTIVE[losses])))
    model = p.model.eval()
    batch = collate_for(p)(list(p.train_split[:32]))
    whole, _ = model(batch)
    whole.backward()
    expected = gradients(model)
    model.zero_grad(set_to_none=True)

    micro = [{k: v[i : i + 8] for k, v in batch.items()} for i in range(0, 32, 8)]
    cached = CachedBatch(model, contextlib.nullcontext)
    loss, _ = cached.loss(micro)
    cached.backward(loss, lambda value: value.backward())
    got = gradients(model)
    assert loss.item() == pytest.approx(whole.item(), rel=1e-6)
    assert got.keys() == expected.keys() and any(k.startswith("encoder.") for k in got)
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], rtol=1e-4, atol=1e-6, msg=name)

    if losses != "siglip":  # SigLIP's near-zero negative terms at its initial bias hide the difference in its value
        alone = sum(model(b)[0].item() for b in micro) / 4  # "micro": each micro-batch contrasted alone
        assert alone < whole.item() - 0.5  # 7 negatives per pair instead of 31: an easier, different objective


PATHS = {
    "views": {"encoder": TINY["encoder"], "fusion": {"name": "none"}, "augment": {"multiview": {}}, "loss": {"multiview": {}}},
    "single-stream": {"encoder": {"name": "vilt"}, "fusion": {"name": "none"}, "loss": {"infonce": {}}},
    "head-and-contrast": {"encoder": TINY["encoder"], "fusion": NO_DROPOUT, "task": "classification", "loss": {"ce": {}, "infonce": {}, "itm": {"sampling": "top"}}},
    "decoder-and-contrast": {"encoder": {"name": "blip"}, "fusion": {"name": "none"}, "task": "captioning", "loss": {"lm": {}, "infonce": {}}},
    "dual-towers": {"encoder": {"name": "dual"}, "fusion": {"name": "cross-attention", "dropout": 0.0}, "loss": {"siglip": {}, "itm": {"sampling": "top"}}},
}


@pytest.mark.parametrize("path", PATHS, ids=list(PATHS))
def test_every_kind_of_batch_accumulates_to_the_whole_batch(path):
    """Views encoded beside the batch, raw inputs of a single-stream encoder, a head's labels, a decoder's
    caption ids padded per micro-batch, projections into a contrastive space: each as the batch of 16."""
    p = prepare(validate({**TINY, **PATHS[path]}))
    model = p.model.eval()
    torch.manual_seed(0)
    samples = list(p.train_split[:16])
    if path == "views":  # two augmented views of each image, as the training loader makes them
        samples = [p.augmenters[0](s, np.random.default_rng(i)) for i, s in enumerate(samples)]
    batch = collate_for(p)(samples)
    whole, _ = model(batch)
    whole.backward()
    expected = gradients(model)
    model.zero_grad(set_to_none=True)
    cached = CachedBatch(model, contextlib.nullcontext)
    loss, _ = cached.loss([{k: v[i : i + 4] for k, v in batch.items()} for i in range(0, 16, 4)])
    cached.backward(loss, lambda value: value.backward())
    assert loss.item() == pytest.approx(whole.item(), rel=1e-5)
    got = gradients(model)
    assert got.keys() == expected.keys()
    for name in expected:  # to the rounding of the largest entry (BLIP's deeper towers sum in another order)
        error = (got[name] - expected[name]).abs().max().item()
        assert error <= 2e-4 * expected[name].abs().max().item() + 1e-6, (name, error)


def step_record(tmp_path: Path, losses: dict, batch: int, accum: int, accumulation: str = "whole", precision: str = "fp32") -> tuple[float, list[torch.Tensor]]:
    """The first step's loss as the run logs it, and the gradients the optimizer steps with."""
    train = {"batch_size": batch, "grad_accum": accum, "accumulation": accumulation, "max_steps": 1, "log_every": 1, "precision": precision}
    exp = validate({**experiment(losses, **train), "runs_dir": str(tmp_path)})
    p = prepare(exp)
    run_dir = tmp_path / f"b{batch}x{accum}-{accumulation}-{precision}"
    run_dir.mkdir()
    trainer = Trainer(p.model.eval(), p.train_split, collate_for(p), [], exp.train, seed=0, run_dir=run_dir, metric=Metric("recall@1"))
    trainer.model.train = lambda mode=True: trainer.model  # type: ignore[method-assign]  # keep dropout off, as above
    trainer.evaluate = lambda: {"recall@1": 0.0}  # type: ignore[method-assign]  # gradients are what is compared
    captured: list[torch.Tensor] = []
    inner = trainer.optimizer.optimizer  # accelerate's wrapper around AdamW
    inner.register_step_pre_hook(lambda opt, args, kwargs: captured.extend(q.grad.clone() for g in opt.param_groups for q in g["params"]))
    trainer.fit()
    loss = json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[0])["loss"]
    return loss, captured


@pytest.mark.parametrize("losses", ["infonce", "siglip"])
def test_the_trainer_steps_with_the_whole_batch_and_micro_keeps_the_old_objective(tmp_path, losses):
    whole_loss, whole = step_record(tmp_path, CONTRASTIVE[losses], 32, 1)
    accumulated_loss, accumulated = step_record(tmp_path, CONTRASTIVE[losses], 8, 4)
    micro_loss, micro = step_record(tmp_path, CONTRASTIVE[losses], 8, 4, "micro")
    assert accumulated_loss == pytest.approx(whole_loss, rel=1e-6)
    assert len(accumulated) == len(whole) > 0
    for a, w in zip(accumulated, whole, strict=True):
        torch.testing.assert_close(a, w, rtol=1e-4, atol=1e-6)
    assert micro_loss < whole_loss - 0.5 or losses == "siglip"
    assert any(not torch.allclose(m, w, rtol=1e-2) for m, w in zip(micro, whole, strict=True))


PROBES = ("fusion.match_head.0.weight", "encoder.model.vision_model.embeddings.patch_embedding.weight", "encoder.model.text_model.embeddings.token_embedding.weight")


SCALES = {"infonce": "losses.infonce.log_scale", "clip": "encoder.model.logit_scale", "siglip": "losses.siglip.bias", "infonce+itm": "losses.infonce.log_scale"}


@pytest.mark.parametrize("losses", list(SCALES))
def test_two_processes_accumulating_equal_one_process_on_the_whole_batch(tmp_path, losses):
    exp = experiment(CONTRASTIVE[losses])
    probes = [*PROBES, SCALES[losses]]  # the loss's own temperature (CLIP's lives in the encoder)
    result = torchrun(str(HERE / "distributed_accumulation.py"), json.dumps(exp), json.dumps(probes), cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    p = prepare(validate(exp))
    loss, _ = p.model.eval()(collate_for(p)(list(p.train_split[:32])))
    loss.backward()
    assert sum(r["loss"] for r in ranks) / 2 == pytest.approx(loss.item(), rel=1e-5)
    for r in ranks:
        for name, grad in r["grads"].items():
            torch.testing.assert_close(torch.tensor(grad), p.model.get_parameter(name).grad.flatten()[:64], rtol=1e-4, atol=1e-6, msg=name)


@pytest.mark.parametrize(
    "extra",
    [["--set", "train.grad_accum=2"], ["--loss", "infonce", "--loss", "itm"]],
    ids=["accumulated", "hard-negatives"],
)
def test_killed_and_resumed_ends_bit_identical(tmp_path, extra):
    reference, summary, run_dir = kill_and_resume(tmp_path, [*FLAGS, *extra, "--set", "train.eval_every=8"], 16, 5)
    assert_same_end(reference, summary, run_dir, 16)


def test_a_run_recorded_before_the_setting_existed_resumes_as_it_trained(tmp_path):
    """A run directory without ``train.accumulation`` (older runs) accumulated micro-batch by micro-batch:
    rebuilt and resumed with "micro", so its trajectory is the one its checkpoint recorded."""
    from mmreg.plugins import load_plugins
    from mmreg.recorded import recorded_experiment

    run = cli("run", *FLAGS, "--set", "train.grad_accum=2", "--set", "train.accumulation=micro", "--max-steps", "2", "--name", "old", "--json", cwd=tmp_path)
    out, err = run.communicate(timeout=300)
    assert run.returncode == 0, err
    run_dir = tmp_path / "runs" / "old"
    config = run_dir / "config.toml"
    config.write_text("".join(line for line in config.read_text().splitlines(keepends=True) if not line.startswith("accumulation")))
    state_file = run_dir / "checkpoints" / "last" / "state.json"
    state = json.loads(state_file.read_text())
    del state["trajectory"]["train.accumulation"]
    state_file.write_text(json.dumps(state))
    assert recorded_experiment(run_dir, load_plugins()).train.accumulation == "micro"
    resumed = cli("run", "--resume", str(run_dir), "--json", cwd=tmp_path)
    out, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err
    assert json.loads(out)["steps"] == 2


def test_accumulation_under_bf16_autocast_and_clipping_steps_as_the_whole_batch(tmp_path):
    """Precision and clipping compose: under bf16 autocast (CPU) the accumulated step's loss and clipped
    gradients agree with the whole batch's to bf16's precision."""
    whole_loss, whole = step_record(tmp_path, CONTRASTIVE["infonce"], 32, 1, precision="bf16")
    accumulated_loss, accumulated = step_record(tmp_path, CONTRASTIVE["infonce"], 8, 4, precision="bf16")
    assert accumulated_loss == pytest.approx(whole_loss, rel=1e-2)
    flat = [torch.cat([g.flatten().float() for g in grads]) for grads in (accumulated, whole)]
    assert torch.nn.functional.cosine_similarity(flat[0], flat[1], dim=0) > 0.99
    assert flat[0].norm() <= 1.0 + 1e-3 and flat[1].norm() <= 1.0 + 1e-3  # clipped to train.max_grad_norm together


def test_images_of_different_sizes_are_padded_and_masked_as_one_batch():
    """A single-stream encoder reads raw pixels: micro-batches padded to different sizes become one
    batch padded to the largest, the padding masked out (ViLT's processor pads a batch so)."""
    from mmreg.accumulate import cat_pixels
    from mmreg.components import Modality

    small = Modality(tokens=torch.ones(2, 3, 4, 5), mask=torch.ones(2, 4, 5, dtype=torch.bool))
    large = Modality(tokens=torch.full((1, 3, 6, 3), 2.0), mask=None)
    both = cat_pixels([small, large])
    assert both.tokens.shape == (3, 3, 6, 5) and both.mask.shape == (3, 6, 5)
    assert both.mask[:2, :4, :5].all() and not both.mask[:2, 4:].any() and not both.mask[:2, :, 5:].any()
    assert both.mask[2, :, :3].all() and not both.mask[2, :, 3:].any()
    assert torch.equal(both.tokens[:2, :, :4, :5], small.tokens) and both.tokens[:2, :, 4:].abs().sum() == 0
