"""Events out on the local runtime: Standard Webhooks from `modelrepo serve`, verified by the
reference library, every event delivered in order per experiment, nothing lost across kill -9."""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from modelrepo.local.webhooks import WebhookPublisher
from modelrepo.outbox import CloudEvent
from tests.local.conftest import Served, wait_for

SECRET = "whsec_" + base64.b64encode(b"modelrepo-test-webhook-secret!!").decode()


@dataclass
class Receiver:
    """A webhook receiver that verifies every delivery with the Standard Webhooks reference library."""

    url: str = ""
    deliveries: list[dict[str, Any]] = field(default_factory=list)
    rejected: list[str] = field(default_factory=list)
    status: int = 204
    hold: threading.Event | None = None  # while set to an unset Event, answers wait
    arrived: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def accept(self, body: bytes, headers: dict[str, str]) -> int:
        self.arrived.set()
        if self.hold is not None:
            self.hold.wait(60)
            return 503  # its sender was killed meanwhile: this answer reaches nobody
        try:
            event = Webhook(SECRET).verify(body, headers)
        except WebhookVerificationError as error:
            with self.lock:
                self.rejected.append(str(error))
            return 400
        if self.status < 300:
            assert headers["webhook-id"] == event["id"]
            assert headers["content-type"] == "application/cloudevents+json"
            with self.lock:
                self.deliveries.append(event)
        return self.status

    def unique(self) -> list[dict[str, Any]]:
        """What a consumer keeps: each event once (deduped by id), in arrival order."""
        seen: set[str] = set()
        kept = []
        with self.lock:
            for event in self.deliveries:
                if event["id"] not in seen:
                    seen.add(event["id"])
                    kept.append(event)
        return kept

    def sequences(self, subject_prefix: str) -> list[int]:
        return [e["sequence"] for e in self.unique() if e["subject"].startswith(subject_prefix)]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    state = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            status = state.accept(body, {k.lower(): v for k, v in self.headers.items()})
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    state.url = f"http://127.0.0.1:{server.server_address[1]}/hooks/modelrepo"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield state
    if state.hold is not None:
        state.hold.set()
    server.shutdown()
    server.server_close()


def start(root: Path, receiver: Receiver) -> Served:
    from tests.local.conftest import start_serve

    return start_serve(root, "--webhook", receiver.url, environment={"MODELREPO_WEBHOOK_SECRET": SECRET})


def kill(served: Served) -> None:
    served.process.send_signal(signal.SIGKILL)
    served.process.wait(timeout=10)


def stop(served: Served) -> None:
    from tests.local.conftest import stop_serve

    stop_serve(served)


def seed(served: Served) -> str:
    served.drop("exp1/run1/model.bin", b"weights")
    [artifact] = wait_for(lambda: served.request("GET", "/api/runs/run1/artifacts").json()["items"], timeout=30)
    run_artifact_id: str = artifact["runArtifactId"]
    return run_artifact_id


def register(served: Served, run_artifact_id: str, who: str) -> int:
    body = {"experimentId": "exp1", "runArtifactId": run_artifact_id, "registeredBy": who}
    answer = served.request("POST", "/api/register", body)
    assert answer.status == 201, answer.body
    version: int = answer.json()["version"]
    return version


def committed_sequences(served: Served) -> list[int]:
    items = served.request("GET", "/api/experiments/exp1/events?limit=1000").json()["items"]
    return [e["sequence"] for e in items]


def busy_day(served: Served, run_artifact_id: str) -> None:
    """50 registrations from 8 concurrent writers, then tags, a deploy and a rollback."""
    with ThreadPoolExecutor(8) as pool:
        versions = list(pool.map(lambda n: register(served, run_artifact_id, f"writer{n % 8}"), range(50)))
    assert sorted(versions) == list(range(1, 51))
    for version in (3, 7):
        assert (
            served.request(
                "PUT", f"/api/experiments/exp1/models/{version}/tags/stage", {"value": "candidate", "by": "bob"}
            ).status
            == 200
        )
    assert served.request("DELETE", "/api/experiments/exp1/models/3/tags/stage?by=bob").status == 200
    for version in (7, 9):
        deploy = {"version": version, "target": "production", "deployedBy": "carol"}
        assert served.request("POST", "/api/experiments/exp1/deployments", deploy).status == 201
    rollback = {"deployedBy": "dave"}
    assert served.request("POST", "/api/experiments/exp1/deployments/production/rollback", rollback).status == 201


