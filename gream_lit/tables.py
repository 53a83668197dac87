"""Printing metric tables to the terminal (results also go to TensorBoard through the logger)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

SUMMARY_METRICS = ("recall@10", "ndcg@10")


def format_value(value: float) -> str:
    """4 decimals, or 3 significant digits where 4 decimals would print 0.0000 for a non-zero value."""
    if value != 0 and abs(value) < 5e-5:
        return f"{value:.3g}"
    return f"{value:.4f}"


def test_value(metrics: Mapping[str, object], name: str) -> float | None:
    """The direct test metric ``<prefix>/test/<name>`` of one stage (not a probe set's), if logged."""
    for key, value in metrics.items():
        if key.endswith(f"/test/{name}") and key.count("/") == 2:
            try:
                return float(value)
            except (TypeError, ValueError):
                return None
    return None


def format_stage_table(
    rows: Sequence[tuple[str, Mapping[str, object], int | None]], names: Sequence[str] = SUMMARY_METRICS
) -> str:
    """One line per stage, in the order given: test users and the direct test metrics ``names``."""
    header = ["stage", "test users", *names]
    body = []
    for stage, metrics, users in rows:
        values = [test_value(metrics, n) for n in names]
        body.append(
            [stage, "–" if users is None else f"{users:,}", *("–" if v is None else format_value(v) for v in values)]
        )
    widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header))]
    line = "  ".join("-" * w for w in widths)
    out = ["  ".join(h.ljust(w) for h, w in zip(header, widths)), line]
    out += ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))) for r in body]
    return "\n".join(out)


def format_metric_table(metrics: Mapping[str, object], title: str = "") -> str:
    """A two-column text table, keys sorted, values as floats (``format_value``)."""
    rows = []
    for key in sorted(metrics):
        value = metrics[key]
        try:
            value = float(value)
        except (TypeError, ValueError):
            continue
        rows.append((key, format_value(value)))
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
