"""The HTTP API, once for every host: routes, request schemas, responses and error mapping.

Hosts (the local server, the Azure functions, the Lambda handlers) only convert their native
request into a `Request`, call `Api.handle`, and convert the `Response` back. Each `Route` carries
everything said about it (parameters, headers, whether it is public, what it answers), and
`ERRORS` is the one table from domain errors to status codes; the OpenAPI document
(`modelrepo.openapi`) and the hosts' public paths are derived from both.
"""

from __future__ import annotations

import base64
import json
import logging
import re
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, ExitStack
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http import HTTPStatus
from typing import TYPE_CHECKING, Annotated, Any, BinaryIO, Generic, Literal, Self, TypeVar, cast
from urllib.parse import quote, unquote

from pydantic import AfterValidator, BaseModel, Field, ValidationError, WithJsonSchema, model_validator

from modelrepo import archive, limits, ui
from modelrepo.commands.versions import ManifestEntry, check_prefix
from modelrepo.dispatch import parked_deliveries
from modelrepo.errors import (
    Busy,
    Conflict,
    Gone,
    InsufficientStorage,
    InvalidInput,
    ModelRepoError,
    NotFound,
    ObjectMissing,
    StoreUnavailable,
    Throttled,
    Unprocessable,
)
from modelrepo.limits import DEFAULT_MAX_BODY_BYTES
from modelrepo.model import (
    Actor,
    ApprovalStatus,
    AuditEntry,
    Comment,
    Deployment,
    Description,
    Experiment,
    ExperimentId,
    Lineage,
    Metrics,
    Page,
    Params,
    Record,
    RegisteredModel,
    Rejection,
    RunArtifact,
    RunArtifactId,
    RunId,
    Signature,
    TagValue,
    Target,
    TargetPolicy,
    Version,
    describe_validation_error,
)
from modelrepo.outbox import CloudEvent
from modelrepo.ports import DeadLetter, DeadLetterQueue, iter_chunks
from modelrepo.service import DeploymentHistory, ModelRepository, VersionFilter, VersionMetadata
from modelrepo.unit_of_work import principal

if TYPE_CHECKING:
    from modelrepo.mlflow_api import MlflowApi

log = logging.getLogger(__name__)

__all__ = ["DEFAULT_MAX_BODY_BYTES", "ROUTES", "Api", "Request", "Response", "Route", "is_public"]

PROBLEM_JSON = "application/problem+json"
# Paths answered by `modelrepo.mlflow_api`: MLflow's registry API and its artifact proxy.
MLFLOW_PREFIXES = ("/api/2.0/mlflow/", "/api/2.0/mlflow-artifacts/")


# --- wire types ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Request:
    """A host-neutral HTTP request. `path` is raw (still percent-encoded), without the query."""

    method: str
    path: str
    query: Mapping[str, str] = field(default_factory=dict)
    headers: Mapping[str, str] = field(default_factory=dict)  # keys in lower case
    body: bytes = b""
    principal: str | None = None  # who the host authenticated (an IAM ARN, an API key's name), if it knows
    # Where the client reached the API (scheme, host and any stage prefix), where the Host header alone
    # does not say it (API Gateway's stage); links the API hands out are built on it.
    base_url: str | None = None


class BodyStream:
    """A response body streamed in chunks; hosts must close it, which releases the source."""

    def __init__(self, stream: BinaryIO | Iterator[bytes], resources: ExitStack) -> None:
        self._stream = stream
        self._resources = resources

    def __iter__(self) -> Iterator[bytes]:
        """Chunks of a readable stream (read in bounded pieces), or the chunks an iterator makes."""
        read = getattr(self._stream, "read", None)
        if read is not None:
            return iter_chunks(cast(BinaryIO, self._stream), 256 * 1024)
        return self._stream  # not readable: already an iterator of chunks

    def close(self) -> None:
        self._resources.close()


@dataclass
class Response:
    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    stream: BodyStream | None = None

    def json(self) -> Any:
        return json.loads(self.body)


def json_response(status: int, payload: Any, headers: dict[str, str] | None = None) -> Response:
    body = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    return Response(status, {"Content-Type": "application/json", **(headers or {})}, body)


def problem(status: int, detail: str, headers: dict[str, str] | None = None) -> Response:
    response = json_response(
        status,
        {"type": "about:blank", "title": HTTPStatus(status).phrase, "status": status, "detail": detail},
        headers,
    )
    response.headers["Content-Type"] = PROBLEM_JSON
    return response


# --- errors: one table for the answers and the API document ---------------------------------------


class UnsupportedMediaType(ModelRepoError):
    pass


class MethodNotAllowed(ModelRepoError):
    def __init__(self, detail: str, allow: str) -> None:
        super().__init__(detail)
        self.allow = allow


class BodyTooLarge(ModelRepoError):
    pass


class Forbidden(ModelRepoError):
    """The caller is authenticated but may not do this (say, name another actor than themselves)."""


# The principal a request's actor must equal, while a request is handled under that rule.
_ACTOR_MUST_BE: ContextVar[str | None] = ContextVar("actor_must_be", default=None)


def check_actor_claim(actor: str) -> str:
    """Under `actor_must_be_principal`, a request may only name its authenticated principal."""
    required = _ACTOR_MUST_BE.get()
    if required is not None and actor != required:
        raise Forbidden(f"you are authenticated as {required!r} and may act only as yourself, not as {actor!r}")
    return actor


