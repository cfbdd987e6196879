"""`Client`: the HTTP API of every host as typed Python calls, over a pluggable transport.

A transport moves one host-neutral `modelrepo.api.Request` and brings back a `Reply`: over HTTP
(`HttpTransport`, to a local `modelrepo serve`, API Gateway or Azure Functions) or in-process
(`InProcessTransport`, straight into `Api.handle` on a local root). Everything else is done here
once, whatever the transport: error answers become the core's domain errors, registrations carry
an Idempotency-Key so that a retry cannot register twice, 503s are retried as long as the answer's
Retry-After allows, listings page lazily, and downloads are checked against the digest the API
names before the last chunk is handed over.

This module imports no HTTP library: the in-process client (the CLI on a local root) stays as
light as the core.
"""

from __future__ import annotations

import email.utils
import hashlib
import json
import logging
import re
import time
import uuid
from base64 import b64decode
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http import HTTPStatus
from types import TracebackType
from typing import TYPE_CHECKING, Any, Protocol, Self, TypeVar
from urllib.parse import quote, unquote

from pydantic import BaseModel, ValidationError

from modelrepo.api import Request
from modelrepo.client import models
from modelrepo.client.errors import (
    ApiError,
    BadRequest,
    BusyError,
    ClientError,
    ConflictError,
    DigestMismatch,
    NotAuthorized,
    NotFoundError,
    NotRecorded,
    UnprocessableError,
)
from modelrepo.commands.versions import ManifestEntry
from modelrepo.errors import InvalidInput
from modelrepo.model import (
    ApprovalStatus,
    ArtifactKey,
    AuditEntry,
    Deployment,
    Experiment,
    Lineage,
    RegisteredModel,
    Rejection,
    RunArtifact,
    TargetPolicy,
    describe_validation_error,
)
from modelrepo.outbox import CloudEvent

if TYPE_CHECKING:
    import httpx

    from modelrepo.api import Api, DeadLetterView
    from modelrepo.service import DeploymentHistory

log = logging.getLogger(__name__)

DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000
DEFAULT_RETRIES = 3
MAX_RETRY_WAIT_SECONDS = 30.0
MAX_REDIRECTS = 5
REDIRECTS = frozenset({301, 302, 303, 307, 308})
# A method whose repetition changes nothing more than its first success did. POST is retried only
# when it carries an Idempotency-Key (registrations); deploy and rollback carry none, so a 503 after
# a write whose outcome the service could not learn is handed to the caller rather than repeated.
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "PUT", "DELETE"})
ERRORS: dict[int, type[ApiError]] = {
    400: BadRequest,
    401: NotAuthorized,
    403: NotAuthorized,
    404: NotFoundError,
    409: ConflictError,
    422: UnprocessableError,
}
SHA256_HEX = re.compile(r"[0-9a-f]{64}")

M = TypeVar("M", bound=BaseModel)


# --- transports ----------------------------------------------------------------------------------


@dataclass
class Reply:
    """An answer as a transport hands it back; header names are lower case.

    A streamed reply has `chunks` instead of `body` and must be closed, which releases the
    connection (or, in-process, the open file).
    """

    status: int
    headers: Mapping[str, str]
    body: bytes = b""
    chunks: Iterator[bytes] | None = None
    url: str | None = None  # where the answer came from, to resolve a relative Location against
    closer: Callable[[], None] | None = field(default=None, repr=False)

    def json(self) -> Any:
        return json.loads(self.body)

    def close(self) -> None:
        if self.closer is not None:
            closer, self.closer = self.closer, None
            closer()


class Transport(Protocol):
    """Carries requests to one API and its answers back."""

    def send(self, request: Request, *, stream: bool = False) -> Reply:
        """Send `request` (its path is the API path, `/api/...`); `stream` keeps a 2xx body unread."""
        ...

    def follow(self, location: str, *, relative_to: str | None = None, stream: bool = False) -> Reply:
        """GET a Location the API answered with; credentials go only where the API is."""
        ...

    def close(self) -> None: ...


