"""The Markdown report (DIR/benchmarks.md) and its plots (DIR/benchmarks/*.png)
from the results; matplotlib draws without a display."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

INTRODUCTION = """\
# Benchmarks

Made by `scripts/bench` (`python -m bench all`; see bench/). Every benchmark
runs its baselines in the same run, on the same machine, against its own
PostgreSQL, loopback only. Each measurement is repeated; tables give the
median with the interquartile range (p25-p75) and the extremes; every sample
is in [results.json](benchmarks/results.json). Ratios are of medians.
Benchmarks re-run after a change name the commit they ran at; the machine
table names the last run's.

Reproduce: `scripts/bench` (everything, embedded PostgreSQL 18), or
`BENCH_DATABASE_URL=postgresql://postgres:...@127.0.0.1:5432/postgres
scripts/bench NAME --repeat N` (these results: Debian's PostgreSQL 15).
"""


def _machine(machine: dict[str, Any]) -> str:
    rows = "\n".join(f"| {name} | {value} |" for name, value in machine.items())
    return f"## Machine\n\n| | |\n|---|---|\n{rows}\n"


def _targets(outcome: dict[str, Any]) -> str:
    lines = ["| measure | value | target | met |", "|---|---|---|---|"]
    for row in outcome.get("targets", []):
        lines.append(
            f"| {row['measure']} | {row['value']} | {row['target']} | {'yes' if row['met'] else '**no**'} |"
        )
    return "\n".join(lines) + "\n"


def _stat(value: dict[str, Any]) -> str:
    return f"{value['median']} ({value['p25']}-{value['p75']}; {value['min']}-{value['max']})"


def _flat_rows(results: dict[str, Any], prefix: str = "") -> list[tuple[str, dict[str, Any]]]:
    rows = []
    for name, value in results.items():
        if isinstance(value, dict) and "median" in value:
            rows.append((f"{prefix}{name}", value))
        elif isinstance(value, dict):
            rows += _flat_rows(value, f"{prefix}{name} / ")
    return rows


def _results_table(outcome: dict[str, Any]) -> str:
    lines = [f"| measurement | median (p25-p75; min-max), {outcome['unit']} |", "|---|---|"]
    lines += [f"| {name} | {_stat(value)} |" for name, value in _flat_rows(outcome["results"])]
    return "\n".join(lines) + "\n"


def _plot(name: str, outcome: dict[str, Any], folder: Path) -> str | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = _flat_rows(outcome["results"])
    if name == "api":
        rows = [(label, value) for label, value in rows if label.endswith("/ rps")]
    if name == "blocked":
        rows = [(label, value) for label, value in rows if "p99" in label]
    labels = [label.removesuffix(" / rps") for label, _ in rows]
    medians = [value["median"] for _, value in rows]
    low = [value["median"] - value["p25"] for _, value in rows]
    high = [value["p75"] - value["median"] for _, value in rows]
    figure, axes = plt.subplots(figsize=(9, max(2.5, 0.38 * len(rows) + 1)))
    axes.barh(labels, medians, xerr=[low, high], color="#4C78A8", capsize=3)
    axes.invert_yaxis()
    axes.set_xlabel(outcome["unit"].split(";")[0] if name != "api" else "requests per second")
    axes.set_title(outcome["title"])
    figure.tight_layout()
    path = folder / f"{name}.png"
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path.name


def _peers_table(rows: list[dict[str, Any]]) -> str:
    """Each server and request: requests/s, p50, p99 and CPU per request
    (medians), each with its ratio to the baseline's with as many workers."""
    metrics = (
        ("rps", "requests/s"),
        ("p50_ms", "p50 ms"),
        ("p99_ms", "p99 ms"),
        ("cpu_ms", "CPU ms/request"),
    )
    head = " | ".join(f"{title} (x baseline)" for _, title in metrics)
    lines = [f"| server | request | {head} |", "|---|---|" + "---|" * len(metrics)]
    for row in rows:
        cells = " | ".join(
            f"{row[metric]} ({row[f'{metric} / baseline']}x)" for metric, _ in metrics
        )
        lines.append(f"| {row['server']} | {row['request']} | {cells} |")
    return "\n".join(lines) + "\n"


def write_report(results: dict[str, Any], out: Path) -> Path:
    folder = out / "benchmarks"
    folder.mkdir(parents=True, exist_ok=True)
    parts = [INTRODUCTION, _machine(results["machine"])]
    summary = ["## Targets", ""]
    for outcome in results["benchmarks"].values():
        if outcome.get("targets"):
            summary.append(f"**{outcome['title']}**\n\n{_targets(outcome)}")
    parts.append("\n".join(summary))
    for name, outcome in results["benchmarks"].items():
        section = [
            f"## {outcome['title']}",
            "",
            textwrap.dedent(outcome["method"]).strip(),
            "",
        ]
        section.append(
            f"{outcome['repeat']} repetitions at commit {outcome.get('commit', 'unknown')}; "
            f"the benchmark took {outcome['seconds']} s.\n"
        )
        section.append(_results_table(outcome))
        if "peers" in outcome:
            section.append(_peers_table(outcome["peers"]))
        extras = (
            "ratios",
            "load_average",
            "growth_1000_over_10",
            "peak_rss_mib",
            "error_events",
            "unlocked",
        )
        for extra in (*extras, "failed_reads"):
            if extra in outcome:
                section.append(f"`{extra}`:\n\n```json\n{_json(outcome[extra])}\n```\n")
        image = _plot(name, outcome, folder)
        if image:
            section.append(f"![{outcome['title']}](benchmarks/{image})\n")
        notes = folder / f"{name}.notes.md"
        if notes.exists():
            section.append(notes.read_text())
        parts.append("\n".join(section))
    path = out / "benchmarks.md"
    path.write_text("\n".join(parts).rstrip() + "\n")
    return path


def _json(value: Any) -> str:
    import json

    return json.dumps(value, indent=2)