@dataclass(frozen=True)
class ErrorAnswer:
    """How one kind of error is answered, and how the API document describes that answer."""

    error: type[Exception]
    status: int
    description: str
    detail: Callable[[Any], str] = lambda error: str(getattr(error, "detail", error))
    headers: Callable[[Any], dict[str, str]] = lambda _error: {}
    logged: str = ""  # an operator must act (the store is full or broken): the log line says this too


def _retry_after(error: Busy) -> dict[str, str]:
    return {"Retry-After": str(max(1, round(error.retry_after)))}


# First match wins: subclasses before their bases.
ERRORS: tuple[ErrorAnswer, ...] = (
    ErrorAnswer(ValidationError, 400, "Bad input: the detail names the field or value", describe_validation_error),
    ErrorAnswer(InvalidInput, 400, "Bad input: the detail names the field or value"),
    ErrorAnswer(Forbidden, 403, "Authenticated, but not allowed to do this"),
    ErrorAnswer(NotFound, 404, "No such thing (or route)"),
    ErrorAnswer(MethodNotAllowed, 405, "Method not allowed here", headers=lambda e: {"Allow": e.allow}),
    ErrorAnswer(Conflict, 409, "Conflicts with the current state"),
    ErrorAnswer(Gone, 410, "Deleted: the record stays, its content is gone"),
    ErrorAnswer(BodyTooLarge, 413, "Body too large"),
    ErrorAnswer(UnsupportedMediaType, 415, "Body is not application/json"),
    ErrorAnswer(Unprocessable, 422, "Refers to things that cannot be combined"),
    ErrorAnswer(Busy, 503, "Busy beyond the retry deadline; see Retry-After", headers=_retry_after),
    ErrorAnswer(
        Throttled,
        503,
        "The storage backend is busy; see Retry-After",
        lambda e: f"the storage backend is busy: {e.detail}",
        lambda _e: {"Retry-After": "1"},
    ),
    ErrorAnswer(
        StoreUnavailable,
        503,
        "A store is unusable (the detail names it); see Retry-After",
        headers=lambda _e: {"Retry-After": "30"},
        logged="store unavailable",
    ),
    ErrorAnswer(
        InsufficientStorage,
        507,
        "A store is out of space (the detail names it); nothing was written",
        logged="out of space",
    ),
)
# Not in the table: a pinned file missing from the registry (500, an operator must look) and any
# other storage error (503), which are logged where they happen (`Api.handle`).
UNAUTHORIZED = (401, "Missing or wrong credentials")


def answer_error(error: Exception) -> Response | None:
    for entry in ERRORS:
        if isinstance(error, entry.error):
            if entry.logged:
                log.error("%s: %s", entry.logged, entry.detail(error))
            return problem(entry.status, entry.detail(error), entry.headers(error))
    return None


# --- request bodies ------------------------------------------------------------------------------


class MetadataFields(Record):
    """Version metadata, at registration or in a later PATCH (metrics, params, signature: write-once)."""

    description: Description | None = None
    metrics: Metrics | None = None
    params: Params | None = None
    signature: Signature | None = None
    lineage: Lineage | None = None

    def metadata(self) -> VersionMetadata:
        return VersionMetadata(
            description=self.description,
            metrics=self.metrics,
            params=self.params,
            signature=self.signature,
            lineage=self.lineage,
        )


class RegisterBody(MetadataFields):
    """One run artifact (`runArtifactId`), or a folder of a run's artifacts (`runId` and `prefix`)."""

    experiment_id: ExperimentId
    run_artifact_id: RunArtifactId | None = Field(default=None, max_length=limits.MAX_RUN_ARTIFACT_ID_CHARS)
    run_id: RunId | None = None
    prefix: Prefix | None = None
    registered_by: Actor

    @model_validator(mode="after")
    def _one_source(self) -> Self:
        if (self.run_artifact_id is None) == (self.run_id is None):
            raise InvalidInput("give either runArtifactId (one file) or runId and prefix (a folder)")
        if self.run_id is not None and self.prefix is None:
            raise InvalidInput("a folder version needs a prefix ('model/', or '' for the whole run)")
        return self


Prefix = Annotated[
    str, AfterValidator(check_prefix), WithJsonSchema({"type": "string", "maxLength": limits.MAX_NAME_BYTES})
]


class PatchVersionBody(MetadataFields):
    by: Actor


class ApprovalBody(Record):
    status: ApprovalStatus
    by: Actor
    comment: Comment | None = None


class ByBody(Record):
    by: Actor


class TargetPolicyBody(Record):
    require_approval: bool
    by: Actor


class DescribeBody(Record):
    description: Description
    by: Actor


class DeployBody(Record):
    version: Version
    target: Target
    deployed_by: Actor


class RollbackBody(Record):
    deployed_by: Actor


class TagBody(Record):
    value: TagValue
    by: Actor


class Health(Record):
    status: str


class DeadLetterView(Record):
    """Something given up on, as the page and `modelrepo dead-letters` show it: an upload notification
    the host parked (source: the queue it sits in), or an experiment's events a subscriber has not
    accepted for a while (source `delivery`; its dispatcher keeps retrying with growing pauses)."""

    handle: str
    source: str
    keys: list[str]
    failed_at: datetime | None = None
    detail: str

    @classmethod
    def of_letter(cls, letter: DeadLetter) -> DeadLetterView:
        return cls(
            handle=letter.handle,
            source=letter.source,
            keys=[event.key for event in letter.events],
            failed_at=letter.failed_at,
            detail=letter.detail,
        )


M = TypeVar("M", bound=BaseModel)


class Items(Record, Generic[M]):
    """A complete (unpaged) list."""

    items: list[M]


