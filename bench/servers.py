"""The two HTTP servers under test, started as the user would start them, and one client for both.

Both servers get the same client: one keep-alive `http.client` connection per writer thread, JSON
bodies, the response read in full. The client's own cost is therefore the same on both sides.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class HttpError(Exception):
    def __init__(self, status: int, body: bytes) -> None:
        super().__init__(f"HTTP {status}: {body[:200].decode('utf-8', 'replace')}")
        self.status = status


class JsonClient:
    """A keep-alive JSON client; each thread gets its own connection."""

    def __init__(self, port: int) -> None:
        self.port = port
        self._local = threading.local()

    def _connection(self) -> http.client.HTTPConnection:
        connection: http.client.HTTPConnection | None = getattr(self._local, "connection", None)
        if connection is None:
            connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
            self._local.connection = connection
        return connection

    def call(
        self, method: str, path: str, body: Mapping[str, Any] | None = None, headers: Mapping[str, str] | None = None
    ) -> Any:
        payload = json.dumps(body).encode() if body is not None else None
        sent = {"Content-Type": "application/json", **(headers or {})} if payload is not None else dict(headers or {})
        for attempt in (1, 2):
            connection = self._connection()
            try:
                connection.request(method, path, payload, sent)
                response = connection.getresponse()
                data = response.read()
                break
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                # The server closed an idle keep-alive connection; a fresh one is not a retry of the
                # operation, which never reached the server.
                connection.close()
                self._local.connection = None
                if attempt == 2:
                    raise
        if response.status >= 400:
            raise HttpError(response.status, data)
        return json.loads(data) if data else None

    def close(self) -> None:
        connection = getattr(self._local, "connection", None)
        if connection is not None:
            connection.close()


def wait_until_healthy(port: int, path: str, process: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited with code {process.returncode} before it answered {path}")
        with contextlib.suppress(OSError, http.client.HTTPException):
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            connection.request("GET", path)
            if connection.getresponse().status == 200:
                connection.close()
                return
        time.sleep(0.1)
    raise RuntimeError(f"the server did not answer {path} within {timeout:g} s")


def group_cpu_seconds(group: int) -> float:
    """CPU time used so far by every process of a process group (Linux /proc)."""
    ticks = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) == group:
                ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def wait_until_idle(group: int, timeout: float = 90.0) -> None:
    """Wait until a server's processes stop using CPU: worker and job processes that are still
    importing must not eat into the measured time (MLflow starts 4 workers and job consumers)."""
    deadline = time.monotonic() + timeout
    quiet = 0
    last = group_cpu_seconds(group)
    while time.monotonic() < deadline and quiet < 3:
        time.sleep(0.5)
        now = group_cpu_seconds(group)
        quiet = quiet + 1 if now - last < 0.05 else 0
        last = now


@contextlib.contextmanager
def server(
    command: list[str], port: int, health: str, log: Path, env: Mapping[str, str] | None = None
) -> Iterator[int]:
    """Run a server in its own process group and stop that group (and only it) afterwards."""
    with log.open("wb") as output:
        process = subprocess.Popen(
            command,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, **(env or {})},
        )
        try:
            wait_until_healthy(port, health, process, timeout=180)
            wait_until_idle(process.pid)
            yield process.pid
        finally:
            stop_group(process, grace=20)


def stop_group(process: subprocess.Popen[Any], grace: float) -> None:
    """Stop a process started in its own session and everything it started: SIGTERM to the group,
    SIGKILL if it has not ended within `grace` seconds."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def modelrepo_server(root: Path, port: int, log: Path) -> contextlib.AbstractContextManager[int]:
    """`modelrepo serve`: the drop-folder watcher and the HTTP API in one process."""
    return server([str(BIN / "modelrepo"), "serve", "--root", str(root), "--port", str(port)], port, "/api/health", log)


@contextlib.contextmanager
def mlflow_server(root: Path, port: int, log: Path) -> Iterator[int]:
    """`mlflow server` with its SQLite store, as documented, with its default workers."""
    before = _huey_stores()
    try:
        with _mlflow_server(root, port, log) as pid:
            yield pid
    finally:
        # MLflow keeps its job queue in a new folder under /dev/shm and leaves it behind when its
        # group is stopped: memory that would stay taken until the machine restarts.
        for folder in _huey_stores() - before:
            shutil.rmtree(folder, ignore_errors=True)


def _huey_stores() -> set[Path]:
    shm = Path("/dev/shm")
    return {store.parent for store in shm.glob("tmp*/*.mlflow-huey-store")} if shm.is_dir() else set()


def _mlflow_server(root: Path, port: int, log: Path) -> contextlib.AbstractContextManager[int]:
    return server(
        [
            str(BIN / "mlflow"),
            "server",
            "--backend-store-uri",
            f"sqlite:///{root / 'mlflow.db'}",
            "--default-artifact-root",
            str(root / "mlartifacts"),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        port,
        "/health",
        log,
        env={"MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true"},
    )
