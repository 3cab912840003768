"""Runs grouped by every setting but the seed: spreads and verdicts against hand-computed values,
the best checkpoint's value (not the last), unfinished runs shown and not averaged, through the CLI."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import tomli_w
from test_cli import cli

from mmreg.groups import Spread, group_runs, verdict
from mmreg.history import load_run

T_975_2 = 4.302652729911275  # Student's t, 97.5th percentile, 2 degrees of freedom (tables)
T_975_4 = 2.7764451051977987  # 4 degrees of freedom


def test_spread_is_mean_sample_std_and_the_t_interval():
    s = Spread.of([0.5, 0.6, 0.7])
    half = T_975_2 * 0.1 / math.sqrt(3)
    assert (s.n, s.mean, s.std) == (3, pytest.approx(0.6), pytest.approx(0.1))
    assert (s.low, s.high) == (pytest.approx(0.6 - half), pytest.approx(0.6 + half))
    assert Spread.of([0.4]).to_dict() == {"n": 1, "mean": 0.4, "std": None, "low": None, "high": None}


def test_verdicts_identical_shifted_unpaired_and_lower_is_better():
    a = {0: 0.5, 1: 0.6, 2: 0.7}
    same = verdict(a, dict(a), "recall@1")
    assert same.difference == 0 and same.says == "not distinguishable from seed noise at 3 and 3 runs"
    assert same.method == "paired t over 3 seeds"
    shifted = verdict(a, {s: v + 0.3 for s, v in a.items()}, "recall@1")  # far beyond a spread of 0 per seed
    assert shifted.says == "better" and shifted.difference == pytest.approx(0.3) and shifted.low == pytest.approx(0.3)
    assert verdict(a, {s: v + 0.3 for s, v in a.items()}, "loss", higher_is_better=False).says == "worse"

    welch = verdict({0: 1.0, 1: 2.0, 2: 3.0}, {3: 4.0, 4: 5.0, 5: 6.0}, "m")  # other seeds: not paired
    half = T_975_4 * math.sqrt(2 / 3)  # variances 1/3 + 1/3; Welch-Satterthwaite: (2/3)^2 / (2 * (1/3)^2 / 2) = 4
    assert welch.method == "Welch t over 3 and 3 runs" and welch.says == "better"
    assert (welch.low, welch.high) == (pytest.approx(3 - half), pytest.approx(3 + half))
    noisy = verdict({0: 0.1, 1: 0.9}, {0: 0.2, 1: 0.9}, "m")
    assert noisy.says.startswith("not distinguishable")
    assert verdict({0: 0.5}, {0: 0.9}, "m").method == "no interval: a group has one run"


def write_run(runs: Path, name: str, *, seed: int, fusion: str, best: float, last: float, complete: bool = True) -> None:
    """A run directory by hand: its best evaluation at step 2, a worse last one at step 3."""
    run = runs / name
    run.mkdir(parents=True)
    (run / "config.toml").write_text(tomli_w.dumps({"name": name, "seed": seed, "task": {"name": "retrieval"}, "fusion": {"name": fusion}}))
    rows = [{"step": 1, "split": "val", "recall@1": 0.1}, {"step": 2, "split": "val", "recall@1": best}, {"step": 3, "split": "val", "recall@1": last}]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    if complete:
        best_record = {"metric": "recall@1", "higher_is_better": True, "value": best, "step": 2}
        (run / "summary.json").write_text(json.dumps({"task": "retrieval", "metrics": {"recall@1": last}, "best": best_record}))


def test_three_seeds_of_two_settings_are_grouped_on_their_best_checkpoints(tmp_path):
    runs = tmp_path / "runs"
    for seed, (none, gated) in enumerate([(0.50, 0.80), (0.60, 0.90), (0.70, 1.00)]):
        write_run(runs, f"none-{seed}", seed=seed, fusion="none", best=none, last=none - 0.2)
        write_run(runs, f"gated-{seed}", seed=seed, fusion="gated", best=gated, last=gated - 0.2)
    write_run(runs, "gated-9", seed=9, fusion="gated", best=0.0, last=0.0, complete=False)  # still running

    groups = group_runs([load_run(p, runs) for p in sorted(runs.iterdir())])
    assert [g.settings for g in groups] == [{"fusion.name": "gated"}, {"fusion.name": "none"}]
    assert [len(g.runs) for g in groups] == [4, 3] and [len(g.complete) for g in groups] == [3, 3]

    names = [p.name for p in sorted(runs.iterdir())]
    result = cli("runs", "compare", *names, "--runs-dir", str(runs), "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    gated, none = data["groups"]
    assert gated["status"]["gated-9"] == "incomplete" and len(gated["runs"]) == 4
    best = gated["metrics"]["recall@1"]["best"]
    assert (best["n"], best["mean"], best["std"]) == (3, pytest.approx(0.9), pytest.approx(0.1))
    assert best["low"] == pytest.approx(0.9 - T_975_2 * 0.1 / math.sqrt(3))
    assert gated["metrics"]["recall@1"]["last"]["mean"] == pytest.approx(0.7)  # the last value is there too
    assert data["verdict"]["method"] == "paired t over 3 seeds"
    assert data["verdict"]["difference"] == pytest.approx(-0.3) and data["verdict"]["says"] == "worse"  # none vs gated

    table = cli("runs", "compare", *names, "--runs-dir", str(runs), cwd=tmp_path)
    assert "not averaged: gated-9 incomplete" in table.stdout.replace("\n", " ") or "gated-9" in table.stdout
    assert "group 2 vs group 1 on recall@1: -0.3" in table.stdout and "worse" in table.stdout

    by_seed = json.loads(cli("runs", "compare", *names, "--runs-dir", str(runs), "--group-by", "seed", "--json", cwd=tmp_path).stdout)
    assert [g["settings"] for g in by_seed["groups"]] == [{"seed": 0}, {"seed": 1}, {"seed": 2}, {"seed": 9}]


def test_one_run_per_group_compares_as_before(tmp_path):
    runs = tmp_path / "runs"
    write_run(runs, "a", seed=0, fusion="none", best=0.5, last=0.4)
    write_run(runs, "b", seed=0, fusion="gated", best=0.6, last=0.5)
    data = json.loads(cli("runs", "compare", "a", "b", "--runs-dir", str(runs), "--json", cwd=tmp_path).stdout)
    assert data["differences"] == {"fusion.name": ["none", "gated"]} and "groups" not in data


def compared_runs(runs: Path) -> list[str]:
    for seed, (none, gated) in enumerate([(0.50, 0.80), (0.60, 0.90), (0.70, 1.00)]):
        write_run(runs, f"none-{seed}", seed=seed, fusion="none", best=none, last=none - 0.2)
        write_run(runs, f"gated-{seed}", seed=seed, fusion="gated", best=gated, last=gated - 0.2)
    return [p.name for p in sorted(runs.iterdir())]


def test_markdown_csv_and_the_plot_of_groups(tmp_path):
    from PIL import Image

    runs = tmp_path / "runs"
    names = compared_runs(runs)
    markdown = cli("runs", "compare", *names, "--runs-dir", str(runs), "--markdown", cwd=tmp_path).stdout.splitlines()
    assert markdown[0] == "|  | fusion.name=gated (n=3) | fusion.name=none (n=3) |" and markdown[2] == "| recall@1 | 0.9 ± 0.1 | 0.6 ± 0.1 |"
    rows = cli("runs", "compare", *names, "--runs-dir", str(runs), "--csv", cwd=tmp_path).stdout.splitlines()
    assert rows[0] == "group,runs,metric,n,mean,std,low,high" and rows[1].startswith("fusion.name=gated,gated-0 gated-1 gated-2,recall@1,3,0.9")

    drawn = cli("runs", "compare", *names, "--runs-dir", str(runs), "--plot", "curves.png", "--json", cwd=tmp_path)
    assert drawn.returncode == 0, drawn.stderr
    assert "legend: fusion.name=gated; fusion.name=none" in drawn.stderr  # what differs names each curve
    image = Image.open(tmp_path / "curves.png")
    assert image.format == "PNG" and image.size == (900, 640) and (tmp_path / "curves.png").stat().st_size > 20_000

    refused = cli("runs", "compare", *names, "--runs-dir", str(runs), "--plot", "curves.png/x.png", cwd=tmp_path)
    assert refused.returncode == 2 and "is a file" in refused.stderr and len(refused.stderr.strip().splitlines()) == 1


def test_list_filters_by_setting_and_status_and_sorts_by_a_metric(tmp_path):
    runs = tmp_path / "runs"
    compared_runs(runs)
    write_run(runs, "gated-9", seed=9, fusion="gated", best=0.0, last=0.0, complete=False)

    def listed(*args: str) -> list[str]:
        result = cli("runs", "list", "--runs-dir", str(runs), *args, "--json", cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        return [r["name"] for r in json.loads(result.stdout)]

    assert listed("--where", "fusion.name=gated", "--sort", "recall@1") == ["gated-2", "gated-1", "gated-0", "gated-9"]
    assert listed("--where", "fusion.name=none", "--where", "seed=1") == ["none-1"]
    assert listed("--status", "incomplete") == ["gated-9"]
    typo = cli("runs", "list", "--runs-dir", str(runs), "--where", "fusion.nme=gated", cwd=tmp_path)
    assert typo.returncode == 2 and "did you mean 'fusion.name'" in typo.stderr and len(typo.stderr.strip().splitlines()) == 1


TINY = ["--max-steps", "2", "--batch-size", "8", "--device", "cpu", "--fusion", "none", "--set", "dataset.train_size=16",
        "--set", "dataset.val_size=8", "--set", "encoder.hidden_size=32", "--set", "encoder.layers=1", "--set", "model.dim=32"]  # fmt: skip


def test_seeds_run_once_per_seed_as_one_group(tmp_path):
    result = cli("run", *TINY, "--seeds", "0,3", "--name", "pair", "--runs-dir", "runs", "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    group = json.loads(result.stdout)
    assert group["group"] == "pair" and group["seeds"] == [0, 3]
    dirs = [Path(s["run_dir"]) for s in group["runs"]]
    assert [d.name for d in dirs] == ["pair-seed-0", "pair-seed-3"]
    configs = [load_run(tmp_path / d).config for d in dirs]
    assert [c["seed"] for c in configs] == [0, 3] and {c["track"]["group"] for c in configs} == {"pair"}
    values = [s["best"]["value"] for s in group["runs"]]
    assert group["headline"]["best"]["mean"] == pytest.approx(sum(values) / 2)

    compared = json.loads(cli("runs", "compare", "pair-seed-0", "pair-seed-3", "--runs-dir", "runs", "--json", cwd=tmp_path).stdout)
    assert len(compared["groups"]) == 1 and compared["groups"][0]["runs"] == ["pair-seed-0", "pair-seed-3"]

    for bad, says in ((["--seeds", "1,1"], "names seed 1 twice"), (["--seeds", "0", "--repeat", "2"], "not both"), (["--repeat", "0"], "at least once")):
        refused = cli("run", *TINY, *bad, "--runs-dir", "fresh", cwd=tmp_path)
        assert refused.returncode == 2 and says in refused.stderr and len(refused.stderr.strip().splitlines()) == 1
        assert not (tmp_path / "fresh").exists()


def test_labels_name_the_component_not_every_parameter_it_brings(tmp_path):
    runs = tmp_path / "runs"
    tables = {
        "a": {"loss": {"infonce": {"temperature": 0.07}}, "fusion": {"name": "none"}},
        "b": {"loss": {"siglip": {"init_bias": -10.0}}, "fusion": {"name": "gated", "heads": 4}},
    }
    for name, table in tables.items():
        write_run(runs, name, seed=0, fusion="none", best=0.5, last=0.5)
        (runs / name / "config.toml").write_text(tomli_w.dumps({"name": name, "seed": 0, **table}))
    header = cli("runs", "compare", "a", "b", "--runs-dir", str(runs), "--markdown", cwd=tmp_path).stdout.splitlines()[0]
    assert header == "|  | loss: infonce, fusion.name=none (n=1) | fusion.name=gated, loss: siglip (n=1) |"  # not fusion.heads=4
    from mmreg import compare_runs

    labels = [group["label"] for group in compare_runs(["a", "b"], runs)["groups"]]
    assert labels == ["loss: infonce, fusion.name=none", "fusion.name=gated, loss: siglip"]  # the Python API names them alike