# --- parameters ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Param:
    """A path, query or header parameter, as the API document states it."""

    name: str
    where: Literal["path", "query", "header"]
    schema: Mapping[str, Any]
    required: bool = False
    description: str = ""
    greedy: bool = False  # a path parameter that may hold '/' (it ends the path)


def _pattern(regex: re.Pattern[str]) -> dict[str, Any]:
    return {"type": "string", "pattern": f"^{regex.pattern}$"}


PATH_PARAMS: dict[str, Param] = {
    p.name: p
    for p in (
        Param("experimentId", "path", _pattern(limits.ID_PATTERN), True),
        Param("runId", "path", _pattern(limits.ID_PATTERN), True),
        Param("runArtifactId", "path", _pattern(limits.RUN_ARTIFACT_ID_PATTERN), True),
        Param(
            "version",
            "path",
            {
                "type": "string",
                "pattern": f"^({limits.VERSION_PATTERN.pattern}|latest|@{limits.TARGET_PATTERN.pattern})$",
            },
            True,
            "a version number, `latest` (the newest live version), or `@<target>` (the target's current version)",
        ),
        Param("target", "path", _pattern(limits.TARGET_PATTERN), True),
        Param("key", "path", _pattern(limits.TAG_KEY_PATTERN), True),
        Param("path", "path", {"type": "string", "minLength": 1}, True, "a file's path within its version", True),
        Param("asset", "path", _pattern(ui.ASSET_PATTERN), True, "a file of the web page"),
    )
}
LIMIT = Param("limit", "query", {"type": "integer", "minimum": 1, "maximum": limits.MAX_PAGE})
CURSOR = Param("cursor", "query", _pattern(limits.CURSOR_PATTERN), description="nextCursor of the previous page")
PAGED = (LIMIT, CURSOR)
AFTER = Param(
    "after",
    "query",
    {"type": "integer", "minimum": 0, "maximum": limits.MAX_NUMBER},
    description="the sequence of the last event already seen (nextCursor of the previous page); 0 from the start",
)
BY = Param("by", "query", {"type": "string", "minLength": 1, "maxLength": limits.MAX_ACTOR_CHARS}, True)
REASON = Param("reason", "query", {"type": "string", "maxLength": limits.MAX_COMMENT_CHARS})
PREFIX = Param("prefix", "query", _pattern(limits.ID_PATTERN), description="only ids starting with this")
STATUS = Param("status", "query", {"type": "string", "enum": [s.value for s in ApprovalStatus]}, description="approval")
FLAG = {"type": "string", "enum": ["true", "false"]}
TIME = {"type": "string", "format": "date-time"}
VERSION_FILTERS = (
    STATUS,
    Param("registeredAfter", "query", TIME),
    Param("registeredBefore", "query", TIME),
    Param("archived", "query", FLAG, description="show archived versions too"),
    Param("deleted", "query", FLAG, description="show deleted versions (tombstones) too"),
)
TAG_FILTER_NOTE = (
    "; filter by tags with query parameters `tag.<key>=<value>` (each must hold). Without an index for these "
    f"filters a page reads at most {limits.MAX_PAGE} versions: it may hold fewer than `limit` items and still "
    "have a nextCursor"
)
IDEMPOTENCY_KEY = Param(
    "Idempotency-Key",
    "header",
    {"type": "string", "minLength": 1, "maxLength": limits.MAX_IDEMPOTENCY_KEY_CHARS},
    description="the same key registers once: a retry answers the version the first call registered",
)


# --- routing -------------------------------------------------------------------------------------


Handler = Callable[["Api", dict[str, str], Request], Response]


@dataclass(frozen=True)
class Route:
    """One operation: how it is matched, what it accepts and what it answers (for OpenAPI too).

    `answer` None with `media` "application/octet-stream": the body is bytes (a download, which a
    cloud host answers with a redirect to a signed link); `public`: served without credentials;
    `more_media`: other media types the answer may have (the web page's files); `revalidates`: the
    answer carries an ETag and is 304 to a request whose If-None-Match holds it.
    """

    method: str
    template: str
    handler: Handler
    summary: str
    body: type[BaseModel] | None = None
    answer: type[BaseModel] | None = None
    status: int = 200
    params: tuple[Param, ...] = ()
    public: bool = False
    media: str = "application/json"
    redirects: bool = False
    errors: tuple[int, ...] = ()
    more_media: tuple[str, ...] = ()
    revalidates: bool = False
    name: str = ""  # the operation's id where one handler serves several paths

    @property
    def operation_id(self) -> str:
        return self.name or self.handler.__name__

    @property
    def pattern(self) -> re.Pattern[str]:
        return _compile(self.template)

    @property
    def path_params(self) -> tuple[Param, ...]:
        return tuple(PATH_PARAMS[name] for name in re.findall(r"\{(\w+)\}", self.template))

    @property
    def statuses(self) -> tuple[int, ...]:
        """Every error status this operation can answer."""
        found = {400, 404, 503}
        if not self.public:
            found |= {UNAUTHORIZED[0], 403}
        if self.body is not None:
            found |= {413, 415}
        if self.method != "GET":
            found |= {409, 422}
        return tuple(sorted(found | set(self.errors)))


_PATTERNS: dict[str, re.Pattern[str]] = {}


def _compile(template: str) -> re.Pattern[str]:
    """A path parameter matches one segment; a greedy one (a file's path) the rest of the path."""
    if template not in _PATTERNS:

        def group(found: re.Match[str]) -> str:
            name = found.group(1)
            return f"(?P<{name}>.+)" if PATH_PARAMS[name].greedy else f"(?P<{name}>[^/]+)"

        _PATTERNS[template] = re.compile(re.sub(r"\\\{(\w+)\\\}", group, re.escape(template)))
    return _PATTERNS[template]


