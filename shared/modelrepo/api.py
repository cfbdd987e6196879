"""The HTTP API, once for every host: routes, request schemas, responses and error mapping.

Hosts (the local server, the Azure functions, the Lambda handlers) only convert their native
request into a `Request`, call `Api.handle`, and convert the `Response` back.
"""

from __future__ import annotations

import base64
import json
import logging
import re
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any, BinaryIO, Generic, TypeVar
from urllib.parse import quote, unquote

from pydantic import BaseModel, Field, ValidationError

from modelrepo.errors import (
    Busy,
    Conflict,
    InsufficientStorage,
    InvalidInput,
    ModelRepoError,
    NotFound,
    ObjectMissing,
    StoreUnavailable,
    Throttled,
    Unprocessable,
)
from modelrepo.model import (
    Actor,
    AuditEntry,
    Deployment,
    Description,
    ExperimentId,
    Page,
    Record,
    RegisteredModel,
    Rejection,
    RunArtifact,
    RunArtifactId,
    TagValue,
    Target,
    Version,
)
from modelrepo.ports import iter_chunks
from modelrepo.service import DEFAULT_PAGE, DeploymentHistory, ModelRepository

log = logging.getLogger(__name__)

DEFAULT_MAX_BODY_BYTES = 64 * 1024
PROBLEM_JSON = "application/problem+json"


# --- wire types ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Request:
    """A host-neutral HTTP request. `path` is raw (still percent-encoded), without the query."""

    method: str
    path: str
    query: Mapping[str, str] = field(default_factory=dict)
    headers: Mapping[str, str] = field(default_factory=dict)  # keys in lower case
    body: bytes = b""


class BodyStream:
    """A response body streamed in chunks; hosts must close it, which releases the source."""

    def __init__(self, stream: BinaryIO, resources: ExitStack) -> None:
        self._stream = stream
        self._resources = resources

    def __iter__(self) -> Iterator[bytes]:
        return iter_chunks(self._stream, 256 * 1024)

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


# --- request bodies ------------------------------------------------------------------------------


class RegisterBody(Record):
    experiment_id: ExperimentId
    run_artifact_id: RunArtifactId = Field(max_length=300)
    registered_by: Actor
    description: Description | None = None


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


# --- routing -------------------------------------------------------------------------------------


Handler = Callable[["Api", dict[str, str], Request], Response]


@dataclass(frozen=True)
class Route:
    """One operation: how it is matched, what it accepts and what it answers (for OpenAPI too)."""

    method: str
    template: str
    handler: Handler
    summary: str
    body: type[BaseModel] | None = None
    answer: type[BaseModel] | None = None  # None: the body is bytes (a download)
    status: int = 200
    query: tuple[str, ...] = ()

    @property
    def pattern(self) -> re.Pattern[str]:
        return _compile(self.template)


_PATTERNS: dict[str, re.Pattern[str]] = {}


def _compile(template: str) -> re.Pattern[str]:
    if template not in _PATTERNS:
        regex = re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/]+)", re.escape(template))
        _PATTERNS[template] = re.compile(regex)
    return _PATTERNS[template]


def _version(params: Mapping[str, str]) -> int:
    raw = params["version"]
    if not raw.isascii() or not raw.isdigit() or not 1 <= int(raw) <= 9_999_999_999 or raw.startswith("0"):
        raise InvalidInput(f"version {raw!r} is invalid: use a positive integer (or 'latest' where allowed)")
    return int(raw)


def _limit(request: Request) -> int:
    raw = request.query.get("limit")
    if raw is None:
        return DEFAULT_PAGE
    if not raw.isascii() or not raw.isdigit():
        raise InvalidInput(f"limit {raw!r} is invalid: use an integer from 1 to 1000")
    return int(raw)


B = TypeVar("B", bound=BaseModel)
M = TypeVar("M", bound=BaseModel)


def _parse(request: Request, schema: type[B]) -> B:
    content_type = request.headers.get("content-type", "application/json").split(";")[0].strip().lower()
    if content_type not in ("application/json", ""):
        raise _UnsupportedMediaType(f"send the body as application/json, not {content_type}")
    if not request.body.strip():
        raise InvalidInput("the request needs a JSON body")
    return schema.model_validate_json(request.body, strict=True)


class _UnsupportedMediaType(ModelRepoError):
    pass


def _models_page(page: Any) -> dict[str, Any]:
    return {
        "items": [item.to_json() for item in page.items],
        "nextCursor": page.next_cursor,
    }