class InProcessTransport:
    """Calls `Api.handle` directly: the CLI on a local root, with no server and no socket."""

    def __init__(self, api: Api) -> None:
        self.api = api

    def send(self, request: Request, *, stream: bool = False) -> Reply:
        response = self.api.handle(request)
        headers = {name.lower(): value for name, value in response.headers.items()}
        if response.stream is None:
            return Reply(response.status, headers, response.body)
        if stream:
            return Reply(response.status, headers, chunks=iter(response.stream), closer=response.stream.close)
        try:
            return Reply(response.status, headers, b"".join(response.stream))
        finally:
            response.stream.close()

    def follow(self, location: str, *, relative_to: str | None = None, stream: bool = False) -> Reply:
        raise ClientError("the local root answered with a redirect, which only an HTTP client can follow")

    def close(self) -> None:
        """The caller owns the Api and its repository."""

    def __repr__(self) -> str:
        return "InProcessTransport()"


# --- the client ----------------------------------------------------------------------------------


def api_path(*segments: str | int) -> str:
    """`/api/` and the segments, each percent-encoded whole (a '/' inside an id stays data)."""
    return "/api/" + "/".join(quote(str(segment), safe="") for segment in segments)


class Client:
    """The modelrepo API as Python calls.

    >>> with Client.from_profile("aws") as repo:                 # doctest: +SKIP
    ...     [artifact] = repo.run_artifacts("run-42")
    ...     version = repo.register("churn", artifact.run_artifact_id, "alice")
    ...     for entry in repo.experiment_audit("churn"):
    ...         print(entry.at, entry.actor, entry.action)

    Errors are the core's (`modelrepo.errors`): `NotFound`, `Conflict`, `InvalidInput`,
    `Unprocessable`, `Busy`; each is also a `modelrepo.client.ApiError` with the HTTP status.
    `sleep` waits between retries of a 503 (injectable, like every clock here).
    """

    def __init__(
        self,
        transport: Transport,
        *,
        retries: int = DEFAULT_RETRIES,
        max_retry_wait: float = MAX_RETRY_WAIT_SECONDS,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if retries < 0:
            raise ValueError("retries must be zero or more")
        self.transport = transport
        self.retries = retries
        self.max_retry_wait = max_retry_wait
        self.sleep = sleep

    # --- construction ---

    @classmethod
    def over_http(
        cls,
        url: str,
        auth: httpx.Auth | None = None,
        *,
        timeout: float = 30.0,
        retries: int = DEFAULT_RETRIES,
        sleep: Callable[[float], None] = time.sleep,
    ) -> Client:
        """A client of the service at `url` (its base, with or without the trailing `/api`)."""
        from modelrepo.client.http import HttpTransport

        return cls(HttpTransport(url, auth, timeout=timeout), retries=retries, sleep=sleep)

    @classmethod
    def in_process(cls, api: Api, *, sleep: Callable[[float], None] = time.sleep) -> Client:
        return cls(InProcessTransport(api), sleep=sleep)

    @classmethod
    def from_profile(cls, name: str | None = None, *, environ: Mapping[str, str] | None = None) -> Client:
        """A client for a profile of the config file (default: $MODELREPO_PROFILE)."""
        from modelrepo.client.config import connect, load_profile

        return connect(load_profile(name, environ))

    def close(self) -> None:
        self.transport.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Client({self.transport!r})"

    # --- service ---

    def health(self) -> str:
        """`ok` when the service is up (needs no credentials)."""
        answer = self._json("GET", "/api/health")
        return str(answer.get("status")) if isinstance(answer, dict) else ""

    def openapi(self) -> dict[str, Any]:
        """The service's OpenAPI 3.1 document."""
        document: dict[str, Any] = self._json("GET", "/api/openapi.json")
        return document

    # --- uploads ---

    def run_artifacts(self, run_id: str) -> list[RunArtifact]:
        """The current version of each of the run's files."""
        items = _items(self._json("GET", api_path("runs", run_id, "artifacts")))
        return [_record(models.RunArtifact, item) for item in items]

    def artifact(self, run_artifact_id: str) -> RunArtifact:
        """One run artifact, also an older, superseded one."""
        return _record(models.RunArtifact, self._json("GET", api_path("artifacts", run_artifact_id)))

    def rejections(self, *, page_size: int = DEFAULT_PAGE_SIZE) -> Iterator[Rejection]:
        """Uploads that are not artifacts, with the reason; pages are fetched as the loop goes."""
        return self._pages(api_path("rejections"), models.Rejection, page_size)

    def dead_letters(self, *, limit: int = DEFAULT_PAGE_SIZE) -> list[DeadLetterView]:
        """What the host gave up on: parked upload notifications, then event deliveries a subscriber
        has not accepted (each names what `modelrepo replay` takes)."""
        items = _items(self._json("GET", api_path("dead-letters"), query={"limit": str(limit)}))
        return [_record(models.DeadLetter, item) for item in items]

    def run_audit(self, run_id: str, *, page_size: int = DEFAULT_PAGE_SIZE) -> Iterator[AuditEntry]:
        """The audit trail of a run's uploads, oldest first."""
        return self._pages(api_path("runs", run_id, "audit"), models.AuditEntry, page_size)

    def wait_for_artifact(
        self,
        key: str,
        etag: str,
        *,
        timeout: float = 120.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] | None = None,
    ) -> RunArtifact:
        """The artifact the event path records for the upload of `key` with `etag`.

        Polls the run's artifacts with a backoff from 0.25 s doubling to 5 s until `timeout`
        seconds have passed, then raises NotRecorded. A newer upload of the same key makes this
        one superseded: it is then never current, and the wait ends in NotRecorded too.
        """
        try:
            where = ArtifactKey.parse(key)
        except InvalidInput as error:
            raise ClientError(error.detail) from None
        wanted, delay, wait = _plain_etag(etag), 0.25, sleep or self.sleep
        deadline = clock() + timeout
        while True:
            for artifact in self.run_artifacts(where.run_id):
                if artifact.key == key and _plain_etag(artifact.etag) == wanted:
                    return artifact
            remaining = deadline - clock()
            if remaining <= 0:
                raise NotRecorded(f"{key} (ETag {etag}) was uploaded but not recorded within {timeout:g} s")
            wait(min(delay, remaining))
            delay = min(delay * 2, 5.0)

    # --- versions ---

    def register(
        self,
        experiment_id: str,
        run_artifact_id: str,
        registered_by: str,
        *,
        description: str | None = None,
        idempotency_key: str | None = None,
        metrics: Mapping[str, float] | None = None,
        params: Mapping[str, str] | None = None,
        signature: Mapping[str, Any] | None = None,
        lineage: Lineage | None = None,
    ) -> RegisteredModel:
        """Register a run artifact as the experiment's next version, with its metadata.

        The request carries an Idempotency-Key (a new uuid4 unless given), also on its retries,
        so a registration whose answer was lost is returned, not made twice. Pass your own key
        to make a retry across processes safe too.
        """
        body = {"experimentId": experiment_id, "runArtifactId": run_artifact_id, "registeredBy": registered_by}
        return self._register(body | _metadata(description, metrics, params, signature, lineage), idempotency_key)

    def register_folder(
        self,
        experiment_id: str,
        run_id: str,
        prefix: str,
        registered_by: str,
        *,
        description: str | None = None,
        idempotency_key: str | None = None,
        metrics: Mapping[str, float] | None = None,
        params: Mapping[str, str] | None = None,
        signature: Mapping[str, Any] | None = None,
        lineage: Lineage | None = None,
    ) -> RegisteredModel:
        """Register every current artifact of a run under `prefix` ('model/', or '' for all) as one version."""
        body = {"experimentId": experiment_id, "runId": run_id, "prefix": prefix, "registeredBy": registered_by}
        return self._register(body | _metadata(description, metrics, params, signature, lineage), idempotency_key)

    def _register(self, body: dict[str, Any], idempotency_key: str | None) -> RegisteredModel:
        headers = {"idempotency-key": idempotency_key or str(uuid.uuid4())}
        return _record(models.RegisteredModel, self._json("POST", api_path("register"), body=body, headers=headers))

    def update(
        self,
        experiment_id: str,
        version: int | str,
        by: str,
        *,
        description: str | None = None,
        metrics: Mapping[str, float] | None = None,
        params: Mapping[str, str] | None = None,
        signature: Mapping[str, Any] | None = None,
        lineage: Lineage | None = None,
    ) -> RegisteredModel:
        """Change a version's metadata (metrics, params and signature only if not set yet)."""
        body = {"by": by, **_metadata(description, metrics, params, signature, lineage)}
        path = api_path("experiments", experiment_id, "models", version)
        return _record(models.RegisteredModel, self._json("PATCH", path, body=body))

    def set_approval(
        self, experiment_id: str, version: int | str, status: ApprovalStatus | str, by: str, comment: str | None = None
    ) -> RegisteredModel:
        body: dict[str, Any] = {"status": ApprovalStatus(status).value, "by": by}
        if comment is not None:
            body["comment"] = comment
        path = api_path("experiments", experiment_id, "models", version, "approval")
        return _record(models.RegisteredModel, self._json("POST", path, body=body))

    def approve(self, experiment_id: str, version: int | str, by: str, comment: str | None = None) -> RegisteredModel:
        return self.set_approval(experiment_id, version, ApprovalStatus.APPROVED, by, comment)

    def reject(self, experiment_id: str, version: int | str, by: str, comment: str | None = None) -> RegisteredModel:
        return self.set_approval(experiment_id, version, ApprovalStatus.REJECTED, by, comment)

    def archive(self, experiment_id: str, version: int | str, by: str) -> RegisteredModel:
        path = api_path("experiments", experiment_id, "models", version, "archive")
        return _record(models.RegisteredModel, self._json("POST", path, body={"by": by}))

    def restore(self, experiment_id: str, version: int | str, by: str) -> RegisteredModel:
        path = api_path("experiments", experiment_id, "models", version, "restore")
        return _record(models.RegisteredModel, self._json("POST", path, body={"by": by}))

    def delete_version(
        self, experiment_id: str, version: int | str, by: str, reason: str | None = None
    ) -> RegisteredModel:
        """Tombstone a version: its number is never reused; its bytes are released."""
        query = {"by": by, **({"reason": reason} if reason else {})}
        path = api_path("experiments", experiment_id, "models", version)
        return _record(models.RegisteredModel, self._json("DELETE", path, query=query))

    def files(self, experiment_id: str, version: int | str) -> list[ManifestEntry]:
        """A version's files: path, sha256, size (one entry for a single-file version)."""
        items = _items(self._json("GET", api_path("experiments", experiment_id, "models", version, "files")))
        return [_record(models.ManifestEntry, item) for item in items]

    def download_file(self, experiment_id: str, version: int | str, path: str) -> Download:
        """One file of a version, verified like `download`."""
        route = api_path("experiments", experiment_id, "models", version, "files") + "/" + quote(path, safe="/")
        return self._verified_download(route)

    def models(
        self,
        experiment_id: str,
        *,
        page_size: int = DEFAULT_PAGE_SIZE,
        status: ApprovalStatus | str | None = None,
        tags: Mapping[str, str] | None = None,
        registered_after: datetime | None = None,
        registered_before: datetime | None = None,
        archived: bool = False,
        deleted: bool = False,
    ) -> Iterator[RegisteredModel]:
        """The experiment's versions, newest first; without archived or deleted ones unless asked."""
        filters = {f"tag.{key}": value for key, value in (tags or {}).items()}
        if status is not None:
            filters["status"] = ApprovalStatus(status).value
        for name, moment in (("registeredAfter", registered_after), ("registeredBefore", registered_before)):
            if moment is not None:
                filters[name] = moment.isoformat()
        filters |= {name: "true" for name, flag in (("archived", archived), ("deleted", deleted)) if flag}
        path = api_path("experiments", experiment_id, "models")
        return self._pages(path, models.RegisteredModel, page_size, filters)

    def search(
        self,
        *,
        tags: Mapping[str, str] | None = None,
        status: ApprovalStatus | str | None = None,
        page_size: int = DEFAULT_PAGE_SIZE,
    ) -> Iterator[RegisteredModel]:
        """Versions of every experiment by tags and approval (from the search index)."""
        filters = {f"tag.{key}": value for key, value in (tags or {}).items()}
        if status is not None:
            filters["status"] = ApprovalStatus(status).value
        return self._pages(api_path("search", "models"), models.RegisteredModel, page_size, filters)

    # --- experiments ---

    def experiments(self, *, prefix: str | None = None, page_size: int = DEFAULT_PAGE_SIZE) -> Iterator[Experiment]:
        """Every experiment (model) with a recorded artifact or a version, by id."""
        filters = {"prefix": prefix} if prefix else {}
        return self._pages(api_path("experiments"), models.Experiment, page_size, filters)

    def experiment(self, experiment_id: str) -> Experiment:
        return _record(models.Experiment, self._json("GET", api_path("experiments", experiment_id)))

    def describe(self, experiment_id: str, description: str, by: str) -> Experiment:
        body = {"description": description, "by": by}
        return _record(models.Experiment, self._json("PATCH", api_path("experiments", experiment_id), body=body))

    def set_experiment_tag(self, experiment_id: str, key: str, value: str, by: str) -> Experiment:
        path = api_path("experiments", experiment_id, "tags", key)
        return _record(models.Experiment, self._json("PUT", path, body={"value": value, "by": by}))

    def delete_experiment_tag(self, experiment_id: str, key: str, by: str) -> Experiment:
        path = api_path("experiments", experiment_id, "tags", key)
        return _record(models.Experiment, self._json("DELETE", path, query={"by": by}))

    # --- events ---

    def events(self, experiment_id: str, *, after: int = 0, page_size: int = DEFAULT_PAGE_SIZE) -> Iterator[CloudEvent]:
        """The experiment's events (CloudEvents) after a sequence number, oldest first."""
        return self._events(api_path("experiments", experiment_id, "events"), after, page_size)

    def run_events(self, run_id: str, *, after: int = 0, page_size: int = DEFAULT_PAGE_SIZE) -> Iterator[CloudEvent]:
        return self._events(api_path("runs", run_id, "events"), after, page_size)

    def _events(self, path: str, after: int, page_size: int) -> Iterator[CloudEvent]:
        _page_query(page_size, None)
        while True:
            page = self._json("GET", path, query={"after": str(after), "limit": str(page_size)})
            items = [_record(models.CloudEvent, item) for item in _items(page)]
            yield from items
            if not page.get("nextCursor") or not items:
                return
            after = items[-1].sequence

    def latest_model(self, experiment_id: str) -> RegisteredModel:
        return _record(
            models.RegisteredModel, self._json("GET", api_path("experiments", experiment_id, "models", "latest"))
        )

    def model(self, experiment_id: str, version: int | str) -> RegisteredModel:
        """One version. A string is sent as typed (the API validates it; 'latest' is the newest)."""
        return _record(
            models.RegisteredModel, self._json("GET", api_path("experiments", experiment_id, "models", version))
        )

    def download(self, experiment_id: str, version: int | str) -> Download:
        """The pinned bytes of a version, as a verified stream of chunks (use it as a context manager).

        A redirect (the clouds answer 307 to a time-limited storage link) is followed without the
        API's credentials. The digest comes from the API's own answer (Repr-Digest, else its
        ETag), never from the storage's.
        """
        return self._verified_download(api_path("experiments", experiment_id, "models", version, "download"))

    def _verified_download(self, path: str) -> Download:
        reply = self._call("GET", path, stream=True)
        expected = _digest(reply.headers)
        hops = 0
        while reply.status in REDIRECTS:
            location, origin = reply.headers.get("location"), reply.url
            reply.close()
            if not location:
                raise ApiError(reply.status, "the redirect names no Location")
            if hops == MAX_REDIRECTS:
                raise ClientError(f"the download was redirected more than {MAX_REDIRECTS} times")
            hops += 1
            reply = self.transport.follow(location, relative_to=origin, stream=True)
            if reply.status >= 400:
                # Not the storage's error text: it may quote the signed request back.
                reply.close()
                raise ApiError(reply.status, f"the download link answered {reply.status} {_phrase(reply.status)}")
        if expected is None:
            reply.close()
            raise ClientError("the download names no sha256 (Repr-Digest or ETag) to verify the bytes against")
        return Download(reply, expected)

    # --- tags ---

    def set_tag(self, experiment_id: str, version: int | str, key: str, value: str, by: str) -> RegisteredModel:
        path = api_path("experiments", experiment_id, "models", version, "tags", key)
        return _record(models.RegisteredModel, self._json("PUT", path, body={"value": value, "by": by}))

    def delete_tag(self, experiment_id: str, version: int | str, key: str, by: str) -> RegisteredModel:
        path = api_path("experiments", experiment_id, "models", version, "tags", key)
        return _record(models.RegisteredModel, self._json("DELETE", path, query={"by": by}))

    # --- deployments ---

    def deploy(self, experiment_id: str, version: int, target: str, deployed_by: str) -> Deployment:
        body = {"version": version, "target": target, "deployedBy": deployed_by}
        return _record(
            models.Deployment, self._json("POST", api_path("experiments", experiment_id, "deployments"), body=body)
        )

    def rollback(self, experiment_id: str, target: str, deployed_by: str) -> Deployment:
        """Deploy again the version that was current before the current deployment of `target`."""
        path = api_path("experiments", experiment_id, "deployments", target, "rollback")
        return _record(models.Deployment, self._json("POST", path, body={"deployedBy": deployed_by}))

    def deployments(self, experiment_id: str) -> list[Deployment]:
        """The current deployment of every target."""
        items = _items(self._json("GET", api_path("experiments", experiment_id, "deployments")))
        return [_record(models.Deployment, item) for item in items]

    def deployment_history(
        self, experiment_id: str, target: str, *, page_size: int = DEFAULT_PAGE_SIZE
    ) -> Iterator[Deployment]:
        """Every deployment of a target, newest first."""
        path = api_path("experiments", experiment_id, "deployments", target)
        for page in self._history_pages(path, page_size):
            yield from page.history

    def remove_deployment(self, experiment_id: str, target: str, by: str) -> Deployment:
        """Take a target's current deployment away (its history stays)."""
        path = api_path("experiments", experiment_id, "deployments", target)
        return _record(models.Deployment, self._json("DELETE", path, query={"by": by}))

    def target_policy(self, experiment_id: str, target: str) -> TargetPolicy:
        path = api_path("experiments", experiment_id, "targets", target)
        return _record(models.TargetPolicy, self._json("GET", path))

    def set_target_policy(self, experiment_id: str, target: str, *, require_approval: bool, by: str) -> TargetPolicy:
        path = api_path("experiments", experiment_id, "targets", target)
        body = {"requireApproval": require_approval, "by": by}
        return _record(models.TargetPolicy, self._json("PUT", path, body=body))

    def current_deployment(self, experiment_id: str, target: str) -> Deployment | None:
        """What `target` runs now; None once it was deployed but nothing is current."""
        path = api_path("experiments", experiment_id, "deployments", target)
        return next(self._history_pages(path, 1)).current

    # --- audit ---

    def experiment_audit(self, experiment_id: str, *, page_size: int = DEFAULT_PAGE_SIZE) -> Iterator[AuditEntry]:
        """Who did what to an experiment, oldest first."""
        return self._pages(api_path("experiments", experiment_id, "audit"), models.AuditEntry, page_size)

    # --- mechanics ---

    def _history_pages(self, path: str, page_size: int) -> Iterator[DeploymentHistory]:
        cursor: str | None = None
        while True:
            page = _record(models.DeploymentHistory, self._json("GET", path, query=_page_query(page_size, cursor)))
            yield page
            cursor = page.next_cursor
            if not cursor:
                return

    def _pages(
        self, path: str, record: type[M], page_size: int, filters: Mapping[str, str] | None = None
    ) -> Iterator[M]:
        query = {**(filters or {}), **_page_query(page_size, None)}  # checked now, not at the first next()

        def pages() -> Iterator[M]:
            cursor: str | None = None
            while True:
                page = self._json(
                    "GET", path, query=query if cursor is None else {**query, **_page_query(page_size, cursor)}
                )
                for item in _items(page):
                    yield _record(record, item)
                cursor = page.get("nextCursor")
                if not cursor:
                    return

        return pages()

    def _json(
        self,
        method: str,
        path: str,
        *,
        body: dict[str, Any] | None = None,
        query: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
    ) -> Any:
        reply = self._call(method, path, body=body, query=query, headers=headers)
        try:
            return reply.json()
        except ValueError:
            raise ApiError(reply.status, f"the answer to {method} {path} is not JSON") from None

    def _call(
        self,
        method: str,
        path: str,
        *,
        body: dict[str, Any] | None = None,
        query: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
        stream: bool = False,
    ) -> Reply:
        sent = {"accept": "application/json", **(headers or {})}
        payload = b""
        if body is not None:
            payload = json.dumps(body, ensure_ascii=False).encode("utf-8")
            sent["content-type"] = "application/json"
        request = Request(method, path, query or {}, sent, payload)
        retryable = method in IDEMPOTENT_METHODS or "idempotency-key" in sent
        for attempt in range(self.retries + 1):
            reply = self.transport.send(request, stream=stream)
            if reply.status < 400:
                return reply
            if reply.status == 503 and retryable and attempt < self.retries:
                wait = _retry_after(reply.headers.get("retry-after"))
                if wait <= self.max_retry_wait:
                    reply.close()
                    log.debug("%s %s answered 503; retrying in %.1f s", method, path, wait)
                    self.sleep(wait)
                    continue
            raise _error(reply)
        raise AssertionError("unreachable: the last attempt returns or raises")


