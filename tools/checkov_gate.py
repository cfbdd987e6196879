"""Fail `make test` unless checkov parsed the templates, checked resources, found nothing, and every
check it skipped carries the reason written next to the skip.

checkov exits 0 when it cannot parse a file (it just skips it), so its exit code alone would let a
broken template through: this reads its JSON report instead. Used for `infra/` (Bicep) and
`template.yaml` (CloudFormation/SAM).

    python tools/checkov_gate.py REPORT.json FRAMEWORK LABEL
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

MIN_REASON_CHARS = 20


def problems(report: Any, framework: str) -> list[str]:
    runs = report if isinstance(report, list) else [report]
    found: list[str] = [] if runs else ["checkov reported nothing"]
    for run in runs:
        if not isinstance(run, dict) or run.get("check_type") != framework:
            found.append(f"unexpected checkov report: {str(run)[:200]}")
            continue
        summary, results = run["summary"], run["results"]
        if summary["parsing_errors"]:
            found.append(f"checkov could not parse {summary['parsing_errors']} {framework} file(s)")
        if not summary["resource_count"]:
            found.append("checkov found no resources to check")
        found += [
            f"{c['check_id']} {c['check_name']}: {c['resource']} ({c.get('file_path', '?')})"
            for c in results.get("failed_checks", [])
        ]
        found += [
            f"{c['check_id']} is skipped on {c['resource']} without a reason"
            for c in results.get("skipped_checks", [])
            if len(str(c.get("check_result", {}).get("suppress_comment") or "").strip()) < MIN_REASON_CHARS
        ]
    return found


def main(path: str, framework: str, label: str) -> int:
    try:
        report = json.loads(Path(path).read_text())
    except (OSError, ValueError) as error:
        print(f"checkov produced no readable report: {error}", file=sys.stderr)
        return 1
    if found := problems(report, framework):
        print(f"{label} does not pass checkov:\n  " + "\n  ".join(found), file=sys.stderr)
        return 1
    summary = (report if isinstance(report, dict) else report[0])["summary"]
    print(
        f"checkov {label}: {summary['passed']} passed, {summary['skipped']} skipped "
        "(each with its reason beside it), 0 failed"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:4]))
