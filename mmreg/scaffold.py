"""`mmreg plugins new`: writes a pip-installable plugin package with one working component of a kind,
its entry point, a README and tests that run the conformance kit (``mmreg.testing``) on it."""

from __future__ import annotations

import re
import shutil
import tempfile
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from string import Template

from . import __version__
from .errors import ConfigError
from .registry import Kind, find_kind

NAME = re.compile(r"[a-z][a-z0-9]*(?:-[a-z0-9]+)*")
RESERVED = frozenset({"mmreg", "mmreg-plugins"})  # their modules would shadow mmreg's own


@dataclass(frozen=True)
class Example:
    """The example component written for one kind: its template module, class, help and flag."""

    submodule: str  # the template's stem, and the module in the package
    cls: str
    help: str
    flag: str  # how `mmreg run` selects it


EXAMPLES: dict[str, Example] = {
    "encoders": Example("encoder", "PatchEncoder", "a small patch and word encoder trained from scratch", "--encoder"),
    "fusions": Example("fusion", "LowRankBilinear", "low-rank bilinear matching of pooled vectors", "--fusion"),
    "losses": Example("loss", "HingeRanking", "hinge triplet ranking in both directions, hardest negative (VSE++)", "--loss"),
    "augmenters": Example("augmenter", "MirrorWithCaption", "mirror the image and swap left and right in its caption", "--augment"),
    "peft": Example("peft", "BitFit", "bias-only fine-tuning of the towers (BitFit)", "--peft"),
    "datasets": Example("dataset", "Stripes", "synthetic coloured stripes, captioned, orientation as label", "--dataset"),
    "tasks": Example("task", "Retrieval", "image-text retrieval scored by mean reciprocal rank", "--task"),
    "balancers": Example("balancer", "GradNormEqualise", "scale the modality with the larger gradient norm down to the other's", "--balance"),
}


def new_plugin(name: str, kind: str, directory: str | Path = ".") -> Path:
    """Write the package ``directory/name`` for a component ``name`` of ``kind`` (fusion, encoder, loss,
    augmenter, peft, dataset, task or balancer) and return its path.

    The distribution, the entry point and the registered component are all called ``name``; the
    import package is ``name`` with underscores. Files: ``pyproject.toml``, ``README.md``,
    ``src/<module>/__init__.py`` (the hook), ``src/<module>/<kind>.py`` (the component) and
    ``tests/test_<module>.py``. The package is assembled in a temporary directory and renamed into
    place, so a failure leaves nothing behind. Raises ConfigError for a bad name or an existing
    target (never overwritten) and UnknownComponent for an unknown kind.
    """
    if not NAME.fullmatch(name) or name in RESERVED:
        raise ConfigError(
            f"plugin name '{name}' is not usable: use lower-case letters, digits and single hyphens, "
            f"starting with a letter and not 'mmreg' (e.g. my-fusion)"
        )
    found: Kind = find_kind(kind)
    example = EXAMPLES[found.key]
    parent = Path(directory).expanduser()
    target = parent / name
    if target.exists() or target.is_symlink():
        raise ConfigError(f"{target} already exists; choose another NAME or --dir (nothing was written)")
    if not parent.is_dir():
        raise ConfigError(f"--dir {parent} is not a directory; create it first or choose another")

    module = name.replace("-", "_")
    values = {
        "name": name, "module": module, "key": found.key, "label": found.label, "hook": found.hook,
        "submodule": example.submodule, "cls": example.cls, "help": example.help,
        "usage": f"mmreg run {example.flag} {name}", "mmreg_version": __version__,
    }  # fmt: skip
    files = {
        "pyproject.toml": "pyproject.toml.tmpl",
        "README.md": "README.md.tmpl",
        f"src/{module}/__init__.py": "__init__.py.tmpl",
        f"src/{module}/{example.submodule}.py": f"{example.submodule}.py.tmpl",
        f"tests/test_{module}.py": f"test_{example.submodule}.py.tmpl",
    }
    templates = resources.files("mmreg") / "templates"
    staging = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=parent))
    try:
        for path, template in files.items():
            out = staging / path
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(Template((templates / template).read_text(encoding="utf-8")).substitute(values), encoding="utf-8")
        staging.rename(target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target
