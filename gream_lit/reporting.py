"""Printing metric tables to the terminal (results also go to TensorBoard through the logger)."""

from __future__ import annotations

from collections.abc import Mapping


def format_metric_table(metrics: Mapping[str, object], title: str = "") -> str:
    """A two-column text table, keys sorted, values as floats with 4 decimals."""
    rows = []
    for key in sorted(metrics):
        value = metrics[key]
        try:
            value = float(value)
        except (TypeError, ValueError):
            continue
        rows.append((key, f"{value:.4f}"))
    if not rows:
        return f"{title}: no metrics" if title else "no metrics"
    width = max(len(k) for k, _ in rows)
    line = "-" * (width + 12)
    out = [title, line] if title else [line]
    out += [f"{k:<{width}}  {v:>9}" for k, v in rows]
    out.append(line)
    return "\n".join(out)


def print_metric_table(metrics: Mapping[str, object], title: str = "") -> None:
    print(format_metric_table(metrics, title), flush=True)
