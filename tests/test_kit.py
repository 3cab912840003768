"""The conformance kit catches a component that breaks each contract, and says which contract and what it saw."""

from __future__ import annotations

import dataclasses
import random
import re

import numpy as np
import pytest
import torch
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from mmreg.components import Augmenter, Dataset, Evaluation, Loss, Modality, PeftStrategy, Sample, Samples, Step, Task, Tower
from mmreg.contracts import DESCRIBE_JSON, LOSS_SCALAR, METRICS_NAMED
from mmreg.errors import ConfigError, DataError
from mmreg.layers import symmetric_infonce
from mmreg.plugins import load_plugins
from mmreg.testing import ContractViolation, check_augmenter, check_dataset, check_fusion, check_loss, check_peft, check_task

HOST = load_plugins()


def caught(contract: str, check, *args, **kwargs) -> str:
    with pytest.raises(ContractViolation, match=f"contract '{contract}'") as info:
        check(*args, **kwargs)
    assert isinstance(info.value, AssertionError)
    return str(info.value)


# -- losses ---------------------------------------------------------------------------------


class InfoNCE(Loss):
    symmetric = True

    def forward(self, step: Step) -> torch.Tensor:
        return symmetric_infonce(step.scores)


class OneWay(InfoNCE):  # claims symmetry, scores only image->text
    def forward(self, step: Step) -> torch.Tensor:
        return nn.functional.cross_entropy(step.scores, torch.arange(len(step.scores)))


class PerPair(InfoNCE):  # a vector, not a scalar
    def forward(self, step: Step) -> torch.Tensor:
        return step.scores.diagonal()


class Detached(InfoNCE):  # declares scores, never lets a gradient reach them
    def forward(self, step: Step) -> torch.Tensor:
        return symmetric_infonce(step.scores.detach()) + 0 * step.scores.sum()


class NaNAtOne(InfoNCE):  # an unbiased variance over the batch: nan at batch 1
    def forward(self, step: Step) -> torch.Tensor:
        d = step.scores.diagonal()
        return (d - d.mean()).pow(2).sum() / (len(d) - 1)


class Misnamed(InfoNCE):
    needs = frozenset({"score"})


def test_a_conforming_loss_passes():
    check_loss(InfoNCE())


@pytest.mark.parametrize(
    "loss, contract, seen",
    [
        (OneWay(), "symmetric in images and texts", "transpose"),
        (PerPair(), LOSS_SCALAR, "at batch 2 it returned a tensor of shape (2,)"),
        (Detached(), "gradient reaches every input it needs", "'scores' is all zero"),
        (NaNAtOne(), LOSS_SCALAR, "at batch 1 it returned nan"),
        (Misnamed(), "needs names Step fields", "['score']"),
    ],
)
def test_a_broken_loss_is_caught(loss, contract, seen):
    assert seen in caught(contract, check_loss, loss)


# -- augmenters -----------------------------------------------------------------------------


def samples() -> list[Sample]:
    split = HOST.registry("datasets").build("shapes", {"train_size": 3, "val_size": 1, "image_size": 16}, seed=0).split("train")
    return list(split)


class Flip(Augmenter):
    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        if rng.random() < 0.5:
            return sample
        return dataclasses.replace(sample, image=sample.image.transpose(Image.Transpose.FLIP_LEFT_RIGHT))


class GlobalRandom(Flip):  # draws from Python's generator, not the rng handed in
    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        return dataclasses.replace(sample, image=sample.image.rotate(random.uniform(0, 360)))


class InPlace(Augmenter):  # paints over the caller's image
    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        sample.image.paste((0, 0, 0), (0, 0, 4, 4))
        return sample


class DropsLabel(Flip):
    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        return dataclasses.replace(super().__call__(sample, rng), label=None)


class Unpicklable(Flip):
    def __init__(self) -> None:
        self.pick = lambda sample: sample  # a lambda cannot be sent to a DataLoader worker


class UndeclaredViews(Flip):
    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        return dataclasses.replace(sample, views=(sample.image, sample.image))


