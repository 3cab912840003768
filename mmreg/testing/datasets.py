"""The dataset contract: both splits present and disjoint, fields as declared, deterministic from the seed."""

from __future__ import annotations

from collections.abc import Callable

from PIL import Image

from ..components import Dataset, Sample
from ..errors import DataError
from .contract import expect, fingerprint

REQUIRED = ("image", "caption")


def check_dataset(make: Callable[[int], Dataset], *, seed: int = 0, limit: int = 256) -> None:
    """``make(seed)`` builds the dataset (e.g. ``lambda seed: registry.build(name, params, seed=seed)``).

    Checks: ``train`` and ``val`` are non-empty and an unknown split raises DataError; the
    instance's ``fields`` are within the class's; each sample (the first ``limit`` of each split)
    carries every declared field (a PIL image, a non-empty caption, a label indexing ``classes``,
    question and answer strings); ``texts`` agrees with the samples; no sample appears in both
    splits; building again from the same seed gives the same samples.
    Raises ContractViolation naming the broken contract."""
    dataset = make(seed)
    who = f"dataset {type(dataset).__name__}"
    fields = frozenset(dataset.fields)
    declared = frozenset(type(dataset).fields)
    expect(fields <= declared, who, "instance fields are within the class's", f"{sorted(fields - declared)} not declared on the class")
    expect(set(REQUIRED) <= fields, who, "fields include image and caption", f"fields are {sorted(fields)}")
    expect(("label" in fields) == bool(dataset.classes), who, "classes exactly when label is a field",
           f"fields {sorted(fields)}, classes {dataset.classes!r}")  # fmt: skip
    try:
        dataset.split("no-such-split")
        raised = "nothing"
    except DataError:
        raised = None
    except Exception as exc:  # the contract asks for the typed error the CLI formats
        raised = type(exc).__name__
    expect(raised is None, who, "an unknown split raises DataError", f"split('no-such-split') raised {raised}")

    prints: dict[str, list[str]] = {}
    for split in ("train", "val"):
        samples = dataset.split(split)
        expect(len(samples) > 0, who, "train and val are non-empty", f"split '{split}' has no sample")
        head = [samples[i] for i in range(min(len(samples), limit))]
        for i, sample in enumerate(head):
            _check_fields(who, sample, fields, dataset.classes, f"{split}[{i}]")
        texts = dataset.texts(split)[: len(head)]
        expect(texts == [s.caption for s in head], who, "texts() agrees with the samples", f"split '{split}' texts differ from its captions")
        prints[split] = [fingerprint(s) for s in head]
    shared = set(prints["train"]) & set(prints["val"])
    expect(not shared, who, "splits are disjoint", f"{len(shared)} samples are in both train and val")

    again = make(seed)
    for split in ("train", "val"):
        samples = again.split(split)
        redo = [fingerprint(samples[i]) for i in range(len(prints[split]))]
        expect(redo == prints[split], who, "deterministic from the seed",
               f"split '{split}' differs when built twice with seed {seed}")  # fmt: skip


def _check_fields(who: str, sample: Sample, fields: frozenset[str], classes: list[str] | None, where: str) -> None:
    expect(isinstance(sample, Sample), who, "splits hold Samples", f"{where} is {type(sample).__name__}")
    expect(isinstance(sample.image, Image.Image), who, "field image is a PIL image", f"{where} image is {type(sample.image).__name__}")
    expect(isinstance(sample.caption, str) and sample.caption.strip(), who, "field caption is a non-empty string",
           f"{where} caption is {sample.caption!r}")  # fmt: skip
    if "label" in fields:
        ok = isinstance(sample.label, int) and 0 <= sample.label < len(classes or [])
        expect(ok, who, "field label indexes classes", f"{where} label is {sample.label!r} with {len(classes or [])} classes")
    for name in ("question", "answer"):
        if name in fields:
            value = getattr(sample, name)
            expect(isinstance(value, str) and value.strip(), who, f"field {name} is a non-empty string", f"{where} {name} is {value!r}")
