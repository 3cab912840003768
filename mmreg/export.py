"""`mmreg export`: hand a run's trained parts back to their own libraries, loadable without mmreg."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import ConfigError

if TYPE_CHECKING:
    from .plugins import PluginHost


def export_run(
    run: str | Path,
    out_dir: str | Path,
    *,
    checkpoint: str = "best",
    runs_dir: str | Path = "runs",
    host: PluginHost | None = None,
    adapters: str = "merged",
) -> dict[str, Any]:
    """Write a run's model to ``out_dir``, which must not exist yet (nothing is overwritten).

    ``out_dir/encoder/``: the encoder in its libraries' own formats, adapters merged
    into the base weights (peft's ``merge_and_unload``); for ``clip`` a transformers
    ``save_pretrained`` directory with tokenizer and image processor, for ``dual``
    ``vision/`` (timm) and ``text/`` (transformers). ``out_dir/head/``: the weights
    mmreg adds (projections, fusion, task head, temperatures) as ``model.safetensors``
    and ``config.json`` (the components and their parameters, the classes).
    ``adapters="peft"`` leaves them out of the encoder instead (its base weights as loaded) and
    writes each adapted tower's as ``out_dir/adapters/<tower>/`` in peft's format
    (``PeftModel.from_pretrained(tower, path)``, e.g. BLIP-2's language model with its LoRA).
    ``checkpoint`` is best, last or final as for ``mmreg eval``. Returns what was written.
    Raises ConfigError for an existing ``out_dir``, an ``adapters`` other than merged or peft, or an
    encoder that cannot be exported.
    """
    from safetensors.torch import save_file

    from .adapters import merge_adapters, peft_towers, unload_adapters
    from .history import load_run, rebuild_run, weights_for
    from .runs import check_destination, write_json

    if adapters not in ("merged", "peft"):
        raise ConfigError(f"adapters is '{adapters}'; give merged (folded into the weights) or peft (folders beside them)")
    out = Path(out_dir)
    if out.exists():
        raise ConfigError(f"{out} already exists; give a new directory to export into (nothing is overwritten)")
    check_destination(out.parent, "export directory's parent", "another OUT_DIR")
    run_path = load_run(run, runs_dir).path
    weights, used = weights_for(run_path, checkpoint)
    p = rebuild_run(run_path, weights, host)
    model, encoder = p.model.eval(), p.model.encoder
    wrapped = peft_towers(encoder)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        if adapters == "peft":
            for name, module in wrapped.items():
                module.save_pretrained(str(tmp / "adapters" / name), safe_serialization=True)
            unload_adapters(encoder)
        else:
            merge_adapters(encoder)
        try:
            encoder.export(tmp / "encoder")
        except NotImplementedError:
            raise ConfigError(f"encoder '{p.exp.encoder.name}' has no export to its own library's format") from None
        rest = {name: t.detach().contiguous().cpu() for name, t in model.state_dict().items() if not name.startswith("encoder.")}
        (tmp / "head").mkdir(parents=True)
        save_file(rest, str(tmp / "head" / "model.safetensors"))
        write_json(
            tmp / "head" / "config.json",
            {
                "task": p.task.name,
                "encoder": p.exp.encoder.model_dump(),
                "fusion": p.exp.fusion.model_dump(),
                "loss": {name: item.model_dump() for name, item in p.exp.loss.items()},
                "dim": p.exp.model.dim,
                "classes": p.classes,
                "tensors": sorted(rest),
            },
        )
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    merged, folders = ([], sorted(wrapped)) if adapters == "peft" else (sorted(wrapped), [])
    return {"run": str(run_path), "checkpoint": used, "out_dir": str(out), "merged_adapters": merged, "adapter_folders": folders, "encoder": p.exp.encoder.name}


__all__ = ["export_run"]