def test_a_conforming_augmenter_passes():
    check_augmenter(Flip(), samples())


@pytest.mark.parametrize(
    "augmenter, contract",
    [
        (GlobalRandom(), "deterministic for a given rng"),
        (InPlace(), "never changes its input (validation data stays as it is)"),
        (DropsLabel(), "keeps the sample's other fields"),
        (Unpicklable(), "picklable for DataLoader workers"),
        (UndeclaredViews(), "views only with gives_views"),
    ],
)
def test_a_broken_augmenter_is_caught(augmenter, contract):
    caught(contract.replace("(", r"\(").replace(")", r"\)"), check_augmenter, augmenter, samples())


# -- datasets -------------------------------------------------------------------------------


class Split(Samples):
    def __init__(self, seeds: list[int], captions: list[str], labels: list[int | None]) -> None:
        self.seeds, self.captions, self.labels = seeds, captions, labels

    def __len__(self) -> int:
        return len(self.seeds)

    def sample(self, index: int) -> Sample:
        value = self.seeds[index] % 256
        return Sample(Image.new("RGB", (8, 8), (value, 0, 0)), self.captions[index], self.labels[index])


class Squares(Dataset):
    """Squares of a red level drawn from the seed; label = level above 127."""

    fields = frozenset({"image", "caption", "label"})
    classes = ["dark", "bright"]

    def __init__(self, seed: int, *, overlap: bool = False, jitter: bool = False, labels: bool = True) -> None:
        rng = np.random.default_rng(None if jitter else seed)
        levels = rng.permutation(256)[:12].tolist()
        train, val = levels[:8], levels[8:]
        if overlap:
            val = [train[0], *val[1:]]
        self.splits = {
            name: Split(part, [f"a square of red {v}" for v in part], [int(v > 127) if labels else None for v in part])
            for name, part in (("train", train), ("val", val))
        }

    def split(self, name: str) -> Samples:
        if name not in self.splits:
            raise DataError(f"no split {name}")
        return self.splits[name]


class KeyErrorSplits(Squares):
    def split(self, name: str) -> Samples:
        return self.splits[name]


def test_a_conforming_dataset_passes():
    check_dataset(Squares)


@pytest.mark.parametrize(
    "make, contract",
    [
        (lambda seed: Squares(seed, overlap=True), "splits are disjoint"),
        (lambda seed: Squares(seed, jitter=True), "deterministic from the seed"),
        (lambda seed: Squares(seed, labels=False), "field label indexes classes"),
        (KeyErrorSplits, "an unknown split raises DataError"),
    ],
)
def test_a_broken_dataset_is_caught(make, contract):
    caught(contract, check_dataset, make)


# -- PEFT strategies ------------------------------------------------------------------------


