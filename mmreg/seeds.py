"""Repeated seeds: which seeds `--seeds` and `--repeat` ask for (`mmreg run`, `mmreg search`), and one run per seed."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from .errors import ConfigError

if TYPE_CHECKING:
    from .config import Experiment
    from .plugins import PluginHost


def parse_seeds(seeds: str | None, repeat: int | None, base: int) -> list[int] | None:
    """The seeds to run, in order: ``seeds`` as written ("0,1,2", ranges "0-4" included), or
    ``repeat`` seeds from ``base`` (the experiment's own seed) upward; None when neither is given.

    Raises ConfigError for both at once, a seed that is not a non-negative integer, a seed given
    twice, or ``repeat`` below 1.
    """
    if seeds is not None and repeat is not None:
        raise ConfigError("give --seeds or --repeat, not both")
    if repeat is not None:
        if repeat < 1:
            raise ConfigError(f"--repeat {repeat}: run at least once")
        return list(range(base, base + repeat))
    if seeds is None:
        return None
    out: list[int] = []
    for part in (p.strip() for p in seeds.split(",")):
        first, dash, last = part.partition("-")
        try:
            chosen = list(range(int(first), int(last) + 1)) if dash else [int(part)]
        except ValueError:
            raise ConfigError(f"--seeds '{seeds}': '{part}' is not a seed; give integers like 0,1,2 or a range like 0-4") from None
        if any(s < 0 for s in chosen) or not chosen:
            raise ConfigError(f"--seeds '{seeds}': '{part}' names no non-negative seed; give integers like 0,1,2")
        out += chosen
    repeated = sorted({s for s in out if out.count(s) > 1})
    if repeated:
        raise ConfigError(f"--seeds '{seeds}' names seed {repeated[0]} twice; each seed once")
    return out


def run_seeds(
    experiment: Experiment, seeds: Sequence[int], *, host: PluginHost | None = None, progress: bool = True
) -> dict[str, Any]:
    """One run of ``experiment`` per seed, each a normal run directory named ``GROUP-seed-S`` and
    recorded as one group (``track.group = GROUP``, which trackers group by too). ``GROUP`` is the
    experiment's ``name``, else ``TIME-encoder-fusion-losses`` as a run of it would be named.

    Returns ``{"group", "seeds", "runs": [each run's summary], "headline": {"metric",
    "higher_is_better", "best": Spread.to_dict() of the runs' best-checkpoint values}}``. Raises
    what ``mmreg.run`` raises; the runs finished before a failing one stay.
    """
    import time

    from .api import run
    from .groups import Spread

    group = experiment.name or f"{time.strftime('%Y%m%d-%H%M%S')}-{experiment.encoder.name}-{experiment.fusion.name}-{'+'.join(experiment.loss)}"
    summaries = []
    for seed in seeds:
        track = experiment.track.model_copy(update={"group": group})
        summaries.append(run(experiment.model_copy(update={"seed": seed, "name": f"{group}-seed-{seed}", "track": track}), host=host, progress=progress))
    best = summaries[0]["best"]
    values = [s["best"]["value"] for s in summaries if s["best"]["value"] is not None]
    spread = Spread.of(values).to_dict() if values else None
    headline = {"metric": best["metric"], "higher_is_better": best.get("higher_is_better", True), "best": spread}
    return {"group": group, "seeds": list(seeds), "runs": summaries, "headline": headline}
