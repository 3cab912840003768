"""The README's component table, generated from the registry (`mmreg list --markdown`), and the
command that rewrites it in place: ``python -m mmreg.catalog README.md``."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import ConfigError
from .registry import KINDS, Entry

if TYPE_CHECKING:
    from .plugins import PluginHost

BEGIN = "<!-- components: generated from the registry by `python -m mmreg.catalog README.md`; edit the plugins' help, not this table -->"
END = "<!-- end of components -->"
BUILTIN_SOURCE = "entry point (mmreg)"  # PluginInfo.source of mmreg's own plugins


def markdown_table(entries: Iterable[Entry]) -> str:
    """A markdown table of ``entries``: kind, name, plugin, parameter names and help, one row each."""
    rows = ["| kind | name | plugin | parameters | what it is |", "|---|---|---|---|---|"]
    for e in entries:
        params = ", ".join(f"`{p['name']}`" for p in e.describe_params()) or "-"
        text = e.help.replace("|", r"\|")  # a pipe would end the cell
        rows.append(f"| {e.kind.label} | `{e.name}` | {e.plugin} | {params} | {text} |")
    return "\n".join(rows) + "\n"


def builtin_entries(host: PluginHost) -> list[Entry]:
    """mmreg's own components (not third parties' installed beside it), by kind, then name."""
    builtin = {p.name for p in host.plugins if p.source == BUILTIN_SOURCE and p.error is None}
    return [e for kind in KINDS for e in host.registry(kind).list() if e.plugin in builtin]


def with_table(text: str, table: str) -> str:
    """``text`` with what lies between the BEGIN and END markers replaced by ``table``."""
    start, end = text.find(BEGIN), text.find(END)
    if start < 0 or end < start:
        raise ConfigError(f"no generated-table markers in the text; put {BEGIN!r} and {END!r} on lines of their own")
    return text[: start + len(BEGIN)] + "\n" + table + text[end:]


def main(argv: list[str] | None = None) -> None:
    """Rewrite the component table of each README named on the command line from the installed registry."""
    from .plugins import load_plugins

    table = markdown_table(builtin_entries(load_plugins(entry_points=True)))
    for name in argv if argv is not None else sys.argv[1:]:
        path = Path(name)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(with_table(path.read_text(encoding="utf-8"), table), encoding="utf-8")
        os.replace(tmp, path)


if __name__ == "__main__":
    main()
