"""Webhooks for the local runtime, following the Standard Webhooks specification.

Each CloudEvent is POSTed on its own (`Content-Type: application/cloudevents+json`, structured
mode) with the headers `webhook-id` (the event's id, the same on every redelivery, so receivers
dedupe by it), `webhook-timestamp` and `webhook-signature: v1,<base64 HMAC-SHA256>` over
`id.timestamp.body` with the shared `whsec_...` secret, signed by the reference library
(`standardwebhooks`). A receiver verifies with the same library. Events of one experiment go out
one after the other, in sequence order; a 2xx answer accepts an event.

`DeliveryWorker` runs one `Dispatcher` per webhook on its own thread: a commit wakes it for that
partition at once, parked partitions are retried when their pause is over, and every partition is
swept at start (what a crash left undelivered) and every `sweep_seconds` (changes that other
processes, such as the in-process CLI, committed to the same root).
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import threading
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

import httpx
from standardwebhooks import Webhook

from modelrepo.dispatch import DeliveryFailed, Dispatcher
from modelrepo.outbox import CloudEvent

log = logging.getLogger(__name__)

CONTENT_TYPE = "application/cloudevents+json"
ATTEMPTS = 3


def subscriber_name(url: str) -> str:
    """A stable name for a webhook URL: its cursor survives restarts with the same URL."""
    return "webhook-" + hashlib.sha256(url.encode()).hexdigest()[:16]


class WebhookPublisher:
    """POSTs events to one URL, signed; a few quick tries per event, then `DeliveryFailed`."""

    def __init__(
        self,
        url: str,
        secret: str,
        *,
        client: httpx.Client | None = None,
        timeout_seconds: float = 10.0,
        pause_seconds: float = 0.5,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.url = url
        self._signer = Webhook(secret)
        self._client = client or httpx.Client(timeout=timeout_seconds, follow_redirects=False)
        self._pause = pause_seconds
        self._sleep = sleep
        self._clock = clock
        self._subscriber = subscriber_name(url)

    @property
    def subscriber(self) -> str:
        return self._subscriber

    def headers(self, event: CloudEvent, body: str) -> dict[str, str]:
        timestamp = self._clock()
        return {
            "content-type": CONTENT_TYPE,
            "webhook-id": event.id,
            "webhook-timestamp": str(int(timestamp.timestamp())),
            "webhook-signature": self._signer.sign(event.id, timestamp, body),
        }

    def publish(self, events: Sequence[CloudEvent]) -> None:
        for event in events:
            self._deliver(event)

    def _deliver(self, event: CloudEvent) -> None:
        body = json.dumps(event.to_json(), ensure_ascii=False, separators=(",", ":"))
        problem = ""
        for attempt in range(1, ATTEMPTS + 1):
            try:
                answer = self._client.post(self.url, content=body.encode("utf-8"), headers=self.headers(event, body))
            except httpx.HTTPError as error:
                problem = f"{type(error).__name__}: {error}"
            else:
                if 200 <= answer.status_code < 300:
                    return
                problem = f"HTTP {answer.status_code}"
            if attempt < ATTEMPTS:
                self._sleep(random.uniform(0, self._pause * 2**attempt))
        raise DeliveryFailed(f"{self.url} did not accept event {event.sequence} ({problem})")

    def close(self) -> None:
        self._client.close()


class DeliveryWorker:
    """Runs one dispatcher on a thread: on commits, on parked retries, and on sweeps."""

    def __init__(self, dispatcher: Dispatcher, *, sweep_seconds: float = 30.0, tick_seconds: float = 1.0) -> None:
        self.dispatcher = dispatcher
        self._sweep_seconds = sweep_seconds
        self._tick = tick_seconds
        self._pending: set[str] = set()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self.sweeps = 0  # completed sweeps; tests wait for the first one

    def notify(self, partition: str) -> None:
        """A commit appended events to `partition`: deliver them now (if this subscriber follows it)."""
        if not self.dispatcher.follows(partition):
            return
        with self._lock:
            self._pending.add(partition)
        self._wake.set()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=f"deliver-{self.dispatcher.subscriber}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def _run(self) -> None:
        next_sweep = 0.0
        while not self._stopping.is_set():
            try:
                if time.monotonic() >= next_sweep:
                    self.dispatcher.sweep()
                    self.sweeps += 1
                    next_sweep = time.monotonic() + self._sweep_seconds
                else:
                    for parked in self.dispatcher.parked():
                        self.dispatcher.drain(parked.partition)
                with self._lock:
                    pending, self._pending = self._pending, set()
                for partition in sorted(pending):
                    self.dispatcher.drain(partition)
            except Exception:
                log.exception("delivering events to %s failed; trying again shortly", self.dispatcher.subscriber)
            self._wake.wait(self._tick)
            self._wake.clear()