def _limit(request: Request) -> int:
    return limits.parse_limit(request.query.get("limit"))


B = TypeVar("B", bound=BaseModel)


def _parse(request: Request, schema: type[B]) -> B:
    content_type = request.headers.get("content-type", "application/json").split(";")[0].strip().lower()
    if content_type not in ("application/json", ""):
        raise UnsupportedMediaType(f"send the body as application/json, not {content_type}")
    if not request.body.strip():
        raise InvalidInput("the request needs a JSON body")
    _refuse_duplicate_keys(request.body)
    body = schema.model_validate_json(request.body, strict=True)
    for claimed in ("registered_by", "deployed_by", "by"):
        if isinstance(actor := getattr(body, claimed, None), str):
            check_actor_claim(actor)
    return body


def _refuse_duplicate_keys(body: bytes) -> None:
    """A key given twice is ambiguous: parsers disagree on which value wins, and pydantic silently
    takes the last one, so a proxy or a log that reads the first would see another request.

    Only duplicates are judged here; anything `json` cannot read is left to the schema's own
    validation, which names the problem the way every other bad body is named.
    """
    try:
        json.loads(body, object_pairs_hook=_unique_keys)
    except InvalidInput:
        raise
    except (ValueError, RecursionError):
        return


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for key, value in pairs:
        if key in found:
            raise InvalidInput(f"the body gives the key {key!r} more than once: send each key once")
        found[key] = value
    return found


def _page(page: Any) -> dict[str, Any]:
    return {"items": [item.to_json() for item in page.items], "nextCursor": page.next_cursor}