class Api:
    """Dispatches a `Request` to the model repository and maps every outcome to a `Response`."""

    def __init__(self, repository: ModelRepository, *, max_body_bytes: int = DEFAULT_MAX_BODY_BYTES) -> None:
        self.repository = repository
        self.max_body_bytes = max_body_bytes

    def handle(self, request: Request) -> Response:
        try:
            if len(request.body) > self.max_body_bytes:
                return problem(413, f"the request body is larger than {self.max_body_bytes} bytes")
            route, params = self._match(request)
            return route.handler(self, params, request)
        except ValidationError as error:
            return problem(400, describe_validation_error(error))
        except _UnsupportedMediaType as error:
            return problem(415, error.detail)
        except InvalidInput as error:
            return problem(400, error.detail)
        except NotFound as error:
            return problem(404, error.detail)
        except Conflict as error:
            return problem(409, error.detail)
        except Unprocessable as error:
            return problem(422, error.detail)
        except Busy as error:
            return problem(503, error.detail, {"Retry-After": str(max(1, round(error.retry_after)))})
        except Throttled as error:
            return problem(503, f"the storage backend is busy: {error.detail}", {"Retry-After": "1"})
        except _MethodNotAllowed as error:
            return problem(405, error.detail, {"Allow": error.allow})
        except InsufficientStorage as error:
            log.error("out of space: %s", error.detail)
            return problem(507, error.detail)
        except StoreUnavailable as error:
            log.error("store unavailable: %s", error.detail)
            return problem(503, error.detail, {"Retry-After": "30"})
        except ObjectMissing as error:
            log.error("registry integrity: %s", error.detail)
            return problem(500, "the registry is missing bytes it should hold; an operator must look")
        except ModelRepoError as error:
            log.exception("unexpected modelrepo error")
            return problem(503, f"the request could not be completed: {error.detail}", {"Retry-After": "1"})

    def _match(self, request: Request) -> tuple[Route, dict[str, str]]:
        allowed: list[str] = []
        for route in ROUTES:
            found = route.pattern.fullmatch(request.path)
            if found is None:
                continue
            if route.method != request.method.upper():
                allowed.append(route.method)
                continue
            params = {name: _decode_segment(value) for name, value in found.groupdict().items()}
            return route, params
        if allowed:
            raise _MethodNotAllowed(
                f"{request.method} is not allowed on {request.path}", ", ".join(sorted(set(allowed)))
            )
        raise NotFound(f"no such route: {request.method} {request.path}")

    # --- handlers ---

    def health(self, params: dict[str, str], request: Request) -> Response:
        return json_response(200, Health(status="ok").to_json())

    def openapi(self, params: dict[str, str], request: Request) -> Response:
        from modelrepo.openapi import openapi_document

        return json_response(200, openapi_document())

    def run_artifacts(self, params: dict[str, str], request: Request) -> Response:
        items = self.repository.list_run_artifacts(params["runId"])
        return json_response(200, {"items": [a.to_json() for a in items]})

    def run_audit(self, params: dict[str, str], request: Request) -> Response:
        page = self.repository.run_audit(params["runId"], limit=_limit(request), cursor=request.query.get("cursor"))
        return json_response(200, _models_page(page))

    def artifact(self, params: dict[str, str], request: Request) -> Response:
        return json_response(200, self.repository.get_artifact(params["runArtifactId"]).to_json())

    def rejections(self, params: dict[str, str], request: Request) -> Response:
        page = self.repository.list_rejections(limit=_limit(request), cursor=request.query.get("cursor"))
        return json_response(200, _models_page(page))

    def register(self, params: dict[str, str], request: Request) -> Response:
        body = _parse(request, RegisterBody)
        model = self.repository.register_model(
            body.experiment_id,
            body.run_artifact_id,
            body.registered_by,
            description=body.description,
            idempotency_key=request.headers.get("idempotency-key"),
        )
        return json_response(201, model.to_json(), {"Location": _model_location(model)})

    def models(self, params: dict[str, str], request: Request) -> Response:
        page = self.repository.list_models(
            params["experimentId"], limit=_limit(request), cursor=request.query.get("cursor")
        )
        return json_response(200, _models_page(page))

    def latest_model(self, params: dict[str, str], request: Request) -> Response:
        return json_response(200, self.repository.latest_model(params["experimentId"]).to_json())

    def model(self, params: dict[str, str], request: Request) -> Response:
        return json_response(200, self.repository.get_model(params["experimentId"], _version(params)).to_json())

    def download(self, params: dict[str, str], request: Request) -> Response:
        experiment_id, version = params["experimentId"], _version(params)
        model, link = self.repository.download_link(experiment_id, version)
        if link is not None:
            return Response(307, {"Location": link, "Cache-Control": "no-store", **_digest_headers(model)})
        resources = ExitStack()
        model, stream = resources.enter_context(self.repository.open_model(experiment_id, version))
        filename = model.artifact_name.rsplit("/", 1)[-1]
        headers = {
            "Content-Type": "application/octet-stream",
            "Content-Length": str(model.size),
            "Content-Disposition": f"attachment; filename*=UTF-8''{quote(filename)}",
            **_digest_headers(model),
        }
        return Response(200, headers, stream=BodyStream(stream, resources))

    def put_tag(self, params: dict[str, str], request: Request) -> Response:
        body = _parse(request, TagBody)
        model = self.repository.set_tag(params["experimentId"], _version(params), params["key"], body.value, body.by)
        return json_response(200, model.to_json())

    def delete_tag(self, params: dict[str, str], request: Request) -> Response:
        by = request.query.get("by")
        if by is None:
            raise InvalidInput("say who removes the tag with the query parameter 'by'")
        model = self.repository.delete_tag(params["experimentId"], _version(params), params["key"], by)
        return json_response(200, model.to_json())

    def deploy(self, params: dict[str, str], request: Request) -> Response:
        body = _parse(request, DeployBody)
        deployment = self.repository.deploy(params["experimentId"], body.version, body.target, body.deployed_by)
        return json_response(201, deployment.to_json())

    def rollback(self, params: dict[str, str], request: Request) -> Response:
        body = _parse(request, RollbackBody)
        deployment = self.repository.rollback(params["experimentId"], params["target"], body.deployed_by)
        return json_response(201, deployment.to_json())

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
        return json_response(200, _models_page(page))


