"""Run under `torchrun --nproc_per_node 2`: each process takes its half of one fixed batch and
writes (to rankN.json) its contrastive loss and the gradients DDP would average; with gather-with-grad these
equal one process's loss and gradients on the whole batch."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from accelerate import PartialState

from mmreg.api import collate_for, prepare
from mmreg.config import validate

state = PartialState(cpu=True)
p = prepare(validate(json.loads(sys.argv[1])))
batch = collate_for(p)(list(p.train_split[:16]))
half = 16 // state.num_processes
local = {k: v[state.process_index * half : (state.process_index + 1) * half] for k, v in batch.items()}
loss, _ = p.model.eval()(local)
loss.backward()
probes = {}
for name in ("fusion.match_head.0.weight", "encoder.model.vision_model.embeddings.patch_embedding.weight"):
    grad = p.model.get_parameter(name).grad
    torch.distributed.all_reduce(grad)  # DDP sums, then divides by the world size
    probes[name] = (grad / state.num_processes).flatten()[:64].tolist()
Path(f"rank{state.process_index}.json").write_text(json.dumps({"loss": loss.item(), "grads": probes}))
