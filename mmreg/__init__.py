"""mmreg: a plugin-based experiment registry for multimodal (image + text) deep learning."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import Any

from .hookspecs import hookimpl

try:
    __version__ = version("mmreg")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0"


def __getattr__(name: str) -> Any:
    # Lazy, so `import mmreg` (and `mmreg --help`) never imports torch.
    if name in ("run", "resolve"):
        from . import api

        return getattr(api, name)
    if name == "search":
        from .search import search

        return search
    if name == "run_seeds":
        from .seeds import run_seeds

        return run_seeds
    if name == "compare_runs":
        from .groups import compare_runs

        return compare_runs
    if name in ("wise", "soup"):
        from . import weightspace

        return getattr(weightspace, name)
    if name in ("predict_images", "task_results"):
        from . import predict

        return getattr(predict, name)
    if name == "inspect_data":
        from .inspection import inspect_data

        return inspect_data
    if name in ("open_image", "to_rgb", "load_image"):
        from . import images

        return getattr(images, name)
    if name in ("load_experiment", "Experiment"):
        from . import config

        return getattr(config, name)
    if name in ("load_plugins", "PluginHost"):
        from . import plugins

        return getattr(plugins, name)
    raise AttributeError(f"module 'mmreg' has no attribute '{name}'")


__all__ = [
    "Experiment",
    "PluginHost",
    "__version__",
    "compare_runs",
    "hookimpl",
    "inspect_data",
    "predict_images",
    "task_results",
    "load_experiment",
    "load_image",
    "load_plugins",
    "open_image",
    "resolve",
    "run",
    "run_seeds",
    "search",
    "soup",
    "to_rgb",
    "wise",
]
