"""Turn one run's results into the targets verdict, a Markdown report and a PNG chart."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from bench.common import MLFLOW, MODELREPO, RAW

START, END = "<!-- bench:results:start -->", "<!-- bench:results:end -->"


def _rows(results: dict[str, Any], scenario: str) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = results["scenarios"].get(scenario, {}).get("rows", [])
    return rows


def _find(rows: list[dict[str, Any]], system: str, **match: Any) -> dict[str, Any] | None:
    for found in rows:
        if found.get("system") == system and all(found.get(k) == v for k, v in match.items()):
            return found
    return None


def _target(text: str, measured: str | None, met: bool | None) -> dict[str, Any]:
    return {"target": text, "measured": measured or "not measured in this run", "met": met}


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Each target of the issue, judged only on figures of this run; smoke runs judge nothing."""
    judged: list[dict[str, Any]] = []
    smoke = results.get("smoke", False)

    def verdict(ok: bool) -> bool | None:
        return None if smoke else ok

    register = _rows(results, "register")
    writers = max((r.get("writers", 0) for r in register), default=0)
    ours = _find(register, MODELREPO, mode="in-process", writers=writers)
    peer = _find(register, MLFLOW, mode="in-process", writers=writers)
    text = f"Embedded register at {writers} writers: >= 20x MLflow, p99 <= 20 ms, zero failures"
    if ours and peer and ours.get("ratio") is not None:
        judged.append(
            _target(
                text,
                f"{ours['ratio']}x ({ours['throughput']:.0f} vs {peer['throughput']:.0f}/s), "
                f"p99 {ours['p99_ms']:.1f} ms, {ours['failures']} failures, versions 1..N: {ours['verified']}",
                verdict(
                    ours["ratio"] >= 20 and ours["p99_ms"] <= 20 and ours["failures"] == 0 and bool(ours["verified"])
                ),
            )
        )
    else:
        judged.append(_target(text, None, None))

    ingest = _rows(results, "ingest")
    ours = _find(ingest, MODELREPO)
    text = "Ingest >= 10x MLflow"
    if ours and ours.get("ratio") is not None:
        limit = _find(ingest, RAW)
        measured = f"{ours['ratio']}x ({ours['throughput']:.0f} vs {_find(ingest, MLFLOW)['throughput']:.0f}/s)"  # type: ignore[index]
        if limit:
            measured += (
                f"; writing the files alone runs at {limit['throughput']:.0f}/s ({ours['of_limit']:.0%} reached)"
            )
        judged.append(_target(text, measured, verdict(ours["ratio"] >= 10 and bool(ours["verified"]))))
    else:
        judged.append(_target(text, None, None))

    listing = _rows(results, "listing")
    pages = [r for r in listing if r.get("kind") == "page" and r["system"] == MODELREPO]
    text = "A page of 100 costs the same (+-20%) at the smallest and the largest size"
    if pages:
        smallest, largest = min(r["size"] for r in pages), max(r["size"] for r in pages)
        parts, ok = [], True
        for where in ("newest", "middle"):
            low = _find(pages, MODELREPO, size=smallest, where=where)
            high = _find(pages, MODELREPO, size=largest, where=where)
            if low and high:
                change = high["p50_ms"] / low["p50_ms"] - 1
                ok = ok and abs(change) <= 0.2
                parts.append(
                    f"{where}: p50 {low['p50_ms']:.2f} ms at {smallest:,} -> "
                    f"{high['p50_ms']:.2f} ms at {largest:,} ({change:+.0%})"
                )
        judged.append(_target(text, "; ".join(parts), verdict(ok)))
    else:
        judged.append(_target(text, None, None))

    large = _rows(results, "large")
    text = "Large-file digest >= 80% of raw hashlib, peak RSS < 100 MB"
    recorded = [r for r in large if r.get("mode", "").startswith("record")]
    if recorded:
        parts = [f"{r['mode']}: {r['of_limit']:.0%} of the limit, peak RSS {r['peak_rss_mb']:.0f} MB" for r in recorded]
        ok = all(r["of_limit"] >= 0.8 and r["peak_rss_mb"] < 100 for r in recorded)
        judged.append(_target(text, "; ".join(parts), verdict(ok)))
    else:
        judged.append(_target(text, None, None))

    windows = sorted(
        (r for r in listing if r["case"].startswith("register") and r["system"] == MODELREPO), key=lambda r: r["size"]
    )
    text = "Register cost does not grow with the number of existing versions (+-20%)"
    if len(windows) >= 2:
        first, last = windows[0], windows[-1]
        change = last["p50_ms"] / first["p50_ms"] - 1
        judged.append(
            _target(
                text,
                f"p50 {first['p50_ms']:.2f} ms ({first['case']}) -> "
                f"{last['p50_ms']:.2f} ms ({last['case']}), {change:+.0%}",
                verdict(abs(change) <= 0.2 or change < 0),
            )
        )
    else:
        judged.append(_target(text, None, None))
    outbox = _rows(results, "outbox")
    ours = _find(outbox, MODELREPO)
    text = "Register with the outbox >= 90% of the same core without it, same run"
    if ours and ours.get("of_baseline") is not None:
        judged.append(
            _target(
                text,
                f"{ours['of_baseline']:.0%} ({ours['throughput']:.0f} vs "
                f"{_find(outbox, 'without outbox')['throughput']:.0f}/s), p99 {ours['p99_ms']:.1f} ms",  # type: ignore[index]
                verdict(ours["of_baseline"] >= 0.9 and bool(ours["verified"])),
            )
        )
    else:
        judged.append(_target(text, None, None))
    pages = _rows(results, "pages")
    for kind, label in (("experiments", "A page of experiments"), ("events", "A page of events")):
        found = [r for r in pages if r.get("kind") == kind]
        sizes = sorted({r["size"] for r in found})
        text = f"{label} costs the same (+-20%) at {sizes[0]:,} and {sizes[-1]:,}" if sizes else f"{label} is flat"
        if len(sizes) < 2:
            judged.append(_target(text, None, None))
            continue
        parts, ok = [], True
        for where in ("first", "middle"):
            low = _find(found, MODELREPO, size=sizes[0], where=where)
            high = _find(found, MODELREPO, size=sizes[-1], where=where)
            if low and high:
                change = high["p50_ms"] / low["p50_ms"] - 1
                ok = ok and abs(change) <= 0.2
                parts.append(f"{where}: p50 {low['p50_ms']:.2f} -> {high['p50_ms']:.2f} ms ({change:+.0%})")
        judged.append(_target(text, "; ".join(parts), verdict(ok)))
    views = sorted(_rows(results, "ui"), key=lambda r: r["versions"])
    text = "The web page's first view of an experiment costs the same (+-20%) at few and many versions"
    if len(views) >= 2:
        low, high = views[0], views[-1]
        text = (
            "The web page's first view of an experiment costs the same (+-20%) at "
            f"{low['versions']:,} and {high['versions']:,} versions"
        )
        change = high["p50_ms"] / low["p50_ms"] - 1
        judged.append(
            _target(
                text,
                f"p50 {low['p50_ms']:.2f} ms at {low['versions']:,} -> {high['p50_ms']:.2f} ms at "
                f"{high['versions']:,} ({change:+.0%})",
                verdict(abs(change) <= 0.2),
            )
        )

    racing = [r for r in _rows(results, "racing") if "not_measured" not in r]
    for backend in ("dynamodb-moto", "azurite-table"):
        for hosts in sorted({r["hosts"] for r in racing if r["backend"] == backend}):
            text = (
                f"{hosts} racing hosts on {backend}: >= 50% of the serial limit, 100% success, versions 1..N, "
                "p99 <= 4x serial time, <= 2 attempts per success"
            )
            ours = _find(racing, MODELREPO, backend=backend, hosts=hosts, policy="after")
            if ours is None:
                judged.append(_target(text, None, None))
                continue
            before = _find(racing, MODELREPO, backend=backend, hosts=hosts, policy="before")
            measured = _racing(ours)
            if before:
                measured += f" (old policy, same run: {_racing(before)})"
            ok = (
                ours["of_limit"] >= 0.5
                and ours["success_rate"] == 1.0
                and bool(ours["verified"])
                and ours["p99_of_serial"] <= 4
                and (ours["attempts_per_success"] or float("inf")) <= 2
            )
            judged.append(_target(text, measured, verdict(ok)))

    cold = [r for r in _rows(results, "coldstart") if r.get("system") == MODELREPO]
    text = "Cold start (import + first invocation, fresh python3.12) <= 1.5x the SDK-import floor, every handler"
    if cold:
        parts = [
            f"{r['function']} {r['x_floor']}x ({r['p50_ms']:.0f} ms; CPU {r.get('x_floor_cpu')}x)"
            + (f", {r['failures']} failed" if r["failures"] else "")
            for r in cold
        ]
        judged.append(_target(text, "; ".join(parts), verdict(all(r["met"] for r in cold))))
    else:
        judged.append(_target(text, None, None))
    return judged


