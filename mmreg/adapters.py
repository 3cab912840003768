"""PEFT on encoder towers through the peft library: per-tower method configs, target checks,
honest parameter counts, adapter files in peft's own format (with the weights trained outside
them) and merging for export."""

from __future__ import annotations

import copy
import dataclasses
import os
import re
import shutil
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
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
    """Refuse, naming ``where`` (``peft.vision``), a field the method's config lacks, a rank below 1
    or a dropout probability outside [0, 1) (torch's ``nn.Dropout`` would refuse it mid-build)."""
    cls = method_config(method)
    names = [f.name for f in dataclasses.fields(cls)]
    for key in fields:
        if key not in names:
            raise ConfigError(f"{where}.{key}: {cls.__name__} has no field '{key}'{did_you_mean(key, names)}")
    rank = fields.get("r")
    if rank is not None and (isinstance(rank, bool) or not isinstance(rank, int) or rank < 1):
        raise ConfigError(f"{where}.r must be a whole number of at least 1 (got {rank!r}); the docs use 8 or 16")
    for key, value in fields.items():
        if "dropout" in key and (isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < 1):
            raise ConfigError(f"{where}.{key} is a dropout probability: give a number from 0 to below 1 (got {value!r}), e.g. 0.1")


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


# Config fields that name modules or layers of the model: the probe config of one module type leaves them unset (_refusal).
_NAMING_FIELDS = (
    "exclude_modules", "modules_to_save", "layers_to_transform", "layers_pattern", "rank_pattern", "alpha_pattern", "target_parameters"
)  # fmt: skip
_PROBE = "probe"  # the name of the one module a probe wraps


def make_config(method: str, fields: Mapping[str, Any], tower: Tower, module: nn.Module, where: str) -> PeftConfig:
    """The peft config for one tower; unset ``target_modules`` take the tower's declared defaults.

    Raises ConfigError naming ``where`` when a target is not a module of the tower, or is
    of a type the method cannot wrap (naming the type, the types peft's method supports
    and the tower's modules it can wrap), or when peft refuses the settings.
    """
    cls = method_config(method)
    fields = dict(fields)
    names = {f.name for f in dataclasses.fields(cls)}
    if fields.get("target_modules") is None:
        fields["target_modules"] = list(tower.targets)
        if "feedforward_modules" in names and fields.get("feedforward_modules") is None:
            fields["feedforward_modules"] = []  # IA3 scales these inputs; none unless asked (peft cannot guess for a tower)
    probe_fields = {k: v for k, v in fields.items() if k not in _NAMING_FIELDS} | {"target_modules": [_PROBE]}
    if "feedforward_modules" in names:
        probe_fields["feedforward_modules"] = []  # IA3 wraps the same types either way
    try:
        config, probe = cls(**fields), cls(**probe_fields)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: peft refuses these {method} settings: {exc}") from exc
    targets = fields["target_modules"]
    refusals: dict[type[nn.Module], str | None] = {}
    if not targets:
        raise ConfigError(
            f"{where}.target_modules: this tower declares no default targets; name some "
            f"(modules {method} can adapt: {', '.join(_adaptable_names(probe, module, refusals))})"
        )
    if isinstance(targets, str):  # peft reads a string as a regex over full module names
        matched = [(f"'{name}' (matched by the regex '{targets}')", m) for name, m in module.named_modules() if re.fullmatch(targets, name)]
        if not matched:
            raise ConfigError(f"{where}.target_modules: the regex '{targets}' matches no module of the tower")
    else:
        present = target_names(module)
        missing = [t for t in targets if t not in present]
        if missing:
            raise ConfigError(
                f"{where}.target_modules: '{missing[0]}' is not a module of this tower{did_you_mean(missing[0], present)} "
                f"(modules {method} can adapt: {', '.join(_adaptable_names(probe, module, refusals))})"
            )
        matched = [(f"'{name.rpartition('.')[2]}'", m) for name, m in module.named_modules() if name.rpartition(".")[2] in targets]
    for what, target in matched:
        if refused := _refusal(probe, target, refusals):
            supported = _supported(refused)
            raise ConfigError(
                f"{where}.target_modules: {what} is a {_type_name(type(target))}, which {method} cannot adapt"
                + (f" (peft's {method} adapts {supported})" if supported else "")
                + f"; modules of this tower it can adapt: {', '.join(_adaptable_names(probe, module, refusals)) or 'none'}"
            )
    return config


def _adaptable_names(probe: PeftConfig, module: nn.Module, refusals: dict[type[nn.Module], str | None]) -> list[str]:
    """The ``target_names`` of ``module`` whose every module the probe config's method can wrap."""
    kinds: dict[str, dict[type[nn.Module], nn.Module]] = {}
    for name, m in module.named_modules():
        kinds.setdefault(name.rpartition(".")[2], {}).setdefault(type(m), m)
    return [name for name in target_names(module) if not any(_refusal(probe, m, refusals) for m in kinds[name].values())]


