"""Balancers: OGM-GE by its formula, each modality's own logits, and the hook's place in the step
(after the reduction across processes, after the last micro-batch), resume and refusals."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from mmreg.api import collate_for, prepare
from mmreg.balance import modality_parameters, step_generator, step_outputs
from mmreg.components import GradientStep, Modality, Step
from mmreg.config import validate
from mmreg.model import detached
from mmreg_plugins.balancers.ogm_ge import OGMGE, coefficients, confidence
from test_training import TINY, assert_same_end, cli, kill_and_resume, torchrun

CLASSIFY = {**TINY, "fusion": {"name": "concat", "dropout": 0.0}, "loss": {"ce": {}}, "task": "classification"}
TINY_FLAGS = [
    "--set", "encoder.hidden_size=32", "--set", "encoder.projection_dim=32", "--set", "encoder.layers=1",
    "--set", "dataset.train_size=64", "--set", "dataset.val_size=16", "--set", "dataset.image_size=32", "--set", "model.dim=32",
    "--set", "train.eval_batch_size=16", "--lr", "3e-3",
]  # fmt: skip  (TINY's settings)
CLASSIFY_FLAGS = [*TINY_FLAGS, "--fusion", "concat", "--set", "fusion.dropout=0", "--task", "classification"]  # with --loss ce


def ogm(**params) -> OGMGE:
    return OGMGE(**{"alpha": 0.8, "noise": False, "modulation_starts": 0, "modulation_ends": None, "parameters": "all", **params})


def hand_step(image_logits, text_logits, labels, *, epoch=0, seed=0) -> tuple[GradientStep, dict[str, torch.nn.Parameter]]:
    """A GradientStep built by hand: two weights per modality with known gradients, one fusion weight."""
    torch.manual_seed(1)
    weights = {name: torch.nn.Parameter(torch.randn(shape)) for name, shape in
               (("vision.conv", (2, 3, 3, 3)), ("vision.linear", (4, 5)), ("text.linear", (4, 5)), ("text.bias", (4,)), ("fusion", (3, 3)))}  # fmt: skip
    for w in weights.values():
        w.grad = torch.randn_like(w)
    labels = torch.tensor(labels)
    outputs = Step(Modality(pooled=torch.zeros(len(labels), 2)), Modality(pooled=torch.zeros(len(labels), 2)), labels=labels,
                   unimodal={"image": torch.tensor(image_logits), "text": torch.tensor(text_logits)})  # fmt: skip
    modalities = {"image": [(n, w) for n, w in weights.items() if n.startswith("vision")], "text": [(n, w) for n, w in weights.items() if n.startswith("text")]}
    groups = {**{"vision": modalities["image"], "text": modalities["text"]}, "fusion": [("fusion", weights["fusion"])], "head": []}
    step = GradientStep(outputs, modalities, groups, step=3, epoch=epoch, steps_per_epoch=10, generator=step_generator(seed, 3, torch.device("cpu")))
    return step, weights


def paper_coefficients(image_logits, text_logits, labels, alpha) -> tuple[float, float]:
    """Eq. (10) of Peng et al. (CVPR 2022) as the reference code computes it, in plain Python."""

    def score(rows):
        total = 0.0
        for row, label in zip(rows, labels):
            exps = [math.exp(v) for v in row]
            total += exps[label] / sum(exps)
        return total

    ratio_v = score(image_logits) / score(text_logits)
    if ratio_v > 1:
        return 1 - math.tanh(alpha * ratio_v), 1.0
    return 1.0, 1 - math.tanh(alpha / ratio_v)


@pytest.mark.parametrize(
    "image_logits,text_logits",
    [([[3.0, 0.0, 0.0], [0.0, 2.0, 0.5]], [[0.5, 0.0, 0.0], [0.0, 0.3, 0.5]]),  # the image ahead
     ([[0.1, 0.0, 0.2], [0.3, 0.1, 0.5]], [[4.0, 0.0, 0.0], [0.0, 3.0, 0.5]])],  # the text ahead
    ids=["image-dominant", "text-dominant"],
)
def test_ogm_ge_scales_the_dominant_modality_by_the_papers_coefficient(image_logits, text_logits):
    labels = [0, 1]
    expected_image, expected_text = paper_coefficients(image_logits, text_logits, labels, 0.8)
    assert (expected_image < 1) != (expected_text < 1)  # exactly one modality is slowed
    step, weights = hand_step(image_logits, text_logits, labels)
    before = {n: w.grad.clone() for n, w in weights.items()}
    numbers = ogm(alpha=0.8)(step)
    assert float(numbers["coeff_image"]) == pytest.approx(expected_image, abs=1e-6)
    assert float(numbers["coeff_text"]) == pytest.approx(expected_text, abs=1e-6)
    for name, w in weights.items():  # without noise: the gradient times its modality's coefficient, the fusion untouched
        factor = expected_image if name.startswith("vision") else expected_text if name.startswith("text") else 1.0
        torch.testing.assert_close(w.grad, before[name] * factor, rtol=1e-6, atol=1e-7)
    scores = {m: confidence(torch.tensor(v), torch.tensor(labels)) for m, v in (("image", image_logits), ("text", text_logits))}
    assert float(coefficients(scores, 0.8)["image"]) == pytest.approx(expected_image, abs=1e-6)


def test_ogm_ge_noise_is_the_gradients_std_drawn_from_the_steps_generator():
    step, weights = hand_step([[3.0, 0.0], [0.0, 2.0]], [[0.5, 0.0], [0.0, 0.3]], [0, 1])
    before = {n: w.grad.clone() for n, w in weights.items()}
    numbers = ogm(alpha=0.5, noise=True)(step)
    generator = step_generator(0, 3, torch.device("cpu"))  # the same seed and step: the same draws, in weight order
    for name in ("vision.conv", "vision.linear", "text.linear", "text.bias"):
        coeff = float(numbers["coeff_image" if name.startswith("vision") else "coeff_text"])
        grad = before[name]
        draw = torch.randn(grad.shape, generator=generator)
        torch.testing.assert_close(weights[name].grad, grad * coeff + draw * (grad.std() + 1e-8), rtol=1e-5, atol=1e-6)
    assert torch.equal(weights["fusion"].grad, before["fusion"])


def test_outside_the_modulation_window_the_gradients_are_untouched():
    for window, epoch in (((2, None), 1), ((0, 1), 2)):
        step, weights = hand_step([[3.0, 0.0], [0.0, 2.0]], [[0.5, 0.0], [0.0, 0.3]], [0, 1], epoch=epoch)
        before = {n: w.grad.clone() for n, w in weights.items()}
        numbers = ogm(noise=True, modulation_starts=window[0], modulation_ends=window[1])(step)
        assert numbers["modulated"] == 0.0 and float(numbers["coeff_image"]) < 1  # computed and logged, not applied
        assert all(torch.equal(w.grad, before[n]) for n, w in weights.items())


def test_conv_only_modulates_4d_kernels_as_the_reference_code():
    step, weights = hand_step([[3.0, 0.0], [0.0, 2.0]], [[0.5, 0.0], [0.0, 0.3]], [0, 1])
    before = {n: w.grad.clone() for n, w in weights.items()}
    numbers = ogm(parameters="conv")(step)
    torch.testing.assert_close(weights["vision.conv"].grad, before["vision.conv"] * float(numbers["coeff_image"]))
    assert torch.equal(weights["vision.linear"].grad, before["vision.linear"])


def test_unimodal_logits_are_ogm_ges_split_of_a_linear_head_over_the_concatenation():
    """With `none` (fuse = [v/|v|, t/|t|]) and classification's linear head W [C, 2D], b: image W_v v + b/2, text W_t t + b/2."""
    p = prepare(validate({**CLASSIFY, "fusion": {"name": "none"}}))
    model = p.model.eval()
    batch = collate_for(p)(list(p.train_split[:6]))
    encoded = model.encode(batch)
    split = model.unimodal_logits(encoded, batch)
    dim = model.dim
    weight, bias = model.head.weight, model.head.bias
    image, text = F.normalize(encoded.image.pooled, dim=-1), F.normalize(encoded.text.pooled, dim=-1)
    torch.testing.assert_close(split["image"], image @ weight[:, :dim].T + bias / 2)
    torch.testing.assert_close(split["text"], text @ weight[:, dim:].T + bias / 2)
    fused = model.task.forward(model.head, model.fusion, encoded, batch)["logits"]
    torch.testing.assert_close(split["image"] + split["text"], fused)  # the two halves add up to the fused logits


