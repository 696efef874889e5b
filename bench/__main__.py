"""python -m bench [all | NAME ... | report] [--repeat N] [--out DIR]

Sets up its own PostgreSQL (or uses BENCH_DATABASE_URL), runs each benchmark
REPEAT times, and writes DIR/benchmarks/results.json and the report
DIR/benchmarks.md with its plots. Running some benchmarks keeps the others'
earlier results; `report` only writes the report again (after editing the
notes in DIR/benchmarks/NAME.notes.md).
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import time
from pathlib import Path

from bench.harness import ROOT, machine, postgres

BENCHMARKS = {
    "startup": "bench.startup",
    "fleet": "bench.fleet",
    "history": "bench.history",
    "api": "bench.api",
    "layers": "bench.layers",
    "encoding": "bench.encoding",
    "backfill": "bench.backfill",
    "blocked": "bench.blocked",
    "protocol": "bench.protocol",
    "shares": "bench.shares",
    "pages": "bench.pages",
    "memory": "bench.memory",
}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[1])
    parser.add_argument(
        "names", nargs="*", default=["all"], help="all, or some of: " + ", ".join(BENCHMARKS)
    )
    parser.add_argument(
        "--repeat", type=int, default=7, help="runs of each measurement (default 7)"
    )
    parser.add_argument(
        "--out", type=Path, default=ROOT / "docs", help="where results and report go"
    )
    arguments = parser.parse_args(argv)
    results_path = arguments.out / "benchmarks" / "results.json"
    if arguments.names == ["report"]:
        from bench.report import write_report

        print(write_report(json.loads(results_path.read_text()), arguments.out))
        return 0
    names = list(BENCHMARKS) if arguments.names == ["all"] else arguments.names
    unknown = [name for name in names if name not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark {', '.join(unknown)}; choose from {', '.join(BENCHMARKS)}")
    if arguments.repeat < 1:
        parser.error("--repeat must be at least 1")
    results = json.loads(results_path.read_text()) if results_path.exists() else {"benchmarks": {}}
    with postgres() as admin:
        results["machine"] = machine(admin)
        for name in names:
            print(f"== {name}", flush=True)
            started = time.perf_counter()
            module = importlib.import_module(BENCHMARKS[name])
            outcome = module.benchmark(admin, arguments.repeat)
            outcome["seconds"] = round(time.perf_counter() - started, 1)
            outcome["repeat"] = arguments.repeat
            outcome["commit"] = results["machine"]["commit"]
            results["benchmarks"][name] = outcome
            print(
                json.dumps({k: outcome[k] for k in ("targets",) if k in outcome}, indent=2),
                flush=True,
            )
            results_path.parent.mkdir(parents=True, exist_ok=True)
            results_path.write_text(json.dumps(results, indent=2, default=str) + "\n")
    from bench.report import write_report

    write_report(results, arguments.out)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