class Api:
    """Dispatches a `Request` to the model repository and maps every outcome to a `Response`.

    `dead_letters`: where the host parks upload notifications it gave up on, for `GET
    /api/dead-letters`; without one that route lists the parked event deliveries only.
    """

    def __init__(
        self,
        repository: ModelRepository,
        *,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        actor_must_be_principal: bool = False,
        dead_letters: DeadLetterQueue | None = None,
    ) -> None:
        self.repository = repository
        self.max_body_bytes = max_body_bytes
        self.actor_must_be_principal = actor_must_be_principal
        self.dead_letters = dead_letters
        self._mlflow_api: MlflowApi | None = None

    def handle(self, request: Request) -> Response:
        """Answer one request; its authenticated principal goes into every event and audit entry it
        causes, and under `actor_must_be_principal` must be the actor it names. MLflow's registry
        API (`/api/2.0/mlflow/...`) is answered by `modelrepo.mlflow_api`, in MLflow's formats."""
        mlflow = request.path.startswith(MLFLOW_PREFIXES)
        if (
            self.actor_must_be_principal
            and request.principal is None
            and request.method.upper() != "GET"
            and not mlflow
        ):
            public = {route.template for route in ROUTES if route.public}
            if not any(_compile(t).fullmatch(request.path) for t in public):
                return problem(403, "this repository requires an authenticated principal for every change")
        tokens = (
            principal.set(request.principal),
            _ACTOR_MUST_BE.set(request.principal if self.actor_must_be_principal else None),
        )
        try:
            return self._mlflow().handle(request) if mlflow else self._answer(request)
        finally:
            _ACTOR_MUST_BE.reset(tokens[1])
            principal.reset(tokens[0])

    def _mlflow(self) -> MlflowApi:
        if self._mlflow_api is None:
            from modelrepo.mlflow_api import MlflowApi

            self._mlflow_api = MlflowApi(self)
        return self._mlflow_api

    def _answer(self, request: Request) -> Response:
        try:
            if len(request.body) > self.max_body_bytes:
                raise BodyTooLarge(f"the request body is larger than {self.max_body_bytes} bytes")
            route, params = self._match(request)
            return route.handler(self, params, request)
        except ObjectMissing as error:
            log.error("registry integrity: %s", error.detail)
            return problem(500, "the registry is missing bytes it should hold; an operator must look")
        except (ValidationError, ModelRepoError) as error:
            answer = answer_error(error)
            if answer is not None:
                return answer
            log.exception("unexpected modelrepo error")
            detail = error.detail if isinstance(error, ModelRepoError) else str(error)
            return problem(503, f"the request could not be completed: {detail}", {"Retry-After": "1"})

    def _match(self, request: Request) -> tuple[Route, dict[str, str]]:
        allowed: list[str] = []
        for route in ROUTES:
            found = route.pattern.fullmatch(request.path)
            if found is None:
                continue
            if route.method != request.method.upper():
                allowed.append(route.method)
                continue
            params = {name: decode_segment(value) for name, value in found.groupdict().items()}
            return route, params
        if allowed:
            raise MethodNotAllowed(
                f"{request.method} is not allowed on {request.path}", ", ".join(sorted(set(allowed)))
            )
        raise NotFound(f"no such route: {request.method} {request.path}")

    # --- handlers ---

    def _version(self, params: Mapping[str, str]) -> int:
        """A version number from the path: digits, `latest`, or `@<target>` (what the target runs now)."""
        raw = params["version"]
        if raw.startswith("@"):
            target = raw[1:]
            return self.repository.current_deployment(params["experimentId"], target).version
        if raw == "latest":
            return self.repository.latest_model(params["experimentId"]).version
        return limits.parse_version(raw)

    def health(self, params: dict[str, str], request: Request) -> Response:
        return json_response(200, Health(status="ok").to_json())

    def openapi(self, params: dict[str, str], request: Request) -> Response:
        from modelrepo.openapi import openapi_document

        return json_response(200, openapi_document())

    def page(self, params: dict[str, str], request: Request) -> Response:
        return _static(ui.page(request.path), request)

    def asset(self, params: dict[str, str], request: Request) -> Response:
        found = ui.asset(params["asset"])
        if found is None:
            raise NotFound(f"the web page has no file {params['asset']!r}")
        return _static(found, request)

    def dead_letter_list(self, params: dict[str, str], request: Request) -> Response:
        limit = _limit(request)
        letters = self.dead_letters.peek(limit) if self.dead_letters is not None else []
        items = [DeadLetterView.of_letter(letter) for letter in letters]
        for parked in parked_deliveries(self.repository.metadata)[: max(0, limit - len(items))]:
            items.append(
                DeadLetterView(
                    handle=f"{parked.subscriber}/{parked.partition}",
                    source="delivery",
                    keys=[f"{parked.partition} from event {parked.sequence}"],
                    failed_at=parked.failed_at,
                    detail=f"{parked.error} ({parked.attempts} attempts)",
                )
            )
        return json_response(200, {"items": [item.to_json() for item in items]})

    def run_artifacts(self, params: dict[str, str], request: Request) -> Response:
        items = self.repository.list_run_artifacts(params["runId"])
        return json_response(200, {"items": [a.to_json() for a in items]})

    def run_audit(self, params: dict[str, str], request: Request) -> Response:
        page = self.repository.run_audit(params["runId"], limit=_limit(request), cursor=request.query.get("cursor"))
        return json_response(200, _page(page))

    def run_events(self, params: dict[str, str], request: Request) -> Response:
        after = limits.parse_sequence(request.query.get("after"))
        return json_response(
            200, _page(self.repository.run_events(params["runId"], after=after, limit=_limit(request)))
        )

    def artifact(self, params: dict[str, str], request: Request) -> Response:
        return json_response(200, self.repository.get_artifact(params["runArtifactId"]).to_json())

    def rejections(self, params: dict[str, str], request: Request) -> Response:
        page = self.repository.list_rejections(limit=_limit(request), cursor=request.query.get("cursor"))
        return json_response(200, _page(page))

    def register(self, params: dict[str, str], request: Request) -> Response:
        body = _parse(request, RegisterBody)
        key = request.headers.get("idempotency-key")
        if body.run_artifact_id is not None:
            model = self.repository.register_model(
                body.experiment_id,
                body.run_artifact_id,
                body.registered_by,
                idempotency_key=key,
                metadata=body.metadata(),
            )
        else:
            assert body.run_id is not None and body.prefix is not None
            model = self.repository.register_folder(
                body.experiment_id, body.run_id, body.prefix, body.registered_by, key, body.metadata()
            )
        return json_response(201, model.to_json(), {"Location": _model_location(model)})

    def models(self, params: dict[str, str], request: Request) -> Response:
        page = self.repository.list_models(
            params["experimentId"],
            limit=_limit(request),
            cursor=request.query.get("cursor"),
            where=_version_filter(request),
        )
        return json_response(200, _page(page))

    def patch_model(self, params: dict[str, str], request: Request) -> Response:
        body = _parse(request, PatchVersionBody)
        model = self.repository.update_metadata(params["experimentId"], self._version(params), body.metadata(), body.by)
        return json_response(200, model.to_json())

    def approval(self, params: dict[str, str], request: Request) -> Response:
        body = _parse(request, ApprovalBody)
        model = self.repository.set_approval(
            params["experimentId"], self._version(params), body.status, body.by, body.comment
        )
        return json_response(200, model.to_json())

    def archive(self, params: dict[str, str], request: Request) -> Response:
        body = _parse(request, ByBody)
        return json_response(
            200, self.repository.archive(params["experimentId"], self._version(params), body.by).to_json()
        )

    def restore(self, params: dict[str, str], request: Request) -> Response:
        body = _parse(request, ByBody)
        return json_response(
            200, self.repository.restore(params["experimentId"], self._version(params), body.by).to_json()
        )

    def delete_model(self, params: dict[str, str], request: Request) -> Response:
        by = _required(request, "by", "say who deletes the version")
        model = self.repository.delete_version(
            params["experimentId"], self._version(params), by, request.query.get("reason")
        )
        return json_response(200, model.to_json())

    def target(self, params: dict[str, str], request: Request) -> Response:
        return json_response(200, self.repository.target_policy(params["experimentId"], params["target"]).to_json())

    def put_target(self, params: dict[str, str], request: Request) -> Response:
        body = _parse(request, TargetPolicyBody)
        policy = self.repository.set_target_policy(
            params["experimentId"], params["target"], require_approval=body.require_approval, by=body.by
        )
        return json_response(200, policy.to_json())

    def experiments(self, params: dict[str, str], request: Request) -> Response:
        page = self.repository.list_experiments(
            limit=_limit(request), cursor=request.query.get("cursor"), prefix=request.query.get("prefix", "")
        )
        return json_response(200, _page(page))

    def experiment(self, params: dict[str, str], request: Request) -> Response:
        return json_response(200, self.repository.get_experiment(params["experimentId"]).to_json())

    def patch_experiment(self, params: dict[str, str], request: Request) -> Response:
        body = _parse(request, DescribeBody)
        described = self.repository.describe_experiment(params["experimentId"], body.description, body.by)
        return json_response(200, described.to_json())

    def put_experiment_tag(self, params: dict[str, str], request: Request) -> Response:
        body = _parse(request, TagBody)
        tagged = self.repository.set_experiment_tag(params["experimentId"], params["key"], body.value, body.by)
        return json_response(200, tagged.to_json())

    def delete_experiment_tag(self, params: dict[str, str], request: Request) -> Response:
        by = _required(request, "by", "say who removes the tag")
        return json_response(
            200, self.repository.delete_experiment_tag(params["experimentId"], params["key"], by).to_json()
        )

    def search(self, params: dict[str, str], request: Request) -> Response:
        status = request.query.get("status")
        page = self.repository.search_models(
            tags=_tag_filters(request),
            status=_status(status) if status is not None else None,
            limit=_limit(request),
            cursor=request.query.get("cursor"),
        )
        return json_response(200, _page(page))

    def model(self, params: dict[str, str], request: Request) -> Response:
        return json_response(200, self.repository.get_model(params["experimentId"], self._version(params)).to_json())

    def files(self, params: dict[str, str], request: Request) -> Response:
        """A version's files: the manifest (relative path, sha256, size)."""
        experiment_id, version = params["experimentId"], self._version(params)
        model = self.repository.get_model(experiment_id, version)
        if model.deleted is not None:
            raise Gone(f"version {version} of {experiment_id!r} was deleted")
        return json_response(200, {"items": [e.to_json() for e in self.repository.manifest(model).files]})

    def file(self, params: dict[str, str], request: Request) -> Response:
        experiment_id, version = params["experimentId"], self._version(params)
        _model, entry = self.repository.file_of(experiment_id, version, params["path"])
        filename = entry.path.rsplit("/", 1)[-1]
        link = self.repository.artifacts.pinned_link(entry.sha256, filename=filename, expires_seconds=900)
        digest = _digest_headers(entry.sha256)
        if link is not None:
            return Response(307, {"Location": link, "Cache-Control": "no-store", **digest})
        resources = ExitStack()
        stream = resources.enter_context(self.repository.artifacts.open_pinned(entry.sha256))
        headers = {
            "Content-Type": "application/octet-stream",
            "Content-Length": str(entry.size),
            "Content-Disposition": f"attachment; filename*=UTF-8''{quote(filename)}",
            **digest,
        }
        return Response(200, headers, stream=BodyStream(stream, resources))

    def download(self, params: dict[str, str], request: Request) -> Response:
        experiment_id, version = params["experimentId"], self._version(params)
        model = self.repository.get_model(experiment_id, version)
        if model.files is not None:
            return self._archive(model)
        model, link = self.repository.download_link(experiment_id, version)
        if link is not None:
            return Response(307, {"Location": link, "Cache-Control": "no-store", **_digest_headers(model.sha256)})
        resources = ExitStack()
        model, stream = resources.enter_context(self.repository.open_model(experiment_id, version))
        filename = model.artifact_name.rsplit("/", 1)[-1]
        headers = {
            "Content-Type": "application/octet-stream",
            "Content-Length": str(model.size),
            "Content-Disposition": f"attachment; filename*=UTF-8''{quote(filename)}",
            **_digest_headers(model.sha256),
        }
        return Response(200, headers, stream=BodyStream(stream, resources))

    def _archive(self, model: RegisteredModel) -> Response:
        """A folder version as one tar, streamed; where the store hands out links (the clouds, whose
        front doors cannot stream large bodies), a redirect to the files listing instead."""
        if model.deleted is not None:
            raise Gone(f"version {model.version} of {model.experiment_id!r} was deleted")
        location = _model_location(model) + "/files"
        if self.repository.artifacts.pinned_link(model.sha256, filename="manifest.json", expires_seconds=60):
            return Response(303, {"Location": location, "Cache-Control": "no-store"})
        manifest = self.repository.manifest(model)
        resources = ExitStack()

        def open_file(entry: ManifestEntry) -> AbstractContextManager[BinaryIO]:
            return self.repository.artifacts.open_pinned(entry.sha256)

        name = f"{model.experiment_id}-v{model.version}.tar"
        headers = {
            "Content-Type": "application/x-tar",
            "Content-Length": str(archive.length(manifest, model.registered_at)),
            "Content-Disposition": f"attachment; filename*=UTF-8''{quote(name)}",
            "ETag": f'"{model.sha256}"',
            "X-Manifest-Sha256": model.sha256,
        }
        return Response(
            200, headers, stream=BodyStream(archive.stream(manifest, model.registered_at, open_file), resources)
        )

    def put_tag(self, params: dict[str, str], request: Request) -> Response:
        body = _parse(request, TagBody)
        model = self.repository.set_tag(
            params["experimentId"], self._version(params), params["key"], body.value, body.by
        )
        return json_response(200, model.to_json())

    def delete_tag(self, params: dict[str, str], request: Request) -> Response:
        by = _required(request, "by", "say who removes the tag")
        model = self.repository.delete_tag(params["experimentId"], self._version(params), params["key"], by)
        return json_response(200, model.to_json())

    def deploy(self, params: dict[str, str], request: Request) -> Response:
        body = _parse(request, DeployBody)
        deployment = self.repository.deploy(params["experimentId"], body.version, body.target, body.deployed_by)
        return json_response(201, deployment.to_json())

    def rollback(self, params: dict[str, str], request: Request) -> Response:
        body = _parse(request, RollbackBody)
        deployment = self.repository.rollback(params["experimentId"], params["target"], body.deployed_by)
        return json_response(201, deployment.to_json())

    def remove_deployment(self, params: dict[str, str], request: Request) -> Response:
        by = _required(request, "by", "say who takes the deployment away")
        removed = self.repository.remove_deployment(params["experimentId"], params["target"], by)
        return json_response(200, removed.to_json())

    def deployments(self, params: dict[str, str], request: Request) -> Response:
        items = self.repository.list_deployments(params["experimentId"])
        return json_response(200, {"items": [d.to_json() for d in items]})

    def deployment_history(self, params: dict[str, str], request: Request) -> Response:
        history = self.repository.deployment_history(
            params["experimentId"], params["target"], limit=_limit(request), cursor=request.query.get("cursor")
        )
        return json_response(200, history.to_json())

    def experiment_audit(self, params: dict[str, str], request: Request) -> Response:
        page = self.repository.experiment_audit(
            params["experimentId"], limit=_limit(request), cursor=request.query.get("cursor")
        )
        return json_response(200, _page(page))

    def experiment_events(self, params: dict[str, str], request: Request) -> Response:
        after = limits.parse_sequence(request.query.get("after"))
        page = self.repository.experiment_events(params["experimentId"], after=after, limit=_limit(request))
        return json_response(200, _page(page))