def test_concat_gives_each_modality_alone_and_the_accuracies_are_reported():
    p = prepare(validate(CLASSIFY))
    model = p.model.eval()
    batch = collate_for(p)(list(p.train_split[:6]))
    encoded = model.encode(batch)
    split = model.unimodal_logits(encoded, batch)
    zero = Modality(pooled=torch.zeros_like(encoded.text.pooled))
    alone = model.head(model.fusion.fuse(encoded.image, zero))
    absent = model.head(model.fusion.fuse(Modality(pooled=torch.zeros_like(encoded.image.pooled)), zero))
    torch.testing.assert_close(split["image"], alone - absent / 2)
    names = [n for e in model.task.evaluations(model) for n in e.names]
    assert names[:3] == ["accuracy", "accuracy/image_only", "accuracy/text_only"]
    gated = prepare(validate({**CLASSIFY, "fusion": {"name": "gated", "heads": 2}})).model
    assert not gated.gives_unimodal and "accuracy/image_only" not in [n for e in gated.task.evaluations(gated) for n in e.names]


def test_step_outputs_concatenate_the_micro_batches_without_gradients():
    logits = torch.randn(4, 3, requires_grad=True)
    steps = [detached(Step(Modality(pooled=torch.randn(2, 5)), Modality(pooled=torch.randn(2, 5)), logits=logits[i : i + 2] * 2,
                           labels=torch.tensor([i, i + 1]), unimodal={"image": logits[i : i + 2], "text": logits[i : i + 2]}))
             for i in (0, 2)]  # fmt: skip
    whole = step_outputs(steps)
    assert whole.labels.tolist() == [0, 1, 2, 3] and not whole.logits.requires_grad
    torch.testing.assert_close(whole.unimodal["image"], logits.detach())