class Download:
    """A version's bytes as chunks, checked against the sha256 the API named.

    Iterate it once; the sha256 is checked after the last chunk is read and before the loop
    ends, so a consumer that finalises a file only after the loop never keeps corrupt bytes.
    """

    def __init__(self, reply: Reply, sha256: str) -> None:
        self._reply = reply
        self.sha256 = sha256
        self.filename = _filename(reply.headers.get("content-disposition", ""))
        length = reply.headers.get("content-length", "")
        self.size = int(length) if length.isdigit() else None
        self.verified = False
        self._started = False

    def __iter__(self) -> Iterator[bytes]:
        if self._started:
            raise ClientError("a download can be read once")
        self._started = True
        return self._verified_chunks()

    def _verified_chunks(self) -> Iterator[bytes]:
        digest = hashlib.sha256()
        try:
            chunks = self._reply.chunks if self._reply.chunks is not None else iter((self._reply.body,))
            for chunk in chunks:
                digest.update(chunk)
                yield chunk
        finally:
            self.close()
        if digest.hexdigest() != self.sha256:
            raise DigestMismatch(f"downloaded bytes have sha256 {digest.hexdigest()}, expected {self.sha256}")
        self.verified = True

    def read(self) -> bytes:
        """All of it, verified (for small models; iterate to keep memory flat)."""
        return b"".join(self)

    def close(self) -> None:
        self._reply.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.close()


