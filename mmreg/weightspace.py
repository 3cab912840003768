"""Fine-tuning in weight space: WiSE-FT (Wortsman et al., CVPR 2022; mlfoundations/wise-ft), the
interpolation of a run's starting and fine-tuned weights, and model soups (Wortsman et al., ICML
2022; mlfoundations/model-soups), the uniform or greedy average of runs of one architecture. Each
result is written as a run directory that `eval`, `predict`, `export` and `runs` read like any run."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import ConfigError

if TYPE_CHECKING:
    import torch

    from .api import Prepared
    from .plugins import PluginHost

State = dict[str, "torch.Tensor"]
ALPHAS = tuple(i / 10 for i in range(11))


def snapshot(model: torch.nn.Module) -> State:
    """Every tensor of ``model.state_dict()``, detached and copied."""
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def check_same(a: State, b: State, what: str) -> None:
    """Refuse (ConfigError, one line) weights that do not correspond: other tensor names or shapes."""
    if a.keys() != b.keys():
        only = sorted(a.keys() ^ b.keys())
        raise ConfigError(f"{what}: the weights do not correspond ({len(only)} tensors in one only, e.g. {only[0]}); give runs of one architecture")
    for key in a:
        if a[key].shape != b[key].shape:
            raise ConfigError(f"{what}: tensor {key} is {tuple(a[key].shape)} in one and {tuple(b[key].shape)} in the other; give runs of one architecture")


def interpolate(start: State, end: State, alpha: float) -> State:
    """θ(α) = (1 − α)·``start`` + α·``end`` for every floating-point tensor (WiSE-FT's weight-space
    ensemble); integer tensors (counters such as BatchNorm's ``num_batches_tracked``) are ``end``'s.
    α = 0 and 1 give the two exactly."""
    if alpha == 0:
        return {k: v.clone() for k, v in start.items()}
    if alpha == 1:
        return {k: v.clone() for k, v in end.items()}
    return {k: (start[k] + alpha * (end[k] - start[k]) if end[k].is_floating_point() else end[k].clone()) for k in end}


def average(states: Sequence[State]) -> State:
    """The uniform soup: the mean of each floating-point tensor over ``states`` (integer tensors the first's)."""
    import torch

    return {k: (torch.stack([s[k] for s in states]).mean(0) if v.is_floating_point() else v.clone()) for k, v in states[0].items()}


def merged_weights(run: Path, weights: Sequence[Path | None], host: PluginHost) -> tuple[Prepared, list[State]]:
    """A run's model rebuilt once, and a copy of its weights for each file of ``weights`` (None: as
    the run began), with any PEFT adapters folded into the weights they adapt (peft's
    ``merge_and_unload``): interpolating or averaging low-rank factors is not interpolating what they
    adapt (B·A is bilinear), the merged weights are. Returns the prepared run (merged, as the last
    file left it) and the states in the order of ``weights``."""
    import copy

    from .adapters import merge_adapters, peft_towers
    from .history import load_weights, rebuild_start

    p = rebuild_start(run, host)
    adapted = bool(peft_towers(p.model.encoder))
    as_built = snapshot(p.model) if len(weights) > 1 else None
    states = []
    for i, file in enumerate(weights):
        if i:
            p.model.load_state_dict(as_built)  # type: ignore[arg-type]
        if file is not None:
            load_weights(p, run, file)
        model = copy.deepcopy(p.model) if adapted and i < len(weights) - 1 else p.model  # merging changes the towers
        if adapted:
            merge_adapters(model.encoder)
        states.append(snapshot(model))
    return p, states


def as_written(p: Prepared) -> Prepared:
    """``p`` with the experiment its merged weights rebuild from: adapters folded in, the towers full."""
    from .config import Component

    if p.exp.peft.name == "full" or not p.exp.peft.name:
        return p
    p.exp = p.exp.model_copy(update={"peft": Component(name="full")})
    return p


class Scorer:
    """The validation split and the run's evaluation sets, scored for any weights loaded into ``p.model``."""

    def __init__(self, p: Prepared, host: PluginHost, device: torch.device) -> None:
        from .data import Collate, make_loader
        from .evalsets import set_experiments, set_parts

        self.p, self.device = p, device
        size, seed = p.exp.train.eval_batch_size, p.exp.seed
        self.val = make_loader(p.val_split, Collate(p.model.encoder, p.task), size, shuffle=False, seed=seed)  # type: ignore[arg-type]
        self.sets = [
            (name, task, make_loader(samples, Collate(p.model.encoder, task), size, shuffle=False, seed=seed))  # type: ignore[arg-type]
            for name, task, samples in set_parts(p, set_experiments(p.exp, host), host)
        ]
        p.model.to(device)

    def __call__(self, state: State) -> dict[str, float]:
        from .evalsets import score_sets
        from .train import evaluate

        self.p.model.load_state_dict(state)
        return {**evaluate(self.p.model, self.val, self.device), **score_sets(self.p.model, self.sets, self.device)}


def headline(p: Prepared, metric: str | None) -> tuple[str, bool]:
    """The metric that chooses (``metric``, else the run's: ``train.metric`` or the task's headline) and whether higher is better."""
    from .results import plain

    name = metric or p.exp.train.metric or p.task.headline
    return name, plain(name).rpartition("/")[2] not in p.task.lower_is_better


def write_derived(p: Prepared, parent: Path, state: State, name: str, summary: Mapping[str, Any]) -> Path:
    """A run directory, beside ``parent``, for weights made from runs: the parent's config (renamed), classes,
    encoder preprocessing and versions, ``model.safetensors`` and ``summary.json``."""
    from .config import write_file
    from .runs import create_run_dir, save_weights, write_json

    out = create_run_dir(parent.parent, name, name)  # beside its parent
    write_file(p.exp.model_copy(update={"name": out.name, "runs_dir": str(parent.parent)}), out / "config.toml")
    for extra in ("classes.json", "versions.json", "encoder"):
        source = parent / extra
        if source.is_dir():
            shutil.copytree(source, out / extra)
        elif source.is_file():
            shutil.copy2(source, out / extra)
    p.model.load_state_dict(state)
    save_weights(p.model, out / "model.safetensors")
    write_json(out / "summary.json", {**summary, "run_dir": str(out)})
    return out


def wise(
    run: str | Path,
    *,
    alphas: Sequence[float] = ALPHAS,
    alpha: float | None = None,
    metric: str | None = None,
    checkpoint: str = "best",
    name: str | None = None,
    runs_dir: str | Path = "runs",
    device: str = "auto",
    host: PluginHost | None = None,
    plot: bool = True,
) -> dict[str, Any]:
    """WiSE-FT of a run: θ(α) = (1 − α)·θ_start + α·θ_fine-tuned for each α of ``alphas``, θ_start the
    weights the run began from (rebuilt as it built them, seeded: the pretrained encoder and the
    heads as initialised) and θ_fine-tuned its ``checkpoint``; each scored on the validation split
    and every evaluation set. The chosen α (``alpha``, else the best by ``metric``, else the run's
    deciding metric) is written as a new run directory (``name``, default RUN-wise-α) with the α,
    both parents and the table in its summary, and ``wise.png``: each set's metric against the
    validation one over α, as the paper plots them.

    Returns ``{"run_dir", "alpha", "metric", "rows": [{"alpha", **metrics}], "parents"}``. Raises
    ConfigError for an α outside [0, 1] or weights that do not fit the rebuilt model. PEFT runs mix
    their merged weights (``merged_weights``) and the result is written with ``peft = "full"``."""
    import torch

    from .history import load_run, weights_for
    from .plugins import load_plugins
    from .train import pick_device

    grid = sorted(set(alphas) | ({alpha} if alpha is not None else set()))
    if not grid or any(not 0 <= a <= 1 for a in grid):
        raise ConfigError(f"WiSE-FT mixes weights with α in [0, 1]; got {', '.join(map(str, grid)) or 'none'}")
    host = host or load_plugins()
    path = load_run(run, runs_dir).path
    weights, used = weights_for(path, checkpoint)
    p, (start, end) = merged_weights(path, [None, weights], host)
    check_same(start, end, f"run {path.name}")
    chosen_by, higher = headline(p, metric)
    with torch.inference_mode():
        score = Scorer(p, host, pick_device(device))
        rows = [{"alpha": a, **score(interpolate(start, end, a))} for a in grid]
    if chosen_by not in rows[0]:
        raise ConfigError(f"metric '{chosen_by}' is not computed here (have: {', '.join(k for k in rows[0] if k != 'alpha')}); give --metric")
    pick = alpha if alpha is not None else _best(rows, chosen_by, higher)["alpha"]
    parents = {"start": f"{path} (weights as the run began)", "fine_tuned": str(weights), "checkpoint": used}
    kept = next(r for r in rows if r["alpha"] == pick)
    summary = {
        "task": p.task.name, "metrics": {k: v for k, v in kept.items() if k != "alpha"},
        "best": {"metric": chosen_by, "higher_is_better": higher, "value": kept[chosen_by], "step": None},
        "wise": {"alpha": pick, "parents": parents, "rows": rows},
    }  # fmt: skip
    out = write_derived(as_written(p), path, interpolate(start, end, pick), name or f"{path.name}-wise-{pick:g}", summary)
    if plot:
        _plot_wise(rows, chosen_by, out / "wise.png")
    return {"run_dir": str(out), "alpha": pick, "metric": chosen_by, "rows": rows, "parents": parents}


def _best(rows: Sequence[Mapping[str, Any]], metric: str, higher: bool) -> Mapping[str, Any]:
    """The row with the best ``metric`` (the first of equals)."""
    return max(rows, key=lambda r: r[metric]) if higher else min(rows, key=lambda r: r[metric])


def soup(
    runs: Sequence[str | Path],
    *,
    greedy: bool = True,
    metric: str | None = None,
    checkpoint: str = "best",
    name: str | None = None,
    runs_dir: str | Path = "runs",
    device: str = "auto",
    host: PluginHost | None = None,
) -> dict[str, Any]:
    """Model soups over ``runs`` of one architecture (their ``checkpoint``): the uniform soup (the
    mean of every weight) and, with ``greedy``, the greedy soup: ingredients sorted by the held-out
    (validation) ``metric``, best first, each kept only if the mean with it scores strictly better,
    so the greedy soup never scores below its best ingredient. Every ingredient, the uniform and
    the greedy soup are scored on the validation split and the evaluation sets of the first run;
    the greedy soup (else the uniform) is written as a new run directory (``name``, default
    FIRST-soup) recording its ingredients.

    Returns ``{"run_dir", "metric", "ingredients": [{"run", **metrics}], "uniform", "greedy",
    "kept"}``. Raises ConfigError for fewer than two runs or weights that do not correspond; PEFT
    runs are averaged on their merged weights (``merged_weights``)."""
    import torch

    from .history import load_run, weights_for
    from .plugins import load_plugins
    from .train import pick_device

    if len(runs) < 2:
        raise ConfigError("a soup needs at least two runs of one architecture")
    host = host or load_plugins()
    paths = [load_run(r, runs_dir).path for r in runs]
    files = [weights_for(path, checkpoint)[0] for path in paths]
    p, [first] = merged_weights(paths[0], [files[0]], host)
    states = [first]  # each ingredient rebuilt from its own run: runs may differ in what trains (PEFT or not)
    for path, file in zip(paths[1:], files[1:], strict=True):
        check_same(first, (state := merged_weights(path, [file], host)[1][0]), f"runs {paths[0].name} and {path.name}")
        states.append(state)
    chosen_by, higher = headline(p, metric)
    with torch.inference_mode():
        score = Scorer(p, host, pick_device(device))
        ingredients = [{"run": path.name, **score(state)} for path, state in zip(paths, states, strict=True)]
        uniform = score(average(states))
        kept, best = _greedy(states, ingredients, chosen_by, higher, score) if greedy else (list(range(len(states))), uniform)
    better: Callable[[float, float], bool] = (lambda a, b: a > b) if higher else (lambda a, b: a < b)
    chosen = average([states[i] for i in kept])
    summary = {
        "task": p.task.name, "metrics": best,
        "best": {"metric": chosen_by, "higher_is_better": higher, "value": best[chosen_by], "step": None},
        "soup": {"greedy": greedy, "ingredients": [str(f) for f in files], "kept": [paths[i].name for i in kept],
                 "rows": ingredients, "uniform": uniform, "greedy_soup": best if greedy else None,
                 "beats_best_ingredient": better(best[chosen_by], _best(ingredients, chosen_by, higher)[chosen_by])},
    }  # fmt: skip
    out = write_derived(as_written(p), paths[0], chosen, name or f"{paths[0].name}-soup", summary)
    return {"run_dir": str(out), "metric": chosen_by, "ingredients": ingredients, "uniform": uniform,
            "greedy": best if greedy else None, "kept": [paths[i].name for i in kept]}  # fmt: skip


def _greedy(
    states: Sequence[State], scores: Sequence[Mapping[str, Any]], metric: str, higher: bool, score: Callable[[State], dict[str, float]]
) -> tuple[list[int], dict[str, float]]:
    """Greedy soup (model-soups' recipe): by held-out ``metric``, best first; add each ingredient whose
    addition strictly improves the soup's score. Returns the kept indices and the soup's metrics."""
    order = sorted(range(len(states)), key=lambda i: scores[i][metric], reverse=higher)
    kept = [order[0]]
    best = {k: v for k, v in scores[order[0]].items() if k != "run"}
    for i in order[1:]:
        trial = score(average([states[j] for j in [*kept, i]]))
        if (trial[metric] > best[metric]) if higher else (trial[metric] < best[metric]):
            kept, best = [*kept, i], trial
    return kept, best


def _plot_wise(rows: Sequence[Mapping[str, Any]], metric: str, out: Path) -> None:
    """Each evaluation set's metric (the same name as ``metric`` in the set, else its first) against
    the validation ``metric`` over α, points labelled by α, as WiSE-FT's figures draw them."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from .runs import atomic_path

    sets = sorted({k.split("/")[0] for k in rows[0] if "/" in k and not k.startswith("ema/")})
    fig = Figure(figsize=(6, 4.5), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    x = [r[metric] for r in rows]
    for name in sets:
        keys = [k for k in rows[0] if k.startswith(f"{name}/")]
        key = f"{name}/{metric}" if f"{name}/{metric}" in keys else keys[0]
        ax.plot(x, [r[key] for r in rows], marker="o", label=key)
        for r in rows:
            ax.annotate(f"{r['alpha']:g}", (r[metric], r[key]), fontsize="x-small", xytext=(3, 3), textcoords="offset points")
    if not sets:
        ax.plot([r["alpha"] for r in rows], x, marker="o", label=metric)
    ax.set_xlabel(metric if sets else "alpha")
    ax.set_ylabel("evaluation set" if sets else metric)
    ax.set_title("WiSE-FT: α from the start (0) to fine-tuned (1)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
