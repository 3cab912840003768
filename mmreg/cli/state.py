"""Options of the root command that every subcommand shares, and the lazily loaded plugin host."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import typer

if TYPE_CHECKING:
    from ..plugins import PluginHost


@dataclass
class State:
    debug: bool = False
    extra_plugins: list[str] = field(default_factory=list)
    _host: PluginHost | None = None

    def host(self, warn: bool = True) -> PluginHost:
        """Load plugins on first use; report each one that failed on stderr."""
        if self._host is None:
            from ..plugins import load_plugins

            self._host = load_plugins(self.extra_plugins)
            if warn:
                for failed in self._host.failures:
                    typer.echo(f"warning: plugin '{failed.name}' failed to load: {failed.error}", err=True)
        return self._host


state = State()