def test_the_modalities_own_weights_are_each_tower_and_its_projection():
    model = prepare(validate(CLASSIFY)).model
    owned = {m: {n for n, _ in named} for m, named in modality_parameters(model).items()}
    assert owned["image"] and owned["text"] and not owned["image"] & owned["text"]
    assert any(n.startswith("image_proj.") for n in owned["image"]) or all(n.startswith("encoder.") for n in owned["image"])
    assert not any(n.startswith(("fusion.", "head.")) for n in owned["image"] | owned["text"])
    assert all("vision" in n or "visual" in n or "image" in n for n in owned["image"])


# -- the hook's place in the step -------------------------------------------------

RECORDER = '''
import json, os
import torch
from mmreg import hookimpl
from mmreg.components import Balancer


class Recorder(Balancer):
    """Writes what it sees each step (the head's gradient after reduction, the rows of the step) to seenRANK.jsonl."""

    def __call__(self, step):
        weight = dict(step.groups["head"])["head.weight"]
        record = {"step": step.step, "epoch": step.epoch, "rows": len(step.outputs.labels),
                  "labels": step.outputs.labels.tolist(), "grad": weight.grad.flatten()[:16].tolist()}
        with open(f"seen{os.environ.get('RANK', '0')}.jsonl", "a") as f:
            f.write(json.dumps(record) + "\\n")
        weight.grad.mul_(0.5)
        return {"head_grad_sum": weight.grad.sum()}


@hookimpl
def mmreg_register_balancers(register):
    register("recorder", Recorder)
'''


def seen(cwd: Path, rank: int = 0) -> list[dict]:
    return [json.loads(line) for line in (cwd / f"seen{rank}.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("losses", [["--loss", "ce"], ["--loss", "ce", "--loss", "infonce"]], ids=["micro-batches", "one-batch"])
def test_the_hook_sees_the_whole_step_after_the_last_micro_batch_and_after_the_reduction(tmp_path, losses):
    """The head's gradient the balancer sees, and the rows of its outputs, are the same for one batch of 32,
    4 accumulated micro-batches of 8 (each added on, or all 32 trained as one through mmreg.accumulate),
    and 2 processes of 16 (gloo): the hook runs once per optimizer step, after the last micro-batch and
    after the gradients are averaged across processes."""
    (tmp_path / "recorder.py").write_text(RECORDER)
    flags = [*CLASSIFY_FLAGS, *losses, "--balance", "recorder", "--max-steps", "2", "--set", "train.log_every=1"]
    runs = {}
    for name, extra in (("whole", ["--batch-size", "32"]), ("accumulated", ["--batch-size", "8", "--set", "train.grad_accum=4"])):
        (tmp_path / name).mkdir()
        proc = cli("--plugin", "../recorder.py", "run", *flags, *extra, cwd=tmp_path / name)
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
        runs[name] = seen(tmp_path / name)
    (tmp_path / "ddp").mkdir()
    result = torchrun("-m", "mmreg", "--plugin", "../recorder.py", "run", *flags, "--batch-size", "16", cwd=tmp_path / "ddp")
    assert result.returncode == 0, result.stderr[-3000:]
    ranks = [seen(tmp_path / "ddp", r) for r in (0, 1)]
    whole = runs["whole"]
    assert [r["step"] for r in whole] == [0, 1] and all(r["rows"] == 32 for r in whole)
    for other in (runs["accumulated"], *ranks):
        assert [r["step"] for r in other] == [0, 1]  # once per optimizer step, not per micro-batch
        assert [r["rows"] for r in other] == [32, 32]  # every micro-batch's and every process's rows
        assert sorted(other[0]["labels"]) == sorted(whole[0]["labels"])
        torch.testing.assert_close(torch.tensor(other[0]["grad"]), torch.tensor(whole[0]["grad"]), rtol=1e-4, atol=1e-6)
    assert ranks[0] == ranks[1]  # each process sees the reduced gradient, not its own
    run_dir = next((tmp_path / "whole" / "runs").iterdir())
    train = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines() if '"train"' in x]
    assert [r["step"] for r in train] == [1, 2] and all(isinstance(r["balance/recorder/head_grad_sum"], float) for r in train)


def test_a_run_with_ogm_ge_killed_and_resumed_ends_bit_identical(tmp_path):
    """OGM-GE's noise comes from a generator seeded by the step, so a resumed run draws what the whole one drew."""
    flags = [*CLASSIFY_FLAGS, "--loss", "ce", "--batch-size", "8", "--balance", "ogm_ge", "--set", "train.eval_every=8", "--set", "train.log_every=1"]
    reference, summary, run_dir = kill_and_resume(tmp_path, flags, 16, 5)
    assert_same_end(reference, summary, run_dir, 16)
    train = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines() if '"train"' in x]
    assert [r["step"] for r in train] == list(range(1, 17))
    assert all(r["balance/ogm_ge/modulated"] == 1.0 and 0 < min(r["balance/ogm_ge/coeff_image"], r["balance/ogm_ge/coeff_text"]) < 1 for r in train)
    assert all(max(r["balance/ogm_ge/coeff_image"], r["balance/ogm_ge/coeff_text"]) == 1.0 for r in train)
    val = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines() if '"val"' in x]
    assert {"accuracy", "accuracy/image_only", "accuracy/text_only"} <= set(val[-1])