@pytest.mark.slow
def test_every_event_reaches_the_webhook_once_per_id_and_in_order(tmp_path: Path, receiver: Receiver) -> None:
    served = start(tmp_path / "root", receiver)
    try:
        busy_day(served, seed(served))
        expected = committed_sequences(served)
        assert expected == list(range(1, 50 + 3 + 3 + 1))
        wait_for(lambda: receiver.sequences("experiments/exp1/") == expected, timeout=60)
        assert receiver.sequences("runs/run1/") == [1]
        assert receiver.rejected == []
        types = [e["type"] for e in receiver.unique() if e["subject"].startswith("experiments/")]
        assert types.count("io.modelrepo.version.registered") == 50
        assert types.count("io.modelrepo.deployment.created") == 3
    finally:
        stop(served)


@pytest.mark.slow
def test_a_kill_9_between_commit_and_delivery_loses_nothing(tmp_path: Path, receiver: Receiver) -> None:
    root = tmp_path / "root"
    receiver.hold = threading.Event()  # the first delivery hangs: every later commit stays undelivered
    served = start(root, receiver)
    run_artifact_id = seed(served)
    assert receiver.arrived.wait(30), "the first delivery began"
    busy_day(served, run_artifact_id)
    expected = committed_sequences(served)
    kill(served)
    held, receiver.hold = receiver.hold, None
    held.set()  # the killed server's request is answered into the void
    assert receiver.deliveries == []

    restarted = start(root, receiver)
    try:
        wait_for(lambda: receiver.sequences("experiments/exp1/") == expected, timeout=60)
        # The run's event may have been parked while the receiver hung: it follows after its pause.
        wait_for(lambda: receiver.sequences("runs/run1/") == [1], timeout=60)
        # Redeliveries carry the same id, so the consumer's dedupe sees each event exactly once.
        ids = [e["id"] for e in receiver.deliveries]
        assert len(set(ids)) == len(expected) + 1
    finally:
        stop(restarted)


@pytest.mark.slow
def test_a_failing_receiver_is_parked_listed_and_replayed(tmp_path: Path, receiver: Receiver) -> None:
    receiver.status = 503
    root = tmp_path / "root"
    served = start(root, receiver)
    try:
        seed(served)
        env = {k: v for k, v in os.environ.items() if not k.startswith("MODELREPO_")}

        def cli(name: str) -> Any:
            command = [sys.executable, "-m", "modelrepo.cli", name, "--root", str(root), "--json"]
            return json.loads(subprocess.run(command, capture_output=True, text=True, env=env, check=True).stdout)

        def letters() -> list[dict[str, Any]]:
            return [row for row in cli("dead-letters") if row["source"] == "delivery"]

        [letter] = wait_for(letters, timeout=60)
        assert "HTTP 503" in letter["detail"] and letter["keys"] == ["run~run1 from event 1"]
        receiver.status = 204
        assert [row["replayed"] for row in cli("replay")] == [True]
        wait_for(lambda: receiver.sequences("runs/run1/") == [1], timeout=30)
        wait_for(lambda: not letters(), timeout=30)
    finally:
        stop(served)


def signed(clock: datetime) -> tuple[bytes, dict[str, str]]:
    event = CloudEvent(
        id="0f0e",
        source="file:///tmp/root",
        type="io.modelrepo.version.registered",
        subject="experiments/exp1/versions/1",
        time=clock,
        data={"version": 1},
        sequence=1,
        actor="alice",
    )
    publisher = WebhookPublisher("http://127.0.0.1:9/unused", SECRET, clock=lambda: clock)
    body = json.dumps(event.to_json(), separators=(",", ":"))
    return body.encode(), publisher.headers(event, body)


def test_signatures_verify_with_the_reference_library_and_refuse_tampering_and_old_timestamps() -> None:
    now = datetime.now(UTC)
    body, headers = signed(now)
    assert Webhook(SECRET).verify(body, headers)["id"] == "0f0e"
    assert headers["webhook-signature"].startswith("v1,")
    with pytest.raises(WebhookVerificationError, match="No matching signature"):
        Webhook(SECRET).verify(body.replace(b'"version":1', b'"version":2'), headers)
    old_body, old_headers = signed(now - timedelta(minutes=10))
    with pytest.raises(WebhookVerificationError, match="too old"):
        Webhook(SECRET).verify(old_body, old_headers)
    other = "whsec_" + base64.b64encode(b"another-secret-entirely-xx").decode()
    with pytest.raises(WebhookVerificationError):
        Webhook(other).verify(body, headers)
