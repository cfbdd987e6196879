"""Timing, statistics and result rows shared by every scenario.

Every figure the benchmark reports comes from `Measured`: operations counted, wall time taken and
the latency of each operation, all on `time.perf_counter` in the process that did the work.
"""

from __future__ import annotations

import contextlib
import math
import os
import platform
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

MODELREPO = "modelrepo"
MLFLOW = "MLflow"
RAW = "limit"


def percentile(values: list[float], fraction: float) -> float:
    """Nearest-rank percentile; no interpolation, so every reported value was actually seen."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, round(fraction * len(ordered) + 0.5 - 1e-9))
    return ordered[min(rank, len(ordered)) - 1]


@dataclass
class Measured:
    """One system's work in one case: pooled over the rounds it ran."""

    operations: int = 0
    failures: int = 0
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def add(self, other: Measured) -> None:
        self.operations += other.operations
        self.failures += other.failures
        self.seconds += other.seconds
        self.latencies.extend(other.latencies)
        self.errors.extend(other.errors[: max(0, 5 - len(self.errors))])

    @property
    def throughput(self) -> float:
        """Successful operations per second of wall time."""
        return (self.operations - self.failures) / self.seconds if self.seconds > 0 else float("nan")

    def summary(self) -> dict[str, Any]:
        return {
            "operations": self.operations,
            "failures": self.failures,
            "seconds": round(self.seconds, 4),
            "throughput": round(self.throughput, 2),
            "p50_ms": round(percentile(self.latencies, 0.50) * 1000, 3),
            "p99_ms": round(percentile(self.latencies, 0.99) * 1000, 3),
            "max_ms": round(max(self.latencies, default=float("nan")) * 1000, 3),
            "errors": self.errors,
        }


def run_concurrently(operation: Callable[[int], object], count: int, writers: int) -> Measured:
    """Run `operation(i)` for i in range(count) on `writers` threads, all released at once.

    A failure is any exception; it is counted and its text kept (a few), never retried here: the
    systems under test retry on their own.
    """
    measured = Measured(operations=count)
    lock = threading.Lock()
    next_index = iter(range(count))
    start = threading.Barrier(writers + 1)

    def worker() -> None:
        latencies: list[float] = []
        failures: list[str] = []
        start.wait()
        while True:
            with lock:
                index = next(next_index, None)
            if index is None:
                break
            began = time.perf_counter()
            try:
                operation(index)
            except Exception as error:
                failures.append(f"{type(error).__name__}: {error}"[:300])
            latencies.append(time.perf_counter() - began)
        with lock:
            measured.latencies.extend(latencies)
            measured.failures += len(failures)
            measured.errors.extend(failures[: max(0, 5 - len(measured.errors))])

    threads = [threading.Thread(target=worker, name=f"writer-{n}") for n in range(writers)]
    for thread in threads:
        thread.start()
    start.wait()
    began = time.perf_counter()
    for thread in threads:
        thread.join()
    measured.seconds = time.perf_counter() - began
    return measured


def alternate(rounds: int, systems: list[str]) -> Iterable[tuple[int, str]]:
    """(round, system) in ABAB / BABA order, so drift on a shared machine hits both sides alike."""
    for round_number in range(rounds):
        order = systems if round_number % 2 == 0 else list(reversed(systems))
        for system in order:
            yield round_number, system


def row(case: str, system: str, measured: Measured, **extra: Any) -> dict[str, Any]:
    return {"case": case, "system": system, **measured.summary(), **extra}


def ratio(numerator: float, denominator: float) -> float | None:
    if not denominator or math.isnan(denominator) or math.isnan(numerator):
        return None
    return round(numerator / denominator, 2)


def machine() -> dict[str, Any]:
    """What the figures were measured on: they only compare within one run on one machine."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            for line in info:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    memory_gb: float | None = None
    with contextlib.suppress(ValueError, OSError):
        memory_gb = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gb": memory_gb,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
    }