def _static(found: ui.Asset, request: Request) -> Response:
    headers = {**ui.security_headers(), "ETag": found.etag}
    if found.etag in (tag.strip() for tag in request.headers.get("if-none-match", "").split(",")):
        return Response(304, headers)
    return Response(200, {"Content-Type": found.media, **headers}, found.body)


def _required(request: Request, name: str, why: str) -> str:
    value = request.query.get(name)
    if value is None:
        raise InvalidInput(f"{why} with the query parameter {name!r}")
    return check_actor_claim(value) if name == "by" else value


def _status(raw: str) -> ApprovalStatus:
    try:
        return ApprovalStatus(raw)
    except ValueError:
        raise InvalidInput(
            f"status {raw!r} is invalid: use one of {', '.join(s.value for s in ApprovalStatus)}"
        ) from None


def _flag(request: Request, name: str) -> bool:
    raw = request.query.get(name, "false")
    if raw not in ("true", "false"):
        raise InvalidInput(f"{name} {raw!r} is invalid: use true or false")
    return raw == "true"


def _time(request: Request, name: str) -> datetime | None:
    raw = request.query.get(name)
    if raw is None:
        return None
    try:
        moment = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidInput(f"{name} {raw!r} is not an ISO 8601 time such as 2026-12-01T10:00:00Z") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _tag_filters(request: Request) -> tuple[tuple[str, str], ...]:
    return tuple((name.removeprefix("tag."), value) for name, value in request.query.items() if name.startswith("tag."))


