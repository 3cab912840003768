"""Nested settings tables as flat dotted keys; pure Python, so any module may import it."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any


def flatten(table: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested tables to dotted keys: {"fusion": {"heads": 4}} -> {"fusion.heads": 4}; lists stay values."""
    out: dict[str, Any] = {}
    for key, value in table.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out.update(flatten(value, f"{dotted}."))
        else:
            out[dotted] = value
    return out


def format_value(value: Any) -> str:
    """A setting or metric value as tables and labels show it: floats to 4 decimals (3 significant
    digits below 0.001), booleans lower-case, lists and dicts as JSON, None as "-"."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) >= 1e-3 or value == 0 else f"{value:.3g}"
    if isinstance(value, list | dict):
        return json.dumps(value)
    return str(value)


__all__ = ["flatten", "format_value"]