def test_ogm_ge_changes_training_and_a_balancer_runs_from_a_file(tmp_path):
    (tmp_path / "exp.toml").write_text(
        '[fusion]\nname = "concat"\ndropout = 0.0\n[loss.ce]\n[task]\nname = "classification"\n'
        '[balance.ogm_ge]\nalpha = 1.5\nnoise = false\n'
        '[encoder]\nname = "clip"\nhidden_size = 32\nprojection_dim = 32\nlayers = 1\n[model]\ndim = 32\n'
        '[dataset]\nname = "shapes"\ntrain_size = 32\nval_size = 16\nimage_size = 32\n[train]\nbatch_size = 8\nmax_steps = 3\n'
    )
    import mmreg

    from mmreg.config import load_experiment, to_file_layout

    exp = load_experiment(tmp_path / "exp.toml")
    assert exp.balance["ogm_ge"].params == {"alpha": 1.5, "noise": False}
    assert to_file_layout(exp)["balance"] == {"ogm_ge": {"alpha": 1.5, "noise": False}}
    assert "balance" not in to_file_layout(load_experiment(None, {}, []))  # none by default: files as before
    with_ogm = mmreg.run(exp.model_copy(update={"runs_dir": str(tmp_path / "a")}), progress=False)
    without = mmreg.run(exp.model_copy(update={"runs_dir": str(tmp_path / "b"), "balance": {}}), progress=False)
    assert with_ogm["final_loss"] != without["final_loss"]  # the modulated gradients trained other weights
    config = (Path(with_ogm["run_dir"]) / "config.toml").read_text()
    assert "[balance.ogm_ge]" in config and "modulation_starts = 0" in config  # recorded resolved


@pytest.mark.parametrize(
    "flags,says",
    [(["--fusion", "gated", "--set", "fusion.heads=2", "--task", "classification"], "--fusion concat or --fusion none"),
     (["--fusion", "concat", "--task", "retrieval", "--loss", "infonce"], "--task classification")],
    ids=["fusion-without-unimodal-logits", "task-without-a-head"],
)
def test_ogm_ge_where_there_are_no_unimodal_logits_is_refused_in_one_line(tmp_path, flags, says):
    loss = [] if "--loss" in flags else ["--loss", "ce"]
    proc = cli("run", *TINY_FLAGS, *flags, *loss, "--balance", "ogm_ge", "--max-steps", "1", cwd=tmp_path)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "balancer 'ogm_ge' reads each modality's own logits" in lines[0] and says in lines[0], err
    assert "Traceback" not in err and not (tmp_path / "runs").exists()


