"""Run under `torchrun --nproc_per_node 2`: each process takes its half of one fixed batch and
writes (to rankN.json), for the experiment as given (its losses sharded: each process scores its own
rows of the global score matrix) and again with every loss treated as unsharded (the whole matrix,
as a loss that only reads ``Step.scores`` gets), its share of the loss, the shape of the scores it
computed and the gradients DDP would average. With gather-with-grad the mean of the shares and the
gradients equal one process's loss and gradients on the whole batch."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from accelerate import PartialState

from mmreg.api import collate_for, prepare
from mmreg.config import validate

PROBES = ("fusion.match_head.0.weight", "encoder.model.vision_model.embeddings.patch_embedding.weight", "losses.infonce.log_scale")

state = PartialState(cpu=True)
out = {}
for sharded in (True, False):
    p = prepare(validate(json.loads(sys.argv[1])))
    if not sharded:
        for loss in p.model.losses.values():
            type(loss).sharded = False
        p.model.sharded = False  # as MultimodalModel decides it from its losses
    batch = collate_for(p)(list(p.train_split[:16]))
    half = 16 // state.num_processes
    local = {k: v[state.process_index * half : (state.process_index + 1) * half] for k, v in batch.items()}
    model = p.model.eval()
    step = model.step(local)
    parts = {name: loss(step) for name, loss in model.losses.items()}
    total = sum(model.loss_weights[name] * value for name, value in parts.items())
    total.backward()
    probes = {}
    for name in PROBES:
        grad = p.model.get_parameter(name).grad
        torch.distributed.all_reduce(grad)  # DDP sums, then divides by the world size
        probes[name] = (grad / state.num_processes).flatten()[:64].tolist()
    key = "sharded" if sharded else "whole"
    out[key] = {"loss": total.item(), "scores": list(step.scores.shape), "offset": step.offset, "grads": probes}
Path(f"rank{state.process_index}.json").write_text(json.dumps(out))
state.wait_for_everyone()  # both written, then the process group closed before exit (gloo threads left running can abort the exit)
state.destroy_process_group()
