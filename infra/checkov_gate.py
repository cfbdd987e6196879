"""Fail `make test` unless checkov parsed every Bicep file and found nothing.

checkov exits 0 when it cannot parse a Bicep file (it just skips it), so its exit code alone
would let a broken template through: this reads its JSON report instead.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def problems(report: object) -> list[str]:
    runs = report if isinstance(report, list) else [report]
    found: list[str] = [] if runs else ["checkov reported nothing"]
    for run in runs:
        if not isinstance(run, dict) or run.get("check_type") != "bicep":
            found.append(f"unexpected checkov report: {str(run)[:200]}")
            continue
        summary = run["summary"]
        if summary["parsing_errors"]:
            found.append(f"checkov could not parse {summary['parsing_errors']} Bicep file(s)")
        if not summary["resource_count"]:
            found.append("checkov found no resources to check")
        found += [
            f"{c['check_id']} {c['check_name']}: {c['resource']} ({c['file_path']})"
            for c in run["results"].get("failed_checks", [])
        ]
    return found


def main(path: str) -> int:
    try:
        report = json.loads(Path(path).read_text())
    except (OSError, ValueError) as error:
        print(f"checkov produced no readable report: {error}", file=sys.stderr)
        return 1
    if found := problems(report):
        print("infra/ does not pass checkov:\n  " + "\n  ".join(found), file=sys.stderr)
        return 1
    summary = (report if isinstance(report, dict) else report[0])["summary"]
    print(f"checkov: {summary['passed']} passed, {summary['skipped']} skipped (explained in the Bicep), 0 failed")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
