"""Run under `torchrun --nproc_per_node 2`: each process takes its half of one fixed batch of 32 as
micro-batches of 4 (train.grad_accum = 4), trains them as one batch (``mmreg.accumulate.CachedBatch``:
every process's features gathered into the global 32 x 32 contrast), averages the gradients as DDP
would, and writes (to rankN.json) its share of the loss and probes of the gradients."""

from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path

from accelerate import PartialState

from mmreg.accumulate import CachedBatch, average_gradients
from mmreg.api import collate_for, prepare
from mmreg.config import validate

state = PartialState(cpu=True)
exp, probes = json.loads(sys.argv[1]), json.loads(sys.argv[2])
p = prepare(validate(exp))
model = p.model.eval()  # no dropout: the one-process reference draws its masks in another order
batch = collate_for(p)(list(p.train_split[:32]))
half = 32 // state.num_processes
local = {k: v[state.process_index * half : (state.process_index + 1) * half] for k, v in batch.items()}
micro = [{k: v[i : i + 4] for k, v in local.items()} for i in range(0, half, 4)]
cached = CachedBatch(model, contextlib.nullcontext)
loss, _ = cached.loss(micro)
cached.backward(loss, lambda value: value.backward())
average_gradients([q for q in model.parameters() if q.requires_grad])
grads = {name: model.get_parameter(name).grad.flatten()[:64].tolist() for name in probes}
Path(f"rank{state.process_index}.json").write_text(json.dumps({"loss": loss.item(), "grads": grads}))
state.wait_for_everyone()  # both written, then the process group closed before exit (gloo threads left running can abort the exit)
state.destroy_process_group()
