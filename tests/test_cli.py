"""The `mmreg` command line, driven through a real subprocess (`python -m mmreg`).

Every test runs in its own temporary directory with the MMREG_* variables of the
calling shell removed, so only what a test sets reaches the CLI.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

import pytest

import mmreg

# Small enough that a whole run (data, tiny CLIP, 3 steps, eval) takes a few seconds on a CPU.
TINY = [
    "--max-steps", "3", "--batch-size", "8",
    "--set", "dataset.train_size=32", "--set", "dataset.val_size=16",
    "--set", "train.eval_batch_size=16", "--set", "encoder.hidden_size=32",
    "--set", "encoder.projection_dim=32", "--set", "model.dim=32",
]  # fmt: skip

KINDS = {"encoders", "fusions", "losses", "augmenters", "peft", "datasets", "tasks", "balancers"}


def cli(*args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run `python -m mmreg ARGS` in ``cwd``; ``env`` adds to a copy of os.environ without MMREG_* variables."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("MMREG_")}
    full_env["COLUMNS"] = "200"  # rich tables must not wrap names in the middle
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "mmreg", *args], cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout
    )


def one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    """Bad input: exit code 2, one line on stderr, no traceback; return that line."""
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]


def by_name(entries: list[dict]) -> dict[str, dict]:
    return {e["name"]: e for e in entries}


# -- version and help ----------------------------------------------------------


def test_version(tmp_path):
    result = cli("--version", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"mmreg {mmreg.__version__}"


HELP_SCRIPT = """
import sys
sys.argv = ["mmreg", "--help"]
import mmreg.cli as c
try:
    c.main()
except SystemExit as exc:
    code = exc.code
else:
    code = 0