def test_a_balancer_is_named_once_and_without_a_weight(tmp_path):
    for spec in (["--balance", "ogm_ge:0.5"], ["--balance", "ogm_ge", "--balance", "ogm_ge"]):
        proc = cli("run", *CLASSIFY_FLAGS, "--loss", "ce", *spec, "--max-steps", "1", cwd=tmp_path)
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 2 and "give each balance once, by name and without a weight" in err, err


def test_a_search_chooses_whether_to_balance_and_draws_alpha_from_its_declared_range(tmp_path):
    from mmreg.search import search

    (tmp_path / "s.toml").write_text(
        'task = "classification"\n[encoder]\nname = "clip"\nhidden_size = 32\nprojection_dim = 32\nlayers = 1\n[model]\ndim = 32\n'
        '[fusion]\nname = "concat"\n[loss.ce]\n[balance.ogm_ge]\n'
        '[dataset]\nname = "shapes"\ntrain_size = 32\nval_size = 16\nimage_size = 32\n[train]\nmax_steps = 1\nbatch_size = 8\n'
        '[search]\n"balance" = {choices = [{}, "ogm_ge"]}\n"balance.ogm_ge.alpha" = {}\n'
    )
    summary = search(tmp_path / "s.toml", trials=4, sampler="random", runs_dir=str(tmp_path / "runs"))
    assert summary["states"] == {"complete": 4}
    assert {t["params"]["balance"] for t in summary["rows"]} == {"(none)", "ogm_ge"}  # the seeded sampler drew both
    for trial in summary["rows"]:
        config = (Path(trial["run_dir"]) / "config.toml").read_text()
        assert ("[balance.ogm_ge]" in config) == (trial["params"]["balance"] == "ogm_ge")
        if trial["params"]["balance"] == "ogm_ge":
            assert 0.1 <= trial["params"]["balance.ogm_ge.alpha"] <= 2.0
            assert f"alpha = {trial['params']['balance.ogm_ge.alpha']}" in config


@pytest.mark.parametrize("task,headline", [("classification", "accuracy"), ("vqa", "vqa_accuracy")])
def test_every_task_with_a_head_over_the_fusion_reports_each_modality_alone_and_balances(tmp_path, task, headline):
    """VQA's own measure (the official accuracy against the human answers) scores each modality alone too,
    and OGM-GE reads VQA's soft answer scores as targets."""
    import mmreg

    exp = {**CLASSIFY, "task": task, "loss": {"ce" if task == "classification" else "bce": {}}, "balance": {"ogm_ge": {}},
           "runs_dir": str(tmp_path), "train": {**TINY["train"], "max_steps": 2, "log_every": 1}}  # fmt: skip
    summary = mmreg.run(exp, progress=False)
    own = {k for k in summary["metrics"] if k.endswith("_only")}
    assert own == {f"{headline}/image_only", f"{headline}/text_only"}  # the headline only, not its breakdowns
    assert all(0 <= summary["metrics"][k] <= 1 for k in own)
    train = [json.loads(x) for x in (Path(summary["run_dir"]) / "metrics.jsonl").read_text().splitlines() if '"train"' in x]
    assert all(0 < min(r["balance/ogm_ge/coeff_image"], r["balance/ogm_ge/coeff_text"]) <= 1 for r in train)


def test_a_modulation_window_that_ends_before_it_starts_is_refused_naming_both(tmp_path):
    proc = cli("run", *CLASSIFY_FLAGS, "--loss", "ce", "--balance", "ogm_ge", "--set", "balance.ogm_ge.modulation_starts=2",
               "--set", "balance.ogm_ge.modulation_ends=0", cwd=tmp_path)  # fmt: skip
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 2 and err.strip() == "error: balancer 'ogm_ge': modulation_ends (0) is before modulation_starts (2)", err


def test_reading_each_modalitys_logits_leaves_training_as_it_was(tmp_path):
    """OGM-GE outside its window reads the unimodal logits every step and changes nothing: they are taken
    without dropout and draw nothing from the random generators, so the run ends bit-identical to one
    without a balancer (concat's dropout on)."""
    import mmreg

    base = {**CLASSIFY, "fusion": {"name": "concat"}, "train": {**TINY["train"], "max_steps": 6}}
    runs = [mmreg.run({**base, "runs_dir": str(tmp_path / name), "balance": balance}, progress=False)
            for name, balance in (("plain", {}), ("reading", {"ogm_ge": {"modulation_starts": 50}}))]  # fmt: skip
    assert runs[0]["final_loss"] == runs[1]["final_loss"] and runs[0]["metrics"] == runs[1]["metrics"]
    a, b = (load_file(Path(r["run_dir"]) / "model.safetensors") for r in runs)
    assert all(torch.equal(a[k], b[k]) for k in a)
