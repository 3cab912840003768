"""PEFT on encoder towers through the peft library: per-tower method configs, target checks,
honest parameter counts, adapter files in peft's own format and merging for export."""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from torch import nn

from .components import Encoder, PeftStrategy, Tower
from .errors import ConfigError, did_you_mean
from .params import TOWER_MODES, TowerSetting

if TYPE_CHECKING:
    from peft import PeftConfig


def method_config(method: str) -> type[PeftConfig]:
    """The peft config class of a method named as peft's ``PeftType`` (``lora``, ``ia3``, ``loha``, ...).

    Only methods that adapt named sub-modules (their config has ``target_modules``)
    apply to a tower; prompt-learning methods need a language-model head.
    """
    from peft.mapping import PEFT_TYPE_TO_CONFIG_MAPPING

    methods = _tower_methods(PEFT_TYPE_TO_CONFIG_MAPPING)
    key = method.lower()
    if key not in methods:
        raise ConfigError(
            f"peft.method '{method}' is not a peft method that adapts tower modules{did_you_mean(key, methods)} "
            f"(allowed: {', '.join(sorted(methods))})"
        )
    return methods[key]


def _tower_methods(mapping: Mapping[Any, type[PeftConfig]]) -> dict[str, type[PeftConfig]]:
    from peft import PromptLearningConfig

    return {
        str(kind.value).lower(): cls
        for kind, cls in mapping.items()
        if "target_modules" in {f.name for f in dataclasses.fields(cls)}
        and not issubclass(cls, PromptLearningConfig)
        and str(kind.value) not in ("ADAPTION_PROMPT", "TRAINABLE_TOKENS", "XLORA")  # need a causal LM, not a tower
    }


def check_fields(method: str, fields: Mapping[str, Any], where: str) -> None:
    """Refuse, naming ``where`` (``peft.vision``), a field the method's config lacks or a rank below 1."""
    cls = method_config(method)
    names = [f.name for f in dataclasses.fields(cls)]
    for key in fields:
        if key not in names:
            raise ConfigError(f"{where}.{key}: {cls.__name__} has no field '{key}'{did_you_mean(key, names)}")
    rank = fields.get("r")
    if rank is not None and (isinstance(rank, bool) or not isinstance(rank, int) or rank < 1):
        raise ConfigError(f"{where}.r must be a whole number of at least 1 (got {rank!r}); the docs use 8 or 16")


def check_setting(method: str, value: TowerSetting, where: str) -> TowerSetting:
    """A tower's setting: a table of the method's config fields, or ``full``/``freeze``."""
    if isinstance(value, str):
        if value not in TOWER_MODES:
            raise ConfigError(f"{where} is '{value}'; give a table of {method} settings, or one of: {', '.join(TOWER_MODES)}")
        return value
    check_fields(method, value, where)
    return value


def target_names(module: nn.Module) -> list[str]:
    """The names (last dotted part) of the leaf modules holding weights: what ``target_modules`` may name."""
    return sorted(
        {
            name.rpartition(".")[2]
            for name, m in module.named_modules()
            if name and next(m.children(), None) is None and next(m.parameters(recurse=False), None) is not None
        }
    )


def default_targets(module: nn.Module, candidates: tuple[tuple[str, ...], ...]) -> tuple[str, ...]:
    """The first candidate set whose every name is a module of ``module``: an encoder's default
    LoRA targets for a tower whose family is known only once built (timm ViT vs CNN)."""
    present = set(target_names(module))
    for names in candidates:
        if set(names) <= present:
            return names
    return ()


def make_config(method: str, fields: Mapping[str, Any], tower: Tower, module: nn.Module, where: str) -> PeftConfig:
    """The peft config for one tower; unset ``target_modules`` take the tower's declared defaults.

    Raises ConfigError naming ``where`` when a target is not a module of the tower
    (listing those that are) or when peft refuses the settings.
    """
    cls = method_config(method)
    fields = dict(fields)
    if fields.get("target_modules") is None:
        fields["target_modules"] = list(tower.targets)
        if "feedforward_modules" in {f.name for f in dataclasses.fields(cls)} and fields.get("feedforward_modules") is None:
            fields["feedforward_modules"] = []  # IA3 scales these inputs; none unless asked (peft cannot guess for a tower)
    targets = fields["target_modules"]
    present = target_names(module)
    if not targets:
        raise ConfigError(f"{where}.target_modules: this tower declares no default targets; name some (modules: {', '.join(present)})")
    if isinstance(targets, str):  # peft reads a string as a regex over full module names
        if not any(re.fullmatch(targets, name) for name, _ in module.named_modules()):
            raise ConfigError(f"{where}.target_modules: the regex '{targets}' matches no module of the tower")
    else:
        missing = [t for t in targets if t not in present]
        if missing:
            raise ConfigError(
                f"{where}.target_modules: '{missing[0]}' is not a module of this tower{did_you_mean(missing[0], present)} "
                f"(modules: {', '.join(present)})"
            )
    try:
        return cls(**fields)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: peft refuses these {method} settings: {exc}") from exc


