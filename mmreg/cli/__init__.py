"""The mmreg command-line interface: parses, calls the Python API, prints with rich."""

from __future__ import annotations

import os
import sys
import traceback
from typing import Annotated

import click
import typer

from .. import __version__
from ..errors import MmregError
from . import data, listing, run, runs, search
from .caption import caption_command
from .predict import predict_command
from .export import export_command
from .weightspace import soup_command, wise_command
from .names import RegistryHelp
from .state import state

app = typer.Typer(
    name="mmreg",
    help="Compose multimodal (image + text) experiments from plugins, train and compare them.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)
app.command("run", cls=RegistryHelp)(run.run_command)
app.command("list", cls=RegistryHelp)(listing.list_command)
app.command("show")(listing.show_command)
app.add_typer(listing.plugins_app, name="plugins")
app.command("eval")(runs.eval_command)
app.add_typer(runs.runs_app, name="runs")
app.add_typer(data.data_app, name="data")
app.command("export")(export_command)
app.command("search")(search.search_command)
app.command("caption")(caption_command)
app.command("predict")(predict_command)
app.command("wise")(wise_command)
app.command("soup")(soup_command)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"mmreg {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
    debug: Annotated[bool, typer.Option("--debug", help="Show the full traceback of an error (or MMREG_DEBUG=1).")] = False,
    plugin: Annotated[
        list[str] | None,
        typer.Option("--plugin", "-p", help="Load a plugin module (name or .py path); repeatable. Also MMREG_PLUGINS."),
    ] = None,
) -> None:
    state.debug = state.debug or debug
    state.extra_plugins = list(plugin or [])


# typer 0.2x raises exceptions of its own vendored click, older ones click's: catch both.
_CLICK_ERRORS = tuple({click.ClickException, *(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")})
_NO_ARGS = tuple(c for c in (getattr(click.exceptions, "NoArgsIsHelpError", None),) if c is not None)


def usage_line(exc: Exception) -> str:
    """One line for a usage error: what click says was wrong, and where the command's help is."""
    message = " ".join(exc.format_message().split())  # type: ignore[attr-defined]
    message = message[:1].lower() + message[1:]
    ctx = getattr(exc, "ctx", None)
    command = ctx.command_path if ctx is not None else "mmreg"
    return f"error: {message.rstrip('.')}; see '{command} --help'"


def main() -> None:
    """Run the CLI; bad input ends as one line on stderr and exit code 2."""
    state.debug = "--debug" in sys.argv[1:] or os.environ.get("MMREG_DEBUG", "") not in ("", "0")
    try:
        app(standalone_mode=False)
    except (click.exceptions.Exit, typer.Exit) as exc:
        sys.exit(exc.exit_code)
    except _CLICK_ERRORS as exc:
        if type(exc).__name__ == "NoArgsIsHelpError" or isinstance(exc, _NO_ARGS):  # `mmreg` alone: the help
            exc.show()
            sys.exit(0)
        if state.debug:
            traceback.print_exc()
        typer.echo(usage_line(exc), err=True)
        sys.exit(2)
    except click.exceptions.Abort:
        sys.exit(130)
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        sys.exit(130)
    except MmregError as exc:
        if state.debug:
            traceback.print_exc()
        typer.echo(f"error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except Exception as exc:
        if state.debug:
            traceback.print_exc()
        typer.echo(f"error: internal error: {type(exc).__name__}: {exc} (rerun with --debug for the traceback)", err=True)
        sys.exit(1)