def _version_filter(request: Request) -> VersionFilter:
    status = request.query.get("status")
    return VersionFilter(
        status=_status(status) if status is not None else None,
        tags=_tag_filters(request),
        registered_after=_time(request, "registeredAfter"),
        registered_before=_time(request, "registeredBefore"),
        archived=_flag(request, "archived"),
        deleted=_flag(request, "deleted"),
    )


def decode_segment(raw: str) -> str:
    try:
        return unquote(raw, errors="strict")
    except UnicodeDecodeError:
        raise InvalidInput(f"the path segment {raw!r} is not valid percent-encoded UTF-8") from None


def _digest_headers(sha256: str) -> dict[str, str]:
    digest = base64.b64encode(bytes.fromhex(sha256)).decode("ascii")
    return {"ETag": f'"{sha256}"', "Repr-Digest": f"sha-256=:{digest}:"}


def _model_location(model: RegisteredModel) -> str:
    return f"/api/experiments/{quote(model.experiment_id)}/models/{model.version}"


EXPERIMENT = "/api/experiments/{experimentId}"
VERSION = EXPERIMENT + "/models/{version}"
OCTETS = "application/octet-stream"

UI = "/api/ui"
PAGE_MEDIA = "text/html"
ASSET_MEDIA = ("text/javascript", "text/css", "image/svg+xml")

