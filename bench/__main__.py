"""`python -m bench`: run the scenarios, write JSON, Markdown and a PNG chart.

`make bench` runs the full sizes into bench/results/ and refreshes the table in bench/README.md;
`--smoke` runs every scenario at a tiny size (what `make test` does) into the folder given.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import cloud, coldstart, ingest, large, listing, outbox, pages, raw_sqlite, register, report, ui
from bench.common import machine
from bench.sizes import FULL, SMOKE, Sizes

Scenario = Callable[[Sizes, Path], dict[str, Any]]

SCENARIOS: dict[str, Scenario] = {
    "register": register.run,
    "ingest": ingest.run,
    "listing": listing.run,
    "large": large.run,
    "sqlite": raw_sqlite.run,
    "cloud": cloud.run,
    "racing": cloud.run_racing,
    "outbox": outbox.run,
    "pages": pages.run,
    "ui": ui.run,
    "coldstart": coldstart.run,
}

HERE = Path(__file__).parent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: checks that every scenario still works")
    parser.add_argument("--out", type=Path, default=HERE / "results", help="folder for results.json/.md/.png")
    parser.add_argument("--only", nargs="+", choices=sorted(SCENARIOS), help="run only these scenarios")
    parser.add_argument("--work", type=Path, help="scratch folder (default: a temporary one, removed afterwards)")
    parser.add_argument("--readme", action="store_true", help="also refresh the table in bench/README.md")
    parser.add_argument("--rounds", type=int, help="override the number of alternating rounds")
    parser.add_argument("--writers", type=int, nargs="+", help="override scenario 1's writer counts")
    parser.add_argument("--modes", nargs="+", choices=["in-process", "HTTP"], help="scenario 1's modes")
    parser.add_argument("--cold-runs", type=int, help="override the cold-start scenario's runs per case")
    args = parser.parse_args(argv)
    sizes = SMOKE if args.smoke else FULL
    if args.rounds:
        sizes = replace(sizes, rounds=args.rounds)
    if args.writers:
        sizes = replace(sizes, register_writers=tuple(args.writers))
    if args.modes:
        sizes = replace(sizes, register_modes=tuple(args.modes))
    if args.cold_runs:
        sizes = replace(sizes, coldstart_rounds=args.cold_runs)
    names = args.only or list(SCENARIOS)
    work = Path(tempfile.mkdtemp(prefix="modelrepo-bench-", dir=args.work))
    results: dict[str, Any] = {
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "smoke": args.smoke,
        "machine": machine(),
        "mlflow": _mlflow_version(),
        "scenarios": {},
    }
    failed = False
    try:
        for name in names:
            began = time.perf_counter()
            print(f"bench: {name} ...", file=sys.stderr, flush=True)
            try:
                outcome = SCENARIOS[name](sizes, work)
            except Exception:
                failed = True
                outcome = {"title": name, "error": traceback.format_exc(limit=8), "rows": []}
                print(outcome["error"], file=sys.stderr)
            outcome["wall_seconds"] = round(time.perf_counter() - began, 1)
            outcome["run"] = results["started"]
            results["scenarios"][name] = outcome
            print(f"bench: {name} done in {outcome['wall_seconds']} s", file=sys.stderr, flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if args.only and not args.smoke:
        _keep_earlier(results, args.out / "results.json")
    results["targets"] = report.targets(results)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    markdown = report.markdown(results)
    (args.out / "results.md").write_text(markdown, encoding="utf-8")
    report.chart(results, args.out / "throughput.png")
    report.coldstart_chart(results, args.out / "coldstart.png")
    if args.readme:
        report.refresh_readme(HERE / "README.md", markdown)
        report.refresh_readme(HERE.parent / "README.md", "\n".join(report.summary(results)) + "\n")
    print(markdown)
    return 1 if failed else 0


def _keep_earlier(results: dict[str, Any], path: Path) -> None:
    """With --only, the other scenarios keep their figures from the run that measured them.

    Each scenario is compared only within itself (its own alternation), so a report may hold
    scenarios of different runs; each says which run it is from.
    """
    if not path.exists():
        return
    earlier = json.loads(path.read_text(encoding="utf-8"))
    merged = {}
    for name in SCENARIOS:
        if name in results["scenarios"]:
            merged[name] = results["scenarios"][name]
        elif name in earlier.get("scenarios", {}):
            merged[name] = {"run": earlier["started"], **earlier["scenarios"][name]}
    results["scenarios"] = merged


def _mlflow_version() -> str:
    from bench import mlflow_peer

    return mlflow_peer.VERSION


if __name__ == "__main__":
    sys.exit(main())