# --- Markdown ------------------------------------------------------------------------------------


def _racing(found: dict[str, Any]) -> str:
    return (
        f"{found['throughput']:.1f}/s = {found['of_limit']:.0%} of {found['serial_limit']:.0f}/s, "
        f"{found['success_rate']:.0%} succeeded, 1..N {found['verified']}, p99 {found['p99_of_serial']:.1f}x serial, "
        f"{found['attempts_per_success']} attempts/success"
    )


def _num(value: Any, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def _extras(found: dict[str, Any]) -> str:
    notes = []
    if "of_limit" in found and found["of_limit"] is not None:
        notes.append(f"{found['of_limit']:.0%} of limit")
    if "mib_per_s" in found:
        notes.append(f"{found['mib_per_s']:,.0f} MiB/s, peak RSS {found['peak_rss_mb']:.0f} MB")
    if "conflicts" in found:
        retries = found.get("retries", found.get("transactions", found["operations"]) - found["operations"])
        notes.append(f"{found['conflicts']} conflicts, {retries} retries")
    if "success_rate" in found:
        notes.append(f"{found['success_rate']:.0%} succeeded")
    if found.get("of_baseline") is not None:
        notes.append(f"{found['of_baseline']:.0%} of the core without the outbox")
    if "baseline" in found:
        notes.append(f"core of commit {found['baseline']}")
    if "cpu_us" in found:
        notes.append(f"{found['cpu_us']:.0f} µs CPU per registration")
    if found.get("verified") is False:
        notes.append("**VERIFICATION FAILED**")
    return "; ".join(notes)


def _side_by_side(scenario: dict[str, Any]) -> list[str]:
    lines = [
        f"| case | modelrepo {scenario['unit']} | p50 ms | p99 ms | max ms | fail "
        f"| MLflow {scenario['unit']} | p50 ms | p99 ms | max ms | fail | ratio |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    cases: dict[str, dict[str, dict[str, Any]]] = {}
    for found in scenario["rows"]:
        cases.setdefault(found["case"], {})[found["system"]] = found
    for case, systems in cases.items():
        cells = [case]
        shown = {MODELREPO: systems[RAW]} if set(systems) == {RAW} else systems  # a limit: first block
        for system in (MODELREPO, MLFLOW):
            found = shown.get(system)
            if found is None or "not_measured" in found:
                cells += [found["not_measured"] if found else "-", "", "", "", ""]
                continue
            flag = "" if found.get("verified", True) else " (NOT 1..N)"
            cells += [
                _num(found["throughput"]) + flag,
                _num(found["p50_ms"], 2),
                _num(found["p99_ms"], 2),
                _num(found["max_ms"], 1),
                _num(found["failures"]),
            ]
        ours = shown.get(MODELREPO, {})
        mark = f"{ours['ratio']}x" if ours.get("ratio") is not None else "-"
        if ours.get("of_limit") is not None:
            mark += f" ({ours['of_limit']:.0%} of limit)"
        cells.append(mark)
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _single(scenario: dict[str, Any]) -> list[str]:
    lines = [
        f"| case | system | {scenario['unit']} | p50 ms | p99 ms | max ms | fail | notes |",
        "|---|---|---:|---:|---:|---:|---:|---|",
    ]
    for found in scenario["rows"]:
        if "not_measured" in found:
            lines.append(f"| {found['case']} | {found['system']} | {found['not_measured']} | | | | | |")
            continue
        rate = found.get("mib_per_s", found["throughput"])
        lines.append(
            f"| {found['case']} | {found['system']} | {_num(rate)} | {_num(found['p50_ms'], 2)} | "
            f"{_num(found['p99_ms'], 2)} | {_num(found['max_ms'], 1)} | {_num(found['failures'])} | {_extras(found)} |"
        )
    return lines


def _racing_table(scenario: dict[str, Any]) -> list[str]:
    lines = [
        "| case | registrations/s | serial limit /s | of limit | succeeded | 1..N | p99 ms | 4x serial ms "
        "| attempts/success | conflicts |",
        "|---|---:|---:|---:|---:|---|---:|---:|---:|---:|",
    ]
    for found in scenario["rows"]:
        if "not_measured" in found:
            lines.append(f"| {found['case']} | {found['not_measured']} | | | | | | | | |")
            continue
        lines.append(
            f"| {found['case']} | {_num(found['throughput'])} | {_num(found['serial_limit'])} | "
            f"{found['of_limit']:.0%} | {found['success_rate']:.0%} | {found['verified']} | "
            f"{_num(found['p99_ms'], 0)} | {_num(4 * found['serial_ms'], 0)} | "
            f"{_num(found['attempts_per_success'], 2)} | {_num(found['conflicts'])} |"
        )
    return lines


def _coldstart(scenario: dict[str, Any]) -> list[str]:
    lines = [
        "| cloud | case | runs | fail | p50 ms | p95 ms | max ms | init p50 ms | CPU p50 ms "
        "| x floor p50 | x floor p95 | x floor CPU |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for found in scenario["rows"]:
        floor = found["system"] == RAW
        cells = [
            found.get("cloud", ""),
            f"*{found['case']}*" if floor else found["case"],
            _num(found["runs"]),
            _num(found["failures"]),
            _num(found["p50_ms"]),
            _num(found["p95_ms"]),
            _num(found["max_ms"]),
            _num(found.get("init_p50_ms")),
            _num(found.get("cpu_p50_ms")),
            "" if floor else f"{_num(found.get('x_floor'), 2)}x" + ("" if found.get("met") else " (**missed**)"),
            "" if floor else f"{_num(found.get('x_floor_p95'), 2)}x",
            "" if floor else f"{_num(found.get('x_floor_cpu'), 2)}x",
        ]
        lines.append("| " + " | ".join(cells) + " |")
        if found.get("errors"):
            lines.append(f"| | errors: {'; '.join(e[:200] for e in found['errors'])} | | | | | | | | | | |")
    return lines


def summary(results: dict[str, Any]) -> list[str]:
    """The machine and the targets: what the repository's README shows."""
    box = results["machine"]
    lines = [
        f"Run {results['started']}{' (smoke sizes: figures mean nothing)' if results['smoke'] else ''} on "
        f"{box['cpu']}, {box['cores']} cores, {box['memory_gb']} GiB, Python {box['python']}, "
        f"MLflow {results['mlflow']}. Ratios are modelrepo / MLflow measured alternately in this run"
        + (
            " (scenarios measured in an earlier run say so under their tables)."
            if any(s.get("run", results["started"]) != results["started"] for s in results["scenarios"].values())
            else "."
        ),
        "",
        "| target | measured | met |",
        "|---|---|---|",
    ]
    for found in results["targets"]:
        met = {True: "yes", False: "**no**", None: "-"}[found["met"]]
        lines.append(f"| {found['target']} | {found['measured']} | {met} |")
    return lines


def markdown(results: dict[str, Any]) -> str:
    lines = summary(results)
    for scenario in results["scenarios"].values():
        lines += ["", f"### {scenario['title']}", ""]
        if "error" in scenario:
            lines += ["```", scenario["error"].strip(), "```"]
            continue
        systems = {found["system"] for found in scenario["rows"]}
        if scenario.get("table") == "coldstart":
            lines += _coldstart(scenario)
        elif scenario.get("table") == "racing":
            lines += _racing_table(scenario)
        else:
            lines += _side_by_side(scenario) if MLFLOW in systems else _single(scenario)
        if scenario.get("note"):
            lines += ["", scenario["note"]]
        if scenario.get("log"):
            lines += ["", "```", scenario["log"].strip()[-1500:], "```"]
        run = f", run {scenario['run']}" if scenario.get("run") and scenario["run"] != results["started"] else ""
        lines.append(f"\n({scenario.get('wall_seconds', '?')} s of wall time{run})")
    return "\n".join(lines) + "\n"


def refresh_readme(readme: Path, table: str) -> None:
    text = readme.read_text(encoding="utf-8")
    if START not in text or END not in text:
        raise RuntimeError(f"{readme} has no {START} ... {END} section to refresh")
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    readme.write_text(f"{head}{START}\n{table}\n{END}{tail}", encoding="utf-8")


# --- chart ---------------------------------------------------------------------------------------


def chart(results: dict[str, Any], path: Path) -> None:
    """Throughput against concurrency for both systems, in process and over HTTP (log scale)."""
    import matplotlib  # type: ignore[import-not-found,unused-ignore]

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # type: ignore[import-not-found,unused-ignore]

    register = _rows(results, "register")
    figure, axes = plt.subplots(figsize=(9, 4.5), dpi=120)
    styles = {MODELREPO: "tab:blue", MLFLOW: "tab:orange"}
    for mode, line in (("in-process", "-"), ("HTTP", "--")):
        for system, colour in styles.items():
            points = sorted(
                (r["writers"], r["throughput"]) for r in register if r["system"] == system and r.get("mode") == mode
            )
            if points:
                xs, ys = zip(*points, strict=True)
                axes.plot(xs, ys, line, marker="o", color=colour, label=f"{system}, {mode}")
    raw = [r for r in _rows(results, "sqlite") if r["system"] == RAW]
    if raw:
        xs, ys = zip(*sorted((r["writers"], r["throughput"]) for r in raw), strict=True)
        axes.plot(xs, ys, ":", marker="s", color="grey", label="raw SQLite bump+insert (limit)")
    axes.set_xscale("log", base=2)
    writers = sorted({r["writers"] for r in register} | {r["writers"] for r in raw})
    axes.set_xticks(writers, [str(w) for w in writers])
    axes.set_yscale("log")
    axes.set_xlabel("concurrent writers")
    axes.set_ylabel("versions registered per second")
    axes.set_title(f"Register throughput vs concurrency ({results['machine']['cores']} cores)")
    axes.grid(True, which="both", alpha=0.3)
    if axes.get_legend_handles_labels()[0]:  # a run of other scenarios only has no curve to label
        axes.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


def coldstart_chart(results: dict[str, Any], path: Path) -> None:
    """Cold start per handler against its cloud's floor: p50 bars, p95 whiskers, the 1.5x line."""
    rows = _rows(results, "coldstart")
    if not rows:
        return
    import matplotlib  # type: ignore[import-not-found,unused-ignore]

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # type: ignore[import-not-found,unused-ignore]

    figure, axes = plt.subplots(figsize=(10, 0.5 * len(rows) + 1.5), dpi=120)
    labels, p50s, errors, colours = [], [], [], []
    for found in reversed(rows):
        labels.append(f"{found.get('cloud', '')}: {found.get('function') or found['case']}"[:60])
        p50s.append(found["p50_ms"])
        errors.append(max(0.0, found["p95_ms"] - found["p50_ms"]))
        colours.append("grey" if found["system"] == RAW else "tab:blue" if found.get("met") else "tab:red")
    axes.barh(labels, p50s, xerr=[[0.0] * len(errors), errors], color=colours, capsize=3)
    for cloud in ("aws", "azure"):
        floors = [r for r in rows if r["system"] == RAW and r.get("cloud") == cloud]
        if floors:
            axes.axvline(
                floors[0]["p50_ms"] * 1.5, linestyle=":", color="tab:green" if cloud == "aws" else "tab:purple"
            )
    axes.set_xlabel("ms from spawn to first answer: p50 bar, p95 whisker; dotted: 1.5x the AWS / Azure floor")
    axes.tick_params(axis="y", labelsize=7)
    axes.set_title("Cold start, fresh python3.12 (grey: floors; red: over 1.5x)")
    axes.grid(True, axis="x", alpha=0.3)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
