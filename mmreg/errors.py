"""Typed errors for bad input; the CLI formats each once as one line and exits 2."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class MmregError(Exception):
    """Bad input from the user: a name, a value, a file or a combination.

    The message is complete as it stands: what was wrong and how to put it right.
    """

    exit_code = 2


class UnknownComponent(MmregError):
    """A component name that no loaded plugin registered."""

    def __init__(self, kind: str, name: str, known: Iterable[str]) -> None:
        known = sorted(known)
        self.kind, self.name, self.known = kind, name, known
        close = difflib.get_close_matches(name, known, n=1, cutoff=0.5)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        listing = ", ".join(known) if known else "none registered"
        super().__init__(f"unknown {kind} '{name}'{hint} (known: {listing})")


class DuplicateComponent(MmregError):
    """Two plugins registered one name for one kind."""

    def __init__(self, kind: str, name: str, first: str, second: str) -> None:
        super().__init__(
            f"{kind} '{name}' is registered by both plugin '{first}' and plugin '{second}'; "
            f"rename one of them or disable a plugin with MMREG_DISABLE_PLUGINS"
        )


class InvalidParams(MmregError):
    """Component parameters that fail their schema."""


class ConfigError(MmregError):
    """An experiment file or override that cannot be read or validated."""


class IncompatibleParts(MmregError):
    """Components that cannot work together, found before any weight is built."""


class DataError(MmregError):
    """A dataset that is empty, missing or unreadable."""


class ContractBroken(MmregError):
    """A component broke one of mmreg's contracts on the run's first batch (``mmreg.contracts``),
    found before the run directory exists: the message names the component, its plugin and the contract."""

    def __init__(self, component: str, contract: str, seen: str) -> None:
        self.component, self.contract, self.seen = component, contract, seen
        super().__init__(f"{component} breaks the contract '{contract}': {seen}; fix the plugin or choose another component")


class PluginLoadError(MmregError):
    """A plugin that could not be imported or whose hooks failed."""

    def __init__(self, plugin: str, error: BaseException | str) -> None:
        self.plugin = plugin
        detail = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
        super().__init__(f"plugin '{plugin}' failed to load: {detail}")


class TrainingInterrupted(MmregError):
    """SIGINT or SIGTERM during training: a checkpoint was saved and the run can resume."""

    def __init__(self, signum: int, step: int, run_dir: str) -> None:
        import signal

        self.exit_code = 128 + signum
        super().__init__(
            f"{signal.Signals(signum).name} at step {step}: checkpoint saved; resume with: mmreg run --resume {run_dir}"
        )


class TrainingDiverged(MmregError):
    """Too many non-finite losses in a row; the last good checkpoint is kept."""

    exit_code = 1


def did_you_mean(name: str, known: Iterable[str]) -> str:
    """Return "; did you mean 'x'?" for the closest known name, or ""."""
    close = difflib.get_close_matches(name, list(known), n=1, cutoff=0.5)
    return f"; did you mean '{close[0]}'?" if close else ""
