"""Run under `torchrun --nproc_per_node 2` with an experiment (JSON) on a streaming dataset: each process
iterates two epochs of the training loader exactly as the trainer builds it (two DataLoader workers) and
writes to rankN.json the captions it saw per epoch and its batch count."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from accelerate import PartialState

from mmreg.api import prepare
from mmreg.config import validate
from mmreg.data import AugmentedSplit
from mmreg.streams import stream_loader


def captions(samples):
    return [s.caption for s in samples]


state = PartialState(cpu=True)
p = prepare(validate(json.loads(sys.argv[1])))
sampler, loader = stream_loader(
    AugmentedSplit(p.train_split, p.augmenters, p.exp.seed), captions, p.exp.train.batch_size, p.exp.seed,
    rank=state.process_index, world=state.num_processes, num_workers=2, pin_memory=False,
)  # fmt: skip
seen = []
for epoch in (0, 1):
    sampler.set_epoch(epoch)
    seen.append([caption for batch in loader for caption in batch])
Path(f"rank{state.process_index}.json").write_text(json.dumps({"seen": seen, "batches": len(sampler)}))
state.wait_for_everyone()  # both written, then the process group closed before exit (gloo threads left running can abort the exit)
state.destroy_process_group()