def _refusal(probe: PeftConfig, target: nn.Module, refusals: dict[type[nn.Module], str | None]) -> str | None:
    """peft's own refusal to wrap modules of ``target``'s type with ``probe``'s method, or None.

    peft checks a module's type only when it wraps it (``_create_new_module`` of each
    tuner in ``peft.tuners``), halfway through a tower. So one module of each type is
    wrapped alone, as a copy whose weights are on the meta device (no data is copied),
    and peft's "Target module ... is not supported" is kept, once per type in
    ``refusals``. Any other error is left for the real wrapping to report.
    """
    kind = type(target)
    if kind not in refusals:
        from peft.mapping import PEFT_TYPE_TO_TUNER_MAPPING

        refusals[kind] = None
        try:
            holder = nn.Module()
            holder.add_module(_PROBE, _meta_copy(target))
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the real wrapping warns the user; a probe's warnings say nothing new
                tuner = PEFT_TYPE_TO_TUNER_MAPPING[probe.peft_type]
                tuner(holder, copy.deepcopy(probe), adapter_name="default", low_cpu_mem_usage=True)
        except Exception as exc:  # noqa: BLE001 - only peft's type check is read; the rest (a weight that cannot be
            # copied to the meta device, an initialisation that needs data) is the real wrapping's to say
            if re.match(r"Target module .*\bnot (supported|a plain)\b", str(exc), re.DOTALL):  # not "Target modules ... not found"
                refusals[kind] = " ".join(str(exc).split())
    return refusals[kind]


def _supported(refusal: str) -> str:
    """The module types a peft refusal names as supported, in its own words: "... Currently, only
    `torch.nn.Linear`, `torch.nn.Conv2d`, and `Conv1D` are supported." gives "torch.nn.Linear,
    torch.nn.Conv2d, and Conv1D"; "" when it names none."""
    found = re.search(r"\bonly (.*)", refusal, re.IGNORECASE)
    if found is None:
        return ""
    text = re.sub(r"^(the following modules are supported:|adapters for)\s*", "", found[1])
    return re.sub(r",?\s*(is|are) supported.*$", "", text).replace("`", "").rstrip(". ")


def _meta_copy(module: nn.Module) -> nn.Module:
    """A copy of ``module`` with every weight and buffer on the meta device: its structure, not its data."""
    memo: dict[int, Any] = {id(p): nn.Parameter(torch.empty_like(p, device="meta"), p.requires_grad) for p in module.parameters()}
    memo.update({id(b): torch.empty_like(b, device="meta") for b in module.buffers()})
    return copy.deepcopy(module, memo)


def _type_name(kind: type) -> str:
    """``torch.nn.LayerNorm`` for torch's own layers, else the type's module and name."""
    return f"torch.nn.{kind.__name__}" if getattr(nn, kind.__name__, None) is kind else f"{kind.__module__}.{kind.__qualname__}"


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

        present = encoder.towers()  # "full" on a tower the encoder lacks leaves nothing to do
        settings = {name: value for name, value in self.settings.items() if value != "full" or name in present}
        towers = encoder_towers(encoder, list(settings), self.where)
        for name, value in settings.items():
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


OUTSIDE = "trained_outside.safetensors"  # in the adapters directory, beside one directory per tower


def outside_adapters(model: nn.Module, encoder: Encoder) -> dict[str, torch.Tensor]:
    """What a base checkpoint plus the towers' adapter files lack to rebuild ``model``, by the
    names of ``model.state_dict()`` (those of ``model.safetensors``).

    That is every weight trained outside peft's adapters (an encoder's own projections and
    logit scale, a tower left ``full``), every weight of ``model`` outside ``encoder`` (the
    projections, fusion, task head and loss temperatures mmreg adds: no base checkpoint holds
    them, trained or not) and running statistics (BatchNorm's), which training updates in
    adapted and frozen towers alike. What trains inside a peft-wrapped tower (adapters, and
    ``modules_to_save`` or biases where configured) is peft's own file's, so it is left out.
    """
    adapted = {id(p) for m in peft_towers(encoder).values() for p in m.parameters()}
    own = {id(t) for t in (*encoder.parameters(), *encoder.buffers())}
    stats = {
        key
        for name, m in model.named_modules()
        if getattr(m, "track_running_stats", False)
        for key, _ in m.named_buffers(prefix=name, recurse=False)
    }
    return {
        key: t.detach().cpu().clone().contiguous()  # a copy each: tied weights share no storage in the file
        for key, t in model.state_dict(keep_vars=True).items()
        if (isinstance(t, nn.Parameter) and t.requires_grad and id(t) not in adapted) or id(t) not in own or key in stats
    }


def save_adapters(model: nn.Module, directory: Path) -> list[str]:
    """Write each peft-wrapped tower's adapter as ``directory/<tower>/`` in peft's own format
    (``adapter_config.json`` + ``adapter_model.safetensors``), so ``PeftModel.from_pretrained(tower, path)``
    loads it without mmreg, and ``directory/trained_outside.safetensors``: what else the run changed
    from its base checkpoint (``outside_adapters``), so base + adapters + that file is the run.

    ``model`` is the run's composed model (``mmreg.model.MultimodalModel``, whose ``encoder``
    holds the towers). The directory is built beside and renamed into place. Returns the towers written.
    """
    from safetensors.torch import save_file

    encoder = model.encoder
    wrapped = peft_towers(encoder)
    if not wrapped:
        return []
    outside = outside_adapters(model, encoder)
    tmp = directory.with_name(f".{directory.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    for name, module in wrapped.items():
        module.save_pretrained(str(tmp / name), safe_serialization=True)
    save_file(outside, str(tmp / OUTSIDE), metadata={"format": "pt"})
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


def unload_adapters(encoder: Encoder) -> None:
    """Take every adapter out, leaving each tower's base weights as they were (peft's ``unload``), in place."""
    for name, module in peft_towers(encoder).items():
        encoder.towers()[name].replace(encoder, module.unload())


__all__ = [
    "OUTSIDE",
    "TowerAdapters",
    "check_setting",
    "default_targets",
    "encoder_towers",
    "make_config",
    "merge_adapters",
    "method_config",
    "outside_adapters",
    "parameter_counts",
    "save_adapters",
    "target_names",
    "unload_adapters",
]
