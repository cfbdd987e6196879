"""`modelrepo serve` started as a separate process, exactly as a user runs it."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import pytest


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Served:
    url: str
    root: Path
    process: subprocess.Popen[str]
    api_key: str | None = None
    log: deque[str] = field(default_factory=lambda: deque(maxlen=200))
    drain: threading.Thread | None = None

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        headers: dict[str, str] | None = None,
        authorized: bool = True,
    ) -> Answer:
        data = json.dumps(body).encode() if body is not None else None
        sent = {"Content-Type": "application/json", **(headers or {})}
        if authorized and self.api_key:
            sent["Authorization"] = f"Bearer {self.api_key}"
        outgoing = urllib.request.Request(self.url + path, data=data, headers=sent, method=method)
        try:
            with urllib.request.urlopen(outgoing, timeout=30) as answer:
                return Answer(answer.status, dict(answer.headers.items()), answer.read())
        except urllib.error.HTTPError as error:
            return Answer(error.code, dict(error.headers.items()), error.read())

    def drop(self, relative: str, data: bytes) -> Path:
        """Write a file into the drop folder the way `cp` does: create, write, close."""
        path = self.root / "artifacts" / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        return path


def wait_for(check: Callable[[], Any], timeout: float, interval: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(interval)


def start_serve(
    root: Path, *extra: str, api_key: str | None = None, environment: dict[str, str] | None = None
) -> Served:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODELREPO_")}
    env.update(environment or {})
    if api_key:
        env["MODELREPO_API_KEY"] = api_key
    process = subprocess.Popen(
        [sys.executable, "-m", "modelrepo.cli", "serve", "--root", str(root), "--port", "0", *extra],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    assert process.stderr is not None
    line = process.stderr.readline()
    found = re.search(r"on (http://\S+)/api", line)
    if not found:
        process.kill()
        raise AssertionError(f"modelrepo serve did not start: {line}{process.stderr.read()}")
    served = Served(found.group(1), root, process, api_key)
    # Keep reading its log, or the server blocks once the pipe's buffer is full.
    served.drain = threading.Thread(target=_drain, args=(process.stderr, served.log), daemon=True)
    served.drain.start()
    wait_for(lambda: served.request("GET", "/api/health").status == 200, timeout=10)
    return served


def _drain(stream: IO[str], keep: deque[str]) -> None:
    for line in stream:
        keep.append(line)


def stop_serve(served: Served) -> None:
    served.process.send_signal(signal.SIGTERM)
    try:
        served.process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        served.process.kill()
        served.process.wait()
    if served.drain is not None:
        served.drain.join(timeout=10)  # it reads the log to its end
        if not served.drain.is_alive() and served.process.stderr is not None:
            served.process.stderr.close()


def run_modelrepo(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """The installed CLI in its own process, with no MODELREPO_* settings leaking in."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODELREPO_")}
    return subprocess.run(
        [sys.executable, "-m", "modelrepo.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        check=False,
    )


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    running = start_serve(tmp_path / "root")
    yield running
    stop_serve(running)
    assert running.process.returncode == 0


@pytest.fixture
def served_with_key(tmp_path: Path) -> Iterator[Served]:
    running = start_serve(tmp_path / "root", api_key="s3cret-test-key")
    yield running
    stop_serve(running)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A real, small file system (a 16 MiB tmpfs) that a test can fill up or make read-only.

    Mounting needs root, as `make test` runs on CI and on these machines; elsewhere these tests
    fail with the mount's own error rather than pretend."""
    mount = tmp_path / "small-disk"
    mount.mkdir()
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=16m,mode=0755", "tmpfs", str(mount)],
        check=True,
        capture_output=True,
        text=True,
    )
    try:
        yield mount
    finally:
        subprocess.run(["umount", "--lazy", str(mount)], check=False, capture_output=True)


def fill_up(disk: Path) -> Path:
    """Write a file until the disk has no byte left; return it (delete it to free the space)."""
    import errno

    filler = disk / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        size = 1 << 20
        while size:
            try:
                os.write(fd, b"\0" * size)
            except OSError as error:
                assert error.errno == errno.ENOSPC, error
                size //= 2
    finally:
        os.close(fd)
    return filler