class TinyEncoder(nn.Module):
    """Just enough of an encoder for a strategy: two towers of one linear layer each."""

    image_pooled_dim = text_pooled_dim = 4

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.vision, self.text = nn.Sequential(nn.Linear(3, 4)), nn.Sequential(nn.Embedding(10, 4), nn.Linear(4, 4))

    def preprocess(self, images: list) -> torch.Tensor:
        return torch.tensor([[float(c) / 255 for c in image.getpixel((0, 0))] for image in images])

    def tokenize(self, texts: list[str]) -> dict[str, torch.Tensor]:
        ids = torch.tensor([[len(t) % 10, 1] for t in texts])
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}

    def encode_images(self, pixel_values: torch.Tensor) -> Modality:
        return Modality(pooled=self.vision(pixel_values))

    def encode_texts(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> Modality:
        return Modality(pooled=self.text(input_ids).mean(1))

    def towers(self) -> dict[str, Tower]:
        return {"vision": Tower("vision", ("0",)), "text": Tower("text", ("1",))}


class FreezeVisionFor(PeftStrategy):
    """The vision tower frozen for the first two steps."""

    def __init__(self) -> None:
        self.seen = 0

    def apply(self, encoder):
        self.encoder = encoder
        return encoder

    def on_step_start(self, step: int) -> None:
        self.encoder.vision.requires_grad_(step >= 2)


class CountsCalls(FreezeVisionFor):  # switches after two calls, not at step 2: a resumed run differs
    def on_step_start(self, step: int) -> None:
        self.seen += 1
        self.encoder.vision.requires_grad_(self.seen > 2)


class ReturnsNothing(FreezeVisionFor):
    def apply(self, encoder):
        super().apply(encoder)


class DeadAdapter(FreezeVisionFor):  # adds a weight no output reads
    def apply(self, encoder):
        encoder.add_module("adapter", nn.Linear(4, 4))
        return super().apply(encoder)


class ThawsLater(FreezeVisionFor):  # frozen at apply, trained later: the optimizer never held it
    def apply(self, encoder):
        encoder.text.requires_grad_(False)
        return super().apply(encoder)

    def on_step_start(self, step: int) -> None:
        self.encoder.text.requires_grad_(step >= 1)


IMAGES = [Image.new("RGB", (4, 4), (200, 30, 30)), Image.new("RGB", (4, 4), (30, 30, 200))]


def test_a_conforming_peft_strategy_passes():
    check_peft(FreezeVisionFor, TinyEncoder, IMAGES, ["a red one", "a blue one"])


@pytest.mark.parametrize(
    "strategy, contract",
    [
        (CountsCalls, r"what trains depends only on the step \(exact resume\)"),
        (ReturnsNothing, "apply changes the encoder in place and returns it"),
        (DeadAdapter, "added weights receive a gradient"),
        (ThawsLater, "never trains a weight frozen after apply"),
    ],
)
def test_a_broken_peft_strategy_is_caught(strategy, contract):
    caught(contract, check_peft, strategy, TinyEncoder, IMAGES, ["a red one", "a blue one"])


# -- fusions and tasks ----------------------------------------------------------------------


class Dot(nn.Module):
    needs_tokens, out_dim = False, 8

    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(8, 8)

    def score(self, image: Modality, text: Modality) -> torch.Tensor:
        return self.proj(image.pooled) @ text.pooled.T

    def fuse(self, image: Modality, text: Modality) -> torch.Tensor:
        return (self.proj(image.pooled) * text.pooled)[:, :4]  # narrower than out_dim


def test_a_broken_fusion_is_caught():
    assert "(3, 4), out_dim is 8" in caught(r"fuse gives \[N, out_dim\]", check_fusion, Dot(), 8)


def test_a_broken_task_is_caught():
    from mmreg.metrics import AccuracyEvaluation
    from mmreg.tasks import FusedHeadTask

    class Misnamed(AccuracyEvaluation):
        def __init__(self, task):
            super().__init__(task, "accuracy")
            self.names = ("acc",)

    class Size(FusedHeadTask):
        target = "label"
        needs_fields = frozenset({"image", "caption", "label"})

        def build_head(self, width, dataset, encoder):
            self.classes = list(dataset.classes)
            return nn.Linear(width, len(self.classes))

        def targets(self, samples):
            return {"labels": torch.tensor([s.label for s in samples])}

        def evaluations(self, model):
            return [Misnamed(self)]

    host = load_plugins()
    host.registry("tasks").add("size", Size, plugin="test")
    experiment = {
        "task": "size", "loss": {"ce": {}}, "fusion": {"name": "concat"}, "model": {"dim": 16}, "train": {"batch_size": 4},
        "encoder": {"name": "clip", "hidden_size": 16, "projection_dim": 16}, "dataset": {"name": "shapes", "train_size": 8, "val_size": 4},
    }  # fmt: skip
    seen = caught(METRICS_NAMED, check_task, experiment, host)
    assert "names ['acc'], computed ['accuracy']" in seen


class Diagonal(Evaluation):
    """The mean score of matched pairs (the diagonal) and of every other pair, over the whole split."""

    names = ("matched", "unmatched")

    def __init__(self) -> None:
        self.scores: list[torch.Tensor] = []

    def update(self, model, features, batch) -> None:
        self.scores.append(model.fusion.score(features.image, features.text))

    def compute(self) -> dict[str, float]:
        matched = torch.cat([s.diagonal() for s in self.scores])
        every = torch.cat([s.flatten() for s in self.scores])
        return {"matched": matched.mean().item(), "unmatched": ((every.sum() - matched.sum()) / (len(every) - len(matched))).item()}


class MatchingParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    top: int = Field(1, ge=1, description="captions listed per image by predict")


class Matching(Task):
    """A conforming task with a parameter, a headline, a description and predictions."""

    headline = "matched"

    def __init__(self, *, top: int = 1, settings=None) -> None:
        super().__init__(settings=settings)
        self.top, self.evaluation = top, Diagonal()

    def evaluations(self, model):
        self.evaluation = Diagonal()
        return [self.evaluation] if "scores" in model.needs else []

    def describe(self) -> dict:
        return {"batches": len(self.evaluation.scores)}

    def predict(self, model, pixels, texts, top_k):
        tokens = model.encoder.tokenize(list(texts))
        scores = model.fusion.score(model.encode_images(pixels["pixel_values"]), model.encode_texts(tokens["input_ids"], tokens["attention_mask"]))
        best = scores.topk(min(top_k, self.top, len(texts)), dim=-1)
        return [[{"text": texts[j], "score": v} for j, v in zip(row, values, strict=True)]
                for row, values in zip(best.indices.tolist(), best.values.tolist(), strict=True)]  # fmt: skip


class DescribesTensors(Matching):  # the summary cannot hold a tensor
    def describe(self) -> dict:
        return {"scores": self.evaluation.scores[0]}


class WrongHeadline(Matching):  # names a metric it never computes
    headline = "recall@1"


class LowerUnknown(Matching):
    lower_is_better = frozenset({"loss"})


class PredictsTooMany(Matching):  # ignores top_k
    def predict(self, model, pixels, texts, top_k):
        return [[{"text": t} for t in texts] for _ in texts]


class PredictFails(Matching):  # refuses the very texts the task reads
    def predict(self, model, pixels, texts, top_k):
        raise ConfigError("give exactly one caption")


class BadDefault(BaseModel):  # pydantic does not check a default against its own constraint
    model_config = ConfigDict(extra="forbid")

    top: int = Field(0, ge=1)


def check_matching(task: type[Task], params: type[BaseModel] = MatchingParams) -> None:
    host = load_plugins()
    host.registry("tasks").add("matching", task, plugin="test", params=params)
    experiment = {
        "task": {"name": "matching"}, "loss": {"infonce": {}}, "fusion": {"name": "none"}, "model": {"dim": 16}, "train": {"batch_size": 4},
        "encoder": {"name": "clip", "hidden_size": 16, "projection_dim": 16}, "dataset": {"name": "shapes", "train_size": 8, "val_size": 4},
    }  # fmt: skip
    check_task(experiment, host)


def test_a_conforming_task_passes():
    check_matching(Matching)


@pytest.mark.parametrize(
    "task, params, contract, seen",
    [
        (DescribesTensors, MatchingParams, DESCRIBE_JSON, "Tensor is not JSON serializable"),
        (WrongHeadline, MatchingParams, "headline names a metric its evaluations compute", "headline 'recall@1', computed ['matched', 'unmatched']"),
        (LowerUnknown, MatchingParams, "lower_is_better names metrics its evaluations compute", "['loss'] not among"),
        (PredictsTooMany, MatchingParams, "predict gives at most top_k JSON-able dicts per image", "image 0 got"),
        (PredictFails, MatchingParams, "predict works on validation images and their texts", "ConfigError: give exactly one caption"),
        (Matching, BadDefault, "its parameters accept their own defaults", "parameter 'top'"),
    ],
)
def test_a_broken_task_contract_is_caught(task, params, contract, seen):
    assert seen in caught(re.escape(contract), check_matching, task, params)
