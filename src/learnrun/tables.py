"""Plain-text tables for terminals (the CLI's metrics and checkpoints, tuning's trials)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


def format_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A plain text table with a header rule; cells are ``str()``-ed."""
    cells = [[str(c) for c in row] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]
    line = "  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))
    rule = "  ".join("-" * w for w in widths)
    body = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells]
    return "\n".join([line.rstrip(), rule, *body])


def format_value(value: Any) -> str:
    """Format a metric: tensors and numpy scalars become numbers, floats get 6 digits."""
    if hasattr(value, "item") and callable(value.item):
        try:
            value = value.item()
        except (ValueError, RuntimeError):
            return str(value)
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def format_metrics(metrics: Mapping[str, Any]) -> str:
    """Two-column table of a metrics dict (``global_step`` first, ``loss`` second)."""
    order = sorted(metrics, key=lambda k: (k != "global_step", k != "loss", k))
    return format_table(["metric", "value"], [[k, format_value(metrics[k])] for k in order])