# --- helpers -------------------------------------------------------------------------------------


def _metadata(
    description: str | None,
    metrics: Mapping[str, float] | None,
    params: Mapping[str, str] | None,
    signature: Mapping[str, Any] | None,
    lineage: Lineage | None,
) -> dict[str, Any]:
    """A version's metadata as the API takes it: only the fields given."""
    body: dict[str, Any] = {}
    for name, value in (
        ("description", description),
        ("metrics", metrics),
        ("params", params),
        ("signature", signature),
    ):
        if value is not None:
            body[name] = value if isinstance(value, str) else dict(value)
    if lineage is not None:
        body["lineage"] = lineage.model_dump(mode="json", by_alias=True, exclude_none=True)
    return body


def _record(record: type[M], data: Any) -> M:
    try:
        return record.model_validate(data)
    except ValidationError as error:
        raise ClientError(f"the answer is not a {record.__name__}: {describe_validation_error(error)}") from None


def _items(answer: Any) -> list[Any]:
    items = answer.get("items") if isinstance(answer, dict) else None
    if not isinstance(items, list):
        raise ClientError("the answer is not a listing (no 'items')")
    return items


def _page_query(page_size: int, cursor: str | None) -> dict[str, str]:
    if not 1 <= page_size <= MAX_PAGE_SIZE:
        raise ValueError(f"page_size must be from 1 to {MAX_PAGE_SIZE}")
    query = {"limit": str(page_size)}
    if cursor:
        query["cursor"] = cursor
    return query


