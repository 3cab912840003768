"""Help text that names what is registered, filled in from the registry when the help is shown.

A command made with ``cls=RegistryHelp`` may write ``{tasks}`` (or any other kind's key in
``mmreg.registry.KINDS``) in the help of an option or argument: ``--help`` replaces it with the
names the plugin host registered, so an installed plugin's task is named beside the built-in
ones, and ``{kinds}`` with the kinds' keys. The plugins load only when such help is shown, and
registering imports no torch, so neither the CLI's start nor ``--help`` imports it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import click
from typer.core import TyperCommand

from .state import state


def or_list(words: Sequence[str]) -> str:
    """``a, b or c``; a single word as it is."""
    return f"{', '.join(words[:-1])} or {words[-1]}" if len(words) > 1 else "".join(words)


def fill_names(text: str, *, escape: bool) -> str:
    """``text`` with ``{kinds}`` replaced by the kinds' keys and ``{KIND}`` (``{tasks}``) by the names
    registered of that kind; names escaped for rich markup when ``escape`` (a name may hold brackets)."""
    from rich.markup import escape as escape_markup

    from ..registry import KINDS

    lists: dict[str, Callable[[], list[str]]] = {"kinds": lambda: [kind.key for kind in KINDS]}
    lists.update({kind.key: lambda kind=kind: state.host().registry(kind).names() for kind in KINDS})
    for key, names in lists.items():
        placeholder = f"{{{key}}}"
        if placeholder in text:
            words = [escape_markup(name) if escape else name for name in names()]
            text = text.replace(placeholder, or_list(words))
    return text


class RegistryHelp(TyperCommand):
    """A command whose help names registered components: see the module's docstring."""

    def format_help(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        for param in self.params:
            text = getattr(param, "help", None)
            if text and "{" in text:
                param.help = fill_names(text, escape=self.rich_markup_mode == "rich")  # type: ignore[attr-defined]
        super().format_help(ctx, formatter)


__all__ = ["RegistryHelp", "fill_names", "or_list"]