ROUTES: tuple[Route, ...] = (
    Route("GET", "/api/health", Api.health, "Liveness; needs no credentials", answer=Health, public=True),
    # The web page: static files (no data; every call the page makes needs the key where one is set).
    *(
        Route("GET", path, Api.page, "The web page", public=True, media=PAGE_MEDIA, revalidates=True, name=name)
        for path, name in (("/", "page"), (UI + "/", "page_ui"))
    ),
    Route(
        "GET",
        UI + "/{asset}",
        Api.asset,
        "A script, style sheet or icon of the web page",
        public=True,
        media=ASSET_MEDIA[0],
        more_media=ASSET_MEDIA[1:],
        revalidates=True,
    ),
    Route("GET", "/api/openapi.json", Api.openapi, "This document", public=True),
    Route(
        "GET", "/api/runs/{runId}/artifacts", Api.run_artifacts, "Current artifacts of a run", answer=Items[RunArtifact]
    ),
    Route(
        "GET",
        "/api/runs/{runId}/audit",
        Api.run_audit,
        "Audit trail of a run's uploads",
        answer=Page[AuditEntry],
        params=PAGED,
    ),
    Route(
        "GET",
        "/api/runs/{runId}/events",
        Api.run_events,
        "Events of a run's uploads (CloudEvents), oldest first",
        answer=Page[CloudEvent],
        params=(AFTER, LIMIT),
    ),
    Route("GET", "/api/artifacts/{runArtifactId}", Api.artifact, "One run artifact", answer=RunArtifact),
    Route(
        "GET",
        "/api/rejections",
        Api.rejections,
        "Uploads that could not be recorded",
        answer=Page[Rejection],
        params=PAGED,
    ),
    Route(
        "GET",
        "/api/dead-letters",
        Api.dead_letter_list,
        "Upload notifications the host gave up on, then event deliveries a subscriber has not accepted",
        answer=Items[DeadLetterView],
        params=(LIMIT,),
    ),
    Route(
        "POST",
        "/api/register",
        Api.register,
        "Register a run artifact as the next version",
        RegisterBody,
        RegisteredModel,
        201,
        params=(IDEMPOTENCY_KEY,),
    ),
    Route(
        "GET",
        "/api/experiments",
        Api.experiments,
        "Experiments (models), by id; the listing follows changes within the index's delay",
        answer=Page[Experiment],
        params=(*PAGED, PREFIX),
    ),
    Route("GET", EXPERIMENT, Api.experiment, "One experiment", answer=Experiment),
    Route("PATCH", EXPERIMENT, Api.patch_experiment, "Describe an experiment", DescribeBody, Experiment),
    Route("PUT", EXPERIMENT + "/tags/{key}", Api.put_experiment_tag, "Tag an experiment", TagBody, Experiment),
    Route(
        "DELETE",
        EXPERIMENT + "/tags/{key}",
        Api.delete_experiment_tag,
        "Untag an experiment",
        answer=Experiment,
        params=(BY,),
    ),
    Route(
        "GET",
        "/api/search/models",
        Api.search,
        "Versions of every experiment by tag and approval, from the search index (it follows changes within "
        "the index's delay)" + TAG_FILTER_NOTE,
        answer=Page[RegisteredModel],
        params=(STATUS, *PAGED),
    ),
    Route(
        "GET",
        EXPERIMENT + "/models",
        Api.models,
        "Versions, newest first (without archived or deleted ones unless asked)" + TAG_FILTER_NOTE,
        answer=Page[RegisteredModel],
        params=(*PAGED, *VERSION_FILTERS),
    ),
    Route("GET", VERSION, Api.model, "One version", answer=RegisteredModel),
    Route("PATCH", VERSION, Api.patch_model, "Update a version's metadata", PatchVersionBody, RegisteredModel),
    Route(
        "DELETE",
        VERSION,
        Api.delete_model,
        "Delete a version (a tombstone; the number is never reused; the bytes are released)",
        answer=RegisteredModel,
        params=(BY, REASON),
        errors=(410,),
    ),
    Route("POST", VERSION + "/approval", Api.approval, "Approve or reject a version", ApprovalBody, RegisteredModel),
    Route("POST", VERSION + "/archive", Api.archive, "Archive a version", ByBody, RegisteredModel, errors=(410,)),
    Route(
        "POST", VERSION + "/restore", Api.restore, "Restore an archived version", ByBody, RegisteredModel, errors=(410,)
    ),
    Route(
        "GET",
        VERSION + "/download",
        Api.download,
        "The pinned bytes of a version; a folder version as one tar archive (clouds: 303 to its files)",
        media=OCTETS,
        redirects=True,
        errors=(410,),
    ),
    Route(
        "GET",
        VERSION + "/files",
        Api.files,
        "A version's files (path, sha256, size)",
        answer=Items[ManifestEntry],
        errors=(410,),
    ),
    Route(
        "GET",
        VERSION + "/files/{path}",
        Api.file,
        "One file of a version (its path percent-encoded, '/' as %2F or plain)",
        media=OCTETS,
        redirects=True,
        errors=(410,),
    ),
    Route("PUT", VERSION + "/tags/{key}", Api.put_tag, "Set a tag", TagBody, RegisteredModel),
    Route("DELETE", VERSION + "/tags/{key}", Api.delete_tag, "Remove a tag", answer=RegisteredModel, params=(BY,)),
    Route("POST", EXPERIMENT + "/deployments", Api.deploy, "Deploy a version to a target", DeployBody, Deployment, 201),
    Route(
        "GET", EXPERIMENT + "/deployments", Api.deployments, "Current deployment per target", answer=Items[Deployment]
    ),
    Route(
        "GET",
        EXPERIMENT + "/deployments/{target}",
        Api.deployment_history,
        "Current deployment of a target and its history",
        answer=DeploymentHistory,
        params=PAGED,
    ),
    Route(
        "DELETE",
        EXPERIMENT + "/deployments/{target}",
        Api.remove_deployment,
        "Take a target's current deployment away (its history stays)",
        answer=Deployment,
        params=(BY,),
    ),
    Route("GET", EXPERIMENT + "/targets/{target}", Api.target, "A target's rules", answer=TargetPolicy),
    Route(
        "PUT", EXPERIMENT + "/targets/{target}", Api.put_target, "Set a target's rules", TargetPolicyBody, TargetPolicy
    ),
    Route(
        "POST",
        EXPERIMENT + "/deployments/{target}/rollback",
        Api.rollback,
        "Deploy again the version that was current before",
        RollbackBody,
        Deployment,
        201,
    ),
    Route(
        "GET",
        EXPERIMENT + "/audit",
        Api.experiment_audit,
        "Audit trail of an experiment",
        answer=Page[AuditEntry],
        params=PAGED,
    ),
    Route(
        "GET",
        EXPERIMENT + "/events",
        Api.experiment_events,
        "Events of an experiment (CloudEvents), oldest first; replay from any sequence",
        answer=Page[CloudEvent],
        params=(AFTER, LIMIT),
    ),
)

PUBLIC_PATHS = frozenset(route.template for route in ROUTES if route.public)


def is_public(path: str) -> bool:
    """Whether a host serves `path` (raw, as in `Request.path`) without credentials."""
    return any(route.public and route.pattern.fullmatch(path) for route in ROUTES)