class _MethodNotAllowed(ModelRepoError):
    def __init__(self, detail: str, allow: str) -> None:
        super().__init__(detail)
        self.allow = allow


def _decode_segment(raw: str) -> str:
    try:
        return unquote(raw, errors="strict")
    except UnicodeDecodeError:
        raise InvalidInput(f"the path segment {raw!r} is not valid percent-encoded UTF-8") from None


def _digest_headers(model: RegisteredModel) -> dict[str, str]:
    digest = base64.b64encode(bytes.fromhex(model.sha256)).decode("ascii")
    return {"ETag": f'"{model.sha256}"', "Repr-Digest": f"sha-256=:{digest}:"}


def _model_location(model: RegisteredModel) -> str:
    return f"/api/experiments/{quote(model.experiment_id)}/models/{model.version}"


def describe_validation_error(error: ValidationError) -> str:
    """One line naming every field that is wrong and why."""
    parts = []
    for item in error.errors(include_url=False):
        where = ".".join(str(p) for p in item["loc"])
        message = str(item["msg"]).removeprefix("Value error, ")
        if item["type"] == "json_invalid":
            message = f"the body is not valid JSON ({item.get('ctx', {}).get('error', 'parse error')})"
        elif item["type"] == "model_type" or item["type"] == "model_attributes_type":
            message = "the body must be a JSON object"
        parts.append(f"{where}: {message}" if where else message)
    return "; ".join(parts)


class Items(Record, Generic[M]):
    """A complete (unpaged) list."""

    items: list[M]


PAGED = ("limit", "cursor")
EXPERIMENT = "/api/experiments/{experimentId}"
VERSION = EXPERIMENT + "/models/{version}"

ROUTES: tuple[Route, ...] = (
    Route("GET", "/api/health", Api.health, "Liveness; needs no credentials", answer=Health),
    Route("GET", "/api/openapi.json", Api.openapi, "This document", answer=None),
    Route(
        "GET", "/api/runs/{runId}/artifacts", Api.run_artifacts, "Current artifacts of a run", answer=Items[RunArtifact]
    ),
    Route(
        "GET",
        "/api/runs/{runId}/audit",
        Api.run_audit,
        "Audit trail of a run's uploads",
        answer=Page[AuditEntry],
        query=PAGED,
    ),
    Route("GET", "/api/artifacts/{runArtifactId}", Api.artifact, "One run artifact", answer=RunArtifact),
    Route(
        "GET",
        "/api/rejections",
        Api.rejections,
        "Uploads that could not be recorded",
        answer=Page[Rejection],
        query=PAGED,
    ),
    Route(
        "POST",
        "/api/register",
        Api.register,
        "Register a run artifact as the next version",
        RegisterBody,
        RegisteredModel,
        201,
    ),
    Route(
        "GET", EXPERIMENT + "/models", Api.models, "Versions, newest first", answer=Page[RegisteredModel], query=PAGED
    ),
    Route("GET", EXPERIMENT + "/models/latest", Api.latest_model, "The newest version", answer=RegisteredModel),
    Route("GET", VERSION, Api.model, "One version", answer=RegisteredModel),
    Route("GET", VERSION + "/download", Api.download, "The pinned bytes of a version", answer=None),
    Route("PUT", VERSION + "/tags/{key}", Api.put_tag, "Set a tag", TagBody, RegisteredModel),
    Route("DELETE", VERSION + "/tags/{key}", Api.delete_tag, "Remove a tag", answer=RegisteredModel, query=("by",)),
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
        query=PAGED,
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
        query=PAGED,
    ),
)