def encoder_towers(encoder: Encoder, wanted: list[str] | tuple[str, ...], where: str) -> dict[str, Tower]:
    """The declared towers named in ``wanted``; ConfigError when the encoder lacks one."""
    towers = encoder.towers()
    for name in wanted:
        if name not in towers:
            have = ", ".join(towers) or "none"
            raise ConfigError(f"{where}: this encoder has no '{name}' tower (towers: {have}); use --peft full")
    return {name: towers[name] for name in wanted}


class TowerAdapters(PeftStrategy):
    """A peft method per tower (``get_peft_model`` on the tower module), or a tower left full or frozen.

    The base weights of an adapted tower are frozen by peft; everything outside
    the towers (projections, fusion, head, temperatures) keeps training.
    Source: the peft library (Mangrulkar et al., 2022); LoRA: Hu et al., 2021.
    """

    def __init__(self, method: str, settings: Mapping[str, TowerSetting], where: str = "peft") -> None:
        self.method, self.settings, self.where = method, dict(settings), where

    def apply(self, encoder: Encoder) -> Encoder:
        from peft import get_peft_model

        towers = encoder_towers(encoder, list(self.settings), self.where)
        for name, value in self.settings.items():
            tower = towers[name]
            module = tower.module(encoder)
            if value == "freeze":
                module.requires_grad_(False)
            elif value != "full":
                config = make_config(self.method, value, tower, module, f"{self.where}.{name}")  # type: ignore[arg-type]
                with warnings.catch_warnings():
                    # peft asks transformers 5 for is_gradient_checkpointing by its deprecated name: nothing for the user to do
                    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
                    wrapped = get_peft_model(module, config)
                tower.replace(encoder, wrapped)
        return encoder


def peft_towers(encoder: Encoder) -> dict[str, Any]:
    """The towers now wrapped by peft (``PeftModel``), by name."""
    from peft import PeftModel

    return {name: m for name, t in encoder.towers().items() if isinstance(m := t.module(encoder), PeftModel)}


def parameter_counts(model: nn.Module, encoder: Encoder) -> dict[str, Any]:
    """Total and trainable parameters, the trainable percentage, and the same per tower.

    A peft-wrapped tower is counted by peft's own ``get_nb_trainable_parameters``
    (which knows quantised weights), so the figures equal what peft reports.
    """
    wrapped = peft_towers(encoder)
    inside = {id(p) for m in wrapped.values() for p in m.parameters()}
    total = trainable = 0
    for p in model.parameters():
        if id(p) not in inside:
            total += p.numel()
            trainable += p.numel() if p.requires_grad else 0
    towers: dict[str, dict[str, int]] = {}
    for name, tower in encoder.towers().items():
        module = tower.module(encoder)
        if name in wrapped:
            tower_trainable, tower_total = module.get_nb_trainable_parameters()
            total, trainable = total + tower_total, trainable + tower_trainable
        else:
            tower_total = sum(p.numel() for p in module.parameters())
            tower_trainable = sum(p.numel() for p in module.parameters() if p.requires_grad)
        towers[name] = {"parameters": tower_total, "trainable_parameters": tower_trainable}
    return {
        "parameters": total,
        "trainable_parameters": trainable,
        "trainable_percent": round(100 * trainable / max(total, 1), 4),
        "towers": towers,
    }


def save_adapters(encoder: Encoder, directory: Path) -> list[str]:
    """Write each peft-wrapped tower's adapter as ``directory/<tower>/`` in peft's own format
    (``adapter_config.json`` + ``adapter_model.safetensors``), so ``PeftModel.from_pretrained(tower, path)``
    loads it without mmreg. The directory is built beside and renamed into place. Returns the towers written."""
    wrapped = peft_towers(encoder)
    if not wrapped:
        return []
    tmp = directory.with_name(f".{directory.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    for name, module in wrapped.items():
        module.save_pretrained(str(tmp / name), safe_serialization=True)
    old = directory.with_name(f".{directory.name}.{os.getpid()}.old")
    if directory.exists():
        os.replace(directory, old)
    os.replace(tmp, directory)
    shutil.rmtree(old, ignore_errors=True)
    return sorted(wrapped)


def merge_adapters(encoder: Encoder) -> None:
    """Fold every adapter into its tower's base weights (peft's ``merge_and_unload``), in place."""
    for name, module in peft_towers(encoder).items():
        encoder.towers()[name].replace(encoder, module.merge_and_unload())


__all__ = [
    "TowerAdapters",
    "check_setting",
    "default_targets",
    "encoder_towers",
    "make_config",
    "merge_adapters",
    "method_config",
    "parameter_counts",
    "save_adapters",
    "target_names",
]
