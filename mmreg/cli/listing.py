"""`mmreg list`, `mmreg show` and `mmreg plugins list`: what is installed and what it takes."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from .state import state

plugins_app = typer.Typer(help="Inspect installed plugins.", no_args_is_help=True)


def _entry_dict(entry: Any) -> dict[str, Any]:
    return {"name": entry.name, "plugin": entry.plugin, "help": entry.help, "params": entry.describe_params()}


def list_command(
    kind: Annotated[str | None, typer.Argument(help="{kinds}.", show_default=False)] = None,
    pattern: Annotated[str, typer.Argument(help="fnmatch filter on names, e.g. 'cross*'.")] = "*",
    as_json: Annotated[bool, typer.Option("--json", help="Print as JSON.")] = False,
    markdown: Annotated[bool, typer.Option("--markdown", help="Print one markdown table (as in the README).")] = False,
) -> None:
    """List registered components with their plugin and parameters."""
    from ..registry import KINDS, find_kind

    kinds = [find_kind(kind)] if kind else list(KINDS)
    host = state.host()
    if markdown:
        from ..catalog import markdown_table

        typer.echo(markdown_table(e for k in kinds for e in host.registry(k).list(pattern)), nl=False)
        return
    data = {k.key: [_entry_dict(e) for e in host.registry(k).list(pattern)] for k in kinds}
    if as_json:
        typer.echo(json.dumps(data, default=str))
        return
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    console = Console()
    for k in kinds:
        table = Table(title=k.key, title_justify="left", show_lines=False)
        table.add_column("name", style="bold")
        table.add_column("plugin")
        table.add_column("parameters (default)")
        table.add_column("help")
        for e in data[k.key]:
            params = ", ".join(f"{p['name']}={p['default']!r}" if not p["required"] else p["name"] for p in e["params"])
            table.add_row(*map(escape, (e["name"], e["plugin"], params or "-", e["help"])))
        console.print(table)


def show_command(
    kind: Annotated[str, typer.Argument(help="The kind, e.g. fusions.")],
    name: Annotated[str, typer.Argument(help="The component's registered name.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print as JSON.")] = False,
) -> None:
    """Show one component: its plugin, help and every parameter with type, default and help."""
    from ..registry import find_kind

    entry = state.host().registry(find_kind(kind)).get(name)
    data = _entry_dict(entry)
    if as_json:
        typer.echo(json.dumps(data, default=str))
        return
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    console = Console()
    console.print(f"[bold]{entry.kind.label} {escape(entry.name)}[/bold]  (plugin {escape(entry.plugin)})")
    if entry.help:
        console.print(escape(entry.help))
    table = Table()
    for col in ("parameter", "type", "default", "search range", "help"):
        table.add_column(col)
    for p in data["params"]:
        default = "(required)" if p["required"] else repr(p["default"])
        table.add_row(*map(escape, (p["name"], p["type"], default, _range_text(p["search"]), p["help"])))
    console.print(table if data["params"] else "no parameters")


def _range_text(hint: dict[str, Any] | None) -> str:
    """A declared default search range as `mmreg show` prints it: 1e-05..0.01 (log), or one of [1, 2, 4]."""
    if not hint:
        return "-"
    if "choices" in hint:
        return f"one of {hint['choices']}"
    text = f"{hint['low']:g}..{hint['high']:g}"
    return text + "".join(f" ({k})" for k in ("log",) if hint.get(k)) + (f" step {hint['step']:g}" if hint.get("step") else "")


@plugins_app.command("list")
def plugins_list(as_json: Annotated[bool, typer.Option("--json", help="Print as JSON.")] = False) -> None:
    """Every plugin mmreg found, its version and source, and the error of each that failed."""
    host = state.host(warn=False)
    rows = [
        {"name": p.name, "module": p.module, "source": p.source, "version": p.version, "ok": p.error is None, "error": p.error}
        for p in host.plugins
    ]
    if as_json:
        typer.echo(json.dumps(rows))
        return
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    table = Table()
    for col in ("plugin", "module", "version", "source", "status"):
        table.add_column(col)
    for r in rows:
        status = "[green]ok[/green]" if r["ok"] else f"[red]failed[/red]: {escape(r['error'])}"
        table.add_row(*map(escape, (r["name"], r["module"], r["version"] or "-", r["source"])), status)
    Console().print(table)


@plugins_app.command("new")
def plugins_new(
    name: Annotated[str, typer.Argument(help="The package, entry point and component name, e.g. my-fusion.", show_default=False)],
    kind: Annotated[str, typer.Option(help="fusion, encoder, loss, augmenter, peft, dataset, task or balancer.", show_default=False)],
    directory: Annotated[str, typer.Option("--dir", help="Where the package directory is created.")] = ".",
) -> None:
    """Write a pip-installable plugin package with one working component of KIND, and its tests."""
    from ..scaffold import new_plugin

    target = new_plugin(name, kind, directory)
    files = sorted(str(p.relative_to(target)) for p in target.rglob("*") if p.is_file())
    typer.echo(f"wrote {target}: {', '.join(files)}")
    typer.echo(f"next: pip install -e '{target}[test]' && pytest {target}")