print("EXIT=%s" % code)
print("TORCH=%s" % ("torch" in sys.modules))
"""


def test_help_lists_the_commands_without_importing_torch(tmp_path):
    result = subprocess.run(
        [sys.executable, "-c", HELP_SCRIPT],
        cwd=tmp_path,
        env={**os.environ, "COLUMNS": "200"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    *help_lines, exit_line, torch_line = result.stdout.strip().splitlines()
    assert exit_line in ("EXIT=0", "EXIT=None")
    help_text = "\n".join(help_lines)
    for command in ("run", "list", "show", "plugins"):
        assert command in help_text.split(), f"'{command}' missing from --help:\n{help_text}"
    assert torch_line == "TORCH=False", "`mmreg --help` imported torch"


def test_help_through_python_dash_m(tmp_path):
    result = cli("--help", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    for command in ("run", "list", "show", "plugins"):
        assert command in result.stdout.split()


# -- list and show -------------------------------------------------------------


def test_list_json_has_every_kind_with_origin_and_params(tmp_path):
    result = cli("list", "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert set(data) == KINDS
    for kind, entries in data.items():
        assert entries, f"no {kind} registered"
        for entry in entries:
            assert {"name", "plugin", "params"} <= set(entry), entry
            assert isinstance(entry["params"], list)
    encoders = by_name(data["encoders"])
    assert encoders["clip"]["plugin"] == "encoder-clip"
    fusions = by_name(data["fusions"])
    assert {"gated", "none"} <= set(fusions)
    heads = by_name(fusions["gated"]["params"])["heads"]
    assert heads["default"] == 4 and heads["type"] == "int" and heads["required"] is False
    assert result.stderr.strip() == ""  # no plugin failed


def test_list_filters_by_kind_and_pattern(tmp_path):
    result = cli("list", "fusions", "g*", "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert list(data) == ["fusions"]
    assert [e["name"] for e in data["fusions"]] == ["gated"]


def test_show_prints_every_parameter(tmp_path):
    result = cli("show", "fusions", "gated", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "fusion-gated" in result.stdout
    for param in ("heads", "layers", "dropout", "ffn_mult"):
        assert param in result.stdout


def test_show_unknown_name_is_one_line(tmp_path):
    line = one_error_line(cli("show", "fusion", "nope", cwd=tmp_path))
    assert "unknown fusion 'nope'" in line
    assert "did you mean 'none'" in line


# -- errors: one line, exit 2, --debug for the traceback -----------------------


def test_unknown_encoder_is_one_line_with_a_suggestion(tmp_path):
    line = one_error_line(cli("run", "--encoder", "clpi", cwd=tmp_path))
    assert "unknown encoder 'clpi'" in line
    assert "did you mean 'clip'" in line
    assert not (tmp_path / "runs").exists()


def test_debug_flag_shows_the_traceback(tmp_path):
    result = cli("--debug", "run", "--encoder", "clpi", cwd=tmp_path)
    assert result.returncode == 2
    assert "Traceback" in result.stderr
    assert "unknown encoder 'clpi'" in result.stderr


def test_debug_env_shows_the_traceback(tmp_path):
    result = cli("run", "--encoder", "clpi", cwd=tmp_path, env={"MMREG_DEBUG": "1"})
    assert result.returncode == 2
    assert "Traceback" in result.stderr
    assert "unknown encoder 'clpi'" in result.stderr


@pytest.mark.parametrize(
    "args, files, expected",
    [
        (["--encoder", "clip", "--set", "train.lrr=1"], {}, ["unknown setting 'train.lrr'", "did you mean 'lr'"]),
        (["--set", "train.batch_size=abc"], {}, ["train.batch_size", "integer", "'abc'"]),
        (["missing.toml"], {}, ["missing.toml", "does not exist"]),
        (["bad.toml"], {"bad.toml": "name = \n[fusion\n"}, ["bad.toml", "not valid TOML"]),
        (
            ["--encoder", "clip", "--fusion", "gated", "--set", "fusion.headz=2"],
            {},
            ["fusion 'gated' has no parameter 'headz'", "did you mean 'heads'"],
        ),
        (["--loss", "ce", "--task", "retrieval"], {}, ["loss 'ce'", "task 'retrieval'", "--task classification"]),
        (["--task", "vqa"], {}, ["task 'vqa'", "(infonce)", "add --loss bce or --loss ce"]),
        (["--task", "quiz"], {}, ["setting 'task'", "'quiz'"]),
    ],
    ids=["unknown-key", "bad-type", "missing-file", "invalid-toml", "unknown-param", "ce-retrieval", "vqa-no-ce", "bad-task"],
)
def test_bad_input_is_one_line_and_creates_no_run(tmp_path, args, files, expected):
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    before = sorted(p.name for p in tmp_path.iterdir())
    line = one_error_line(cli("run", *args, "--runs-dir", "runs", cwd=tmp_path))
    assert line.startswith("error: ")
    for fragment in expected:
        assert fragment in line
    assert sorted(p.name for p in tmp_path.iterdir()) == before, "a failed run left files behind"


def test_set_reaches_the_default_component(tmp_path):
    """README: "`--set` reaches every key: `--set fusion.heads=8`" -- without having to repeat --fusion."""
    line = one_error_line(cli("run", "--set", "fusion.headz=2", cwd=tmp_path))
    assert "fusion 'gated' has no parameter 'headz'" in line


# -- plugins: third parties, broken ones, duplicates, disabling ----------------

BROKEN = 'raise RuntimeError("boom at import")\n'

MINE = textwrap.dedent(
    '''
    from pydantic import BaseModel, ConfigDict, Field

    from mmreg import hookimpl


    class MineParams(BaseModel):
        model_config = ConfigDict(extra="forbid")

        width: int = Field(3, ge=1, description="how wide")


    def build(*, dim, width):
        raise NotImplementedError


    @hookimpl
    def mmreg_register_fusions(register):
        register("mine", build, params=MineParams, help="a third-party fusion")
    '''
)

DUPLICATE = textwrap.dedent(
    """
    from mmreg import hookimpl


    @hookimpl
    def mmreg_register_fusions(register):
        register("gated", dict, help="a second gated")
    """
)


def installed(tmp_path: Path, module: str, source: str) -> dict[str, str]:
    """Install ``source`` as module ``module`` with an entry point in the ``mmreg`` group, as pip would
    (a .dist-info beside it on PYTHONPATH); return the environment that sees it."""
    site = tmp_path / "site"
    (site / f"{module}-0.1.dist-info").mkdir(parents=True)
    (site / f"{module}.py").write_text(source)
    (site / f"{module}-0.1.dist-info" / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {module}\nVersion: 0.1\n")
    (site / f"{module}-0.1.dist-info" / "entry_points.txt").write_text(f"[mmreg]\n{module} = {module}\n")
    return {"PYTHONPATH": str(site)}


def test_broken_installed_plugin_is_reported_and_the_rest_works(tmp_path):
    env = installed(tmp_path, "broken_plugin", BROKEN)

    listed = cli("list", "--json", cwd=tmp_path, env=env)
    assert listed.returncode == 0, listed.stderr
    assert "clip" in by_name(json.loads(listed.stdout)["encoders"])
    assert "warning" in listed.stderr and "broken_plugin" in listed.stderr and "boom at import" in listed.stderr
    assert "Traceback" not in listed.stderr

    plugins = cli("plugins", "list", "--json", cwd=tmp_path, env=env)
    assert plugins.returncode == 0, plugins.stderr
    rows = by_name(json.loads(plugins.stdout))
    assert rows["broken_plugin"]["ok"] is False
    assert "RuntimeError" in rows["broken_plugin"]["error"] and "boom at import" in rows["broken_plugin"]["error"]
    assert rows["encoder-clip"]["ok"] is True and rows["encoder-clip"]["error"] is None


@pytest.mark.parametrize("how", ["env", "flag"])
def test_a_named_plugin_that_fails_is_an_error(tmp_path, how):
    """A plugin the user named (--plugin, MMREG_PLUGINS) must load: exit 2, as `pytest -p` treats it."""
    (tmp_path / "broken_plugin.py").write_text(BROKEN)
    if how == "env":
        result = cli("list", cwd=tmp_path, env={"MMREG_PLUGINS": str(tmp_path / "broken_plugin.py")})
    else:
        result = cli("--plugin", "broken_plugin.py", "list", cwd=tmp_path)
    line = one_error_line(result)
    assert "broken_plugin" in line and "boom at import" in line


def test_third_party_plugin_file_registers_a_fusion(tmp_path):
    (tmp_path / "myfusion.py").write_text(MINE)
    result = cli("list", "fusions", "--json", cwd=tmp_path, env={"MMREG_PLUGINS": str(tmp_path / "myfusion.py")})
    assert result.returncode == 0, result.stderr
    fusions = by_name(json.loads(result.stdout)["fusions"])
    assert {"gated", "none", "mine"} <= set(fusions)
    assert fusions["mine"]["plugin"] == "myfusion"
    assert fusions["mine"]["help"] == "a third-party fusion"
    assert [(p["name"], p["default"]) for p in fusions["mine"]["params"]] == [("width", 3)]
    assert result.stderr.strip() == ""


def test_plugin_option_before_the_command(tmp_path):
    (tmp_path / "myfusion.py").write_text(MINE)
    result = cli("--plugin", "myfusion.py", "show", "fusion", "mine", "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert (data["name"], data["plugin"]) == ("mine", "myfusion")


def test_duplicate_name_fails_that_plugin_naming_both(tmp_path):
    env = installed(tmp_path, "dupgated", DUPLICATE)

    listed = cli("list", "fusions", "--json", cwd=tmp_path, env=env)
    assert listed.returncode == 0, listed.stderr
    fusions = by_name(json.loads(listed.stdout)["fusions"])
    assert fusions["gated"]["plugin"] == "fusion-gated"  # the built-in still owns the name
    assert "fusion-gated" in listed.stderr and "dupgated" in listed.stderr

    plugins = by_name(json.loads(cli("plugins", "list", "--json", cwd=tmp_path, env=env).stdout))
    assert plugins["dupgated"]["ok"] is False
    error = plugins["dupgated"]["error"]
    assert "'gated'" in error and "fusion-gated" in error and "dupgated" in error
    assert plugins["fusion-gated"]["ok"] is True


def test_disable_plugins_removes_their_components(tmp_path):
    result = cli("list", "fusions", "--json", cwd=tmp_path, env={"MMREG_DISABLE_PLUGINS": "fusion-gated"})
    assert result.returncode == 0, result.stderr
    names = [e["name"] for e in json.loads(result.stdout)["fusions"]]
    assert "gated" not in names and "none" in names


# -- a whole run ---------------------------------------------------------------


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_tiny_run_writes_a_complete_rerunnable_run_directory(tmp_path):
    result = cli("run", *TINY, "--runs-dir", "runs", "--name", "t1", "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)  # stdout is the JSON alone: progress goes elsewhere

    run_dir = tmp_path / summary["run_dir"]
    assert run_dir.resolve() == (tmp_path / "runs" / "t1").resolve()
    assert summary["val_size"] == 16 and summary["train_size"] == 32 and summary["steps"] == 3
    metrics = summary["metrics"]
    for key in ("recall@1", "recall@5"):
        assert 0.0 <= metrics[key] <= 1.0
    assert metrics["recall@1"] <= metrics["recall@5"]

    for name in ("config.toml", "metrics.jsonl", "summary.json", "versions.json", "model.safetensors"):
        assert (run_dir / name).is_file(), f"{name} missing from the run directory"
    assert (run_dir / "model.safetensors").stat().st_size > 0
    assert (run_dir / "encoder" / "tokenizer.json").is_file()
    assert (run_dir / "encoder" / "tokenizer_config.json").is_file()
    assert not list(run_dir.rglob("*.tmp")), "a temporary file was left behind"
    modes = {(run_dir / n).stat().st_mode & 0o777 for n in ("config.toml", "metrics.jsonl", "summary.json", "model.safetensors")}
    assert len(modes) == 1, "atomically written files must get the same permissions as the others"

    records = read_jsonl(run_dir / "metrics.jsonl")
    val = [r for r in records if r.get("split") == "val"]
    assert len(val) == 1 and val[0]["recall@1"] == metrics["recall@1"]
    assert json.loads((run_dir / "summary.json").read_text()) == summary
    versions = json.loads((run_dir / "versions.json").read_text())
    assert versions["packages"]["mmreg"] == mmreg.__version__
    assert "encoder-clip" in versions["plugins"]

    config = tomllib.loads((run_dir / "config.toml").read_text())
    assert config["encoder"]["name"] == "clip" and config["encoder"]["hidden_size"] == 32
    assert config["fusion"] == {"name": "gated", "heads": 4, "layers": 1, "dropout": 0.0, "ffn_mult": 4}
    assert config["train"]["max_steps"] == 3 and config["dataset"]["val_size"] == 16

    # Rerun the saved experiment: a new run directory, the first left exactly as it was.
    first_summary = (run_dir / "summary.json").read_bytes()
    first_config = (run_dir / "config.toml").read_bytes()
    again = cli("run", "runs/t1/config.toml", "--json", "--max-steps", "2", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    second = json.loads(again.stdout)
    second_dir = tmp_path / second["run_dir"]
    assert second_dir.resolve() != run_dir.resolve()
    assert second_dir.parent.resolve() == (tmp_path / "runs").resolve()
    assert second["steps"] == 2 and second["val_size"] == 16
    assert (run_dir / "summary.json").read_bytes() == first_summary
    assert (run_dir / "config.toml").read_bytes() == first_config
    rerun_config = tomllib.loads((second_dir / "config.toml").read_text())
    assert rerun_config["train"].pop("max_steps") == 2
    config["train"].pop("max_steps")
    assert rerun_config == config  # everything but the overridden flag carried over