def _error(reply: Reply) -> ApiError:
    """The domain error of an error answer (problem+json, API Gateway's `message`, or its text)."""
    reply.close()
    text = reply.body.decode("utf-8", "replace").strip()
    try:
        document = json.loads(text) if text else None
    except ValueError:
        document = None
    if isinstance(document, dict):
        detail = str(document.get("detail") or document.get("message") or "") or _phrase(reply.status)
    else:
        detail = text[:200] if text and document is None else _phrase(reply.status)
    if reply.status == 503:
        return BusyError(503, detail, _retry_after(reply.headers.get("retry-after")))
    return ERRORS.get(reply.status, ApiError)(reply.status, detail)


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return f"HTTP {status}"


def _retry_after(value: str | None) -> float:
    """Seconds to wait: Retry-After as delta-seconds or an HTTP date; 1 s if absent or unreadable."""
    if not value:
        return 1.0
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return 1.0
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def _digest(headers: Mapping[str, str]) -> str | None:
    """The sha256 (hex) an answer names: `Repr-Digest: sha-256=:<base64>:`, else a sha256 ETag."""
    for member in headers.get("repr-digest", "").split(","):
        algorithm, _, value = member.strip().partition("=")
        if algorithm.strip().lower() == "sha-256" and value.startswith(":") and value.endswith(":"):
            try:
                raw = b64decode(value[1:-1], validate=True)
            except ValueError:
                continue
            if len(raw) == 32:
                return raw.hex()
    etag = _plain_etag(headers.get("etag", ""))
    return etag if SHA256_HEX.fullmatch(etag) else None


def _plain_etag(etag: str) -> str:
    return etag.strip().removeprefix("W/").strip('"')


def _filename(disposition: str) -> str | None:
    """The file name of `Content-Disposition: attachment; filename*=UTF-8''<name>`, if it is a safe one."""
    marker = "filename*=UTF-8''"
    if marker not in disposition:
        return None
    name = unquote(disposition.split(marker, 1)[1].split(";", maxsplit=1)[0].strip().strip('"'))
    return name if name and "/" not in name and "\\" not in name and name not in (".", "..") else None
