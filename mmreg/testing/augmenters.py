"""The augmenter contract: deterministic for a given rng, input left alone, other fields kept, picklable."""

from __future__ import annotations

import pickle
from collections.abc import Sequence

import numpy as np
from PIL import Image

from ..components import Augmenter, Sample
from .contract import ContractViolation, expect, fingerprint, scramble_global_rngs

KEPT = ("label", "question", "answer", "answers", "answer_type", "question_id")  # an augmenter changes image, caption, views


def _rng(seed: int, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, index])


def check_augmenter(augmenter: Augmenter, samples: Sequence[Sample], *, seed: int = 0) -> None:
    """For each sample: the result is a ``Sample`` depending only on the ``rng`` handed in (not on
    Python's, NumPy's or torch's global generators); the input sample is left unchanged (augmenters
    run on training samples only, so one that edits its input in place would change data shared
    with validation and the next epoch); fields other than image, caption and views are kept;
    ``views`` holds two images exactly when the augmenter declares ``gives_views``. A pickled copy
    (as DataLoader workers receive it) gives the same results.

    Raises ContractViolation naming the broken contract."""
    who = f"augmenter {type(augmenter).__name__}"
    try:
        clone = pickle.loads(pickle.dumps(augmenter))
    except Exception as exc:  # any failure to pickle: DataLoader workers could not receive it
        raise ContractViolation(who, "picklable for DataLoader workers", f"{type(exc).__name__}: {exc}") from exc
    for i, sample in enumerate(samples):
        before = fingerprint(sample)
        scramble_global_rngs(i)
        out = augmenter(sample, _rng(seed, i))
        expect(isinstance(out, Sample), who, "returns a Sample", f"it returned {type(out).__name__}")
        expect(fingerprint(sample) == before, who, "never changes its input (validation data stays as it is)",
               f"sample {i} was changed in place")  # fmt: skip
        scramble_global_rngs(i + 1000)
        again = augmenter(sample, _rng(seed, i))
        expect(fingerprint(again) == fingerprint(out), who, "deterministic for a given rng",
               f"sample {i} came out differently from the same rng (global random state changed between calls)")  # fmt: skip
        changed = [f for f in KEPT if getattr(out, f) != getattr(sample, f)]
        expect(not changed, who, "keeps the sample's other fields", f"sample {i}: {changed} changed")
        expect(isinstance(out.image, Image.Image), who, "gives a PIL image", f"sample {i}: image is {type(out.image).__name__}")
        if augmenter.gives_views:
            ok = out.views is not None and len(out.views) == 2 and all(isinstance(v, Image.Image) for v in out.views)
            expect(ok, who, "gives_views sets two views", f"sample {i}: views is {out.views!r}")
        else:
            expect(out.views == sample.views, who, "views only with gives_views",
                   f"sample {i}: views set without declaring gives_views = True")  # fmt: skip
        copied = clone(sample, _rng(seed, i))
        expect(fingerprint(copied) == fingerprint(out), who, "picklable for DataLoader workers",
               f"a pickled copy gave a different sample {i}")  # fmt: skip
