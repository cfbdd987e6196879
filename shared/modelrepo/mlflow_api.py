"""MLflow's model registry REST API (`/api/2.0/mlflow/...`) over modelrepo, on every host.

An MLflow client (`MlflowClient(registry_uri=...)`, `mlflow.register_model`, `models:/` loading)
talks to modelrepo as to an MLflow registry server: `Api.handle` hands every path under
`/api/2.0/mlflow/` and `/api/2.0/mlflow-artifacts/` to `MlflowApi`, which answers in MLflow's
JSON shapes (snake_case, `version` a string, times in milliseconds) and its error format
`{"error_code", "message"}` with MLflow's status codes. Every rule stays in the core: this module
only translates, through the same `ModelRepository` calls the rest of the API makes.

The mapping, and why:
- A registered model is the modelrepo experiment of the same name; an alias is a deployment
  target (`@champion`); version numbers are the same gapless numbers.
- `model-versions/create` takes as `source` a location inside modelrepo's uploads bucket
  (`ArtifactStore.key_of_uri`: s3://, the blob URL or wasbs://, a file URI or an absolute path in
  the drop folder): a file becomes a single-file version, a folder a folder version. Objects the
  event path has not recorded yet are recorded first (idempotent, as the reconcile sweep does), so
  a version never waits for an event. Registration is synchronous (its bytes are pinned before the
  answer), so a version is `READY` when it is created: `PENDING_REGISTRATION` is never seen, and a
  source that cannot be registered is an error answer, never a `FAILED_REGISTRATION` version.
- MLflow's client retries a POST after a lost answer and sends no request token, so a create's
  Idempotency-Key is the request itself (name, source, run_id, description, tags and what the
  source holds now), counted for `CREATE_WINDOW`: a retry returns the version its first attempt
  made, while the same request minutes later, or after the source's bytes changed, makes another.
- `get-download-uri` answers `<base>/api/2.0/mlflow-artifacts/artifacts/<name>/<version>`, which
  MLflow's HttpArtifactRepository lists and downloads through this module: files stream from the
  registry (local), or redirect to a time-limited storage link (the clouds).
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Callable, Mapping
from contextlib import suppress
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Annotated, Any, TypeVar
from urllib.parse import quote

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from modelrepo import limits, tables
from modelrepo.api import Api, Request, Response, decode_segment, json_response
from modelrepo.errors import (
    Busy,
    Conflict,
    Gone,
    InvalidInput,
    ModelRepoError,
    NotFound,
    ObjectMissing,
    Throttled,
    Unprocessable,
)
from modelrepo.events import ObjectCreated
from modelrepo.model import (
    ArtifactKey,
    Experiment,
    RegisteredModel,
    RunArtifact,
    check_description,
    check_run_id,
    check_tag_key,
    check_tag_value,
    describe_validation_error,
)
from modelrepo.service import VersionFilter, VersionMetadata

if TYPE_CHECKING:
    from modelrepo.ports import ObjectInfo

log = logging.getLogger(__name__)

REGISTRY_PREFIX = "/api/2.0/mlflow/"
ARTIFACTS_ROUTE = "/api/2.0/mlflow-artifacts/artifacts"

# How long an MLflow create counts as the same request (its retries), and who acts when the host
# authenticated no one (MLflow's requests name no user).
CREATE_WINDOW = timedelta(minutes=10)
DEFAULT_ACTOR = "mlflow"
# MLflow asks for up to 10,000 versions a page by default; modelrepo pages hold at most MAX_PAGE.
DEFAULT_MAX_RESULTS = 100

# MLflow's error codes and the status its servers answer them with (mlflow.exceptions).
STATUS_OF = {
    "INVALID_PARAMETER_VALUE": 400,
    "BAD_REQUEST": 400,
    "RESOURCE_ALREADY_EXISTS": 400,
    "PERMISSION_DENIED": 403,
    "RESOURCE_DOES_NOT_EXIST": 404,
    "ENDPOINT_NOT_FOUND": 404,
    "RESOURCE_CONFLICT": 409,
    "INTERNAL_ERROR": 500,
    "NOT_IMPLEMENTED": 501,
    "TEMPORARILY_UNAVAILABLE": 503,
}


class MlflowError(Exception):
    """An answer in MLflow's error format."""

    def __init__(self, code: str, message: str, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.headers = dict(headers or {})


# The core's errors as MLflow's codes; first match wins (subclasses before their bases).
ERROR_CODES: tuple[tuple[type[Exception], str], ...] = (
    (ValidationError, "INVALID_PARAMETER_VALUE"),
    (InvalidInput, "INVALID_PARAMETER_VALUE"),
    (NotFound, "RESOURCE_DOES_NOT_EXIST"),
    (Gone, "RESOURCE_DOES_NOT_EXIST"),  # MLflow knows no deleted-but-recorded versions
    (Conflict, "RESOURCE_CONFLICT"),
    (Unprocessable, "BAD_REQUEST"),
    (Busy, "TEMPORARILY_UNAVAILABLE"),
    (Throttled, "TEMPORARILY_UNAVAILABLE"),
)

# Names outside modelrepo's rules, said in MLflow's words.
NAME_RULE = (
    "a registered model is a modelrepo experiment, whose id is 1-128 letters, digits, '.', '_' or '-', "
    "starting with a letter or digit"
)
ALIAS_RULE = "an alias is a modelrepo deployment target: 1-32 lowercase letters, digits or '-', starting with a letter"


def _model_name(value: object) -> str:
    if not isinstance(value, str) or not limits.ID_PATTERN.fullmatch(value):
        raise InvalidInput(f"registered model name {value!r} is invalid: {NAME_RULE}")
    return value


def _alias(value: object) -> str:
    if not isinstance(value, str) or not limits.TARGET_PATTERN.fullmatch(value):
        raise InvalidInput(f"alias {value!r} is invalid: {ALIAS_RULE}")
    return value


def _version(value: object) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        raise InvalidInput(f"version {value!r} is invalid: use a whole number from 1 to {limits.MAX_NUMBER}")
    return limits.parse_version(value.strip())


def _listed(value: object) -> object:
    """A repeated field from a query string arrives as one string."""
    return [value] if isinstance(value, str) else value


ModelName = Annotated[str, BeforeValidator(_model_name)]
Alias = Annotated[str, BeforeValidator(_alias)]
VersionNumber = Annotated[int, BeforeValidator(_version)]


# --- request bodies, as MLflow's protos name their fields (unknown fields are ignored, as MLflow does) --


class Body(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class Tag(Body):
    key: str
    value: str = ""


class Named(Body):
    name: ModelName


class CreateRegisteredModel(Named):
    tags: list[Tag] = Field(default_factory=list)
    description: str | None = None


class UpdateRegisteredModel(Named):
    description: str | None = None


class SetRegisteredModelTag(Named):
    key: str
    value: str = ""


class DeleteRegisteredModelTag(Named):
    key: str


class LatestVersions(Named):
    stages: Annotated[list[str], BeforeValidator(_listed)] = Field(default_factory=list)


class Versioned(Named):
    version: VersionNumber


class CreateModelVersion(Named):
    source: str = Field(min_length=1, max_length=limits.MAX_URI_CHARS)
    run_id: str | None = None
    tags: list[Tag] = Field(default_factory=list)
    description: str | None = None


class UpdateModelVersion(Versioned):
    description: str | None = None


class SetModelVersionTag(Versioned):
    key: str
    value: str = ""


class DeleteModelVersionTag(Versioned):
    key: str


class SetAlias(Named):
    alias: Alias
    version: VersionNumber


class AliasOf(Named):
    alias: Alias


class Search(Body):
    filter: str | None = None
    max_results: int | None = Field(default=None, ge=1)
    order_by: Annotated[list[str], BeforeValidator(_listed)] = Field(default_factory=list)
    page_token: str | None = None


class ArtifactListing(Body):
    path: str = ""


B = TypeVar("B", bound=Body)


# --- answers ---------------------------------------------------------------------------------------


def millis(moment: datetime | None) -> int | None:
    return None if moment is None else int(moment.timestamp() * 1000)


def _tags(tags: Mapping[str, str]) -> list[dict[str, str]]:
    return [{"key": key, "value": value} for key, value in tags.items()]


def _without_none(document: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in document.items() if value is not None}


Handler = Callable[["MlflowApi", Request], Response]


class MlflowApi:
    """Answers MLflow's registry and artifact requests from the `Api`'s repository."""

    def __init__(self, api: Api) -> None:
        self.api = api
        self.repository = api.repository

    # --- dispatch ---

    def handle(self, request: Request) -> Response:
        try:
            if len(request.body) > self.api.max_body_bytes:
                raise MlflowError(
                    "INVALID_PARAMETER_VALUE", f"the request body is larger than {self.api.max_body_bytes} bytes"
                )
            handler = self._route(request)
            if request.method.upper() != "GET" and self.api.actor_must_be_principal and request.principal is None:
                raise MlflowError(
                    "PERMISSION_DENIED", "this repository requires an authenticated principal for every change"
                )
            return handler(self, request)
        except MlflowError as error:
            return self._error(error)
        except ObjectMissing as error:
            log.error("registry integrity: %s", error.detail)
            return self._error(
                MlflowError("INTERNAL_ERROR", "the registry is missing bytes it should hold; an operator must look")
            )
        except (ValidationError, ModelRepoError) as error:
            return self._error(self._translate(error))
        except Exception:  # pragma: no cover - a bug must still answer in MLflow's format
            log.exception("unexpected error answering an MLflow request")
            return json_response(500, {"error_code": "INTERNAL_ERROR", "message": "unexpected error"})

    def _route(self, request: Request) -> Handler:
        path, method = request.path, request.method.upper()
        if path.startswith(ARTIFACTS_ROUTE):
            rest = path[len(ARTIFACTS_ROUTE) :]
            if method not in ("GET", "HEAD"):
                raise MlflowError(
                    "NOT_IMPLEMENTED",
                    "modelrepo serves registered versions' artifacts read-only: upload into the bucket instead",
                )
            if rest in ("", "/"):
                return MlflowApi.list_artifacts
            if rest.startswith("/"):
                return MlflowApi.download_artifact
        name = path.removeprefix(REGISTRY_PREFIX).rstrip("/")
        found = ROUTES.get((method, name))
        if found is not None:
            return found
        if name in UNSUPPORTED:
            raise MlflowError("NOT_IMPLEMENTED", UNSUPPORTED[name])
        if any(route == name for _, route in ROUTES):
            allowed = ", ".join(sorted(m for m, route in ROUTES if route == name))
            raise MlflowError("ENDPOINT_NOT_FOUND", f"{method} is not allowed on {path}: use {allowed}")
        raise MlflowError(
            "ENDPOINT_NOT_FOUND",
            f"no such endpoint: {method} {path} (modelrepo serves MLflow's model registry API, not its tracking API)",
        )

    def _translate(self, error: ValidationError | ModelRepoError) -> MlflowError:
        message = describe_validation_error(error) if isinstance(error, ValidationError) else error.detail
        for kind, code in ERROR_CODES:
            if isinstance(error, kind):
                headers = {}
                if isinstance(error, Busy):
                    headers["Retry-After"] = str(max(1, round(error.retry_after)))
                elif isinstance(error, Throttled):
                    headers["Retry-After"] = "1"
                return MlflowError(code, message, headers)
        log.exception("unexpected modelrepo error")
        return MlflowError(
            "TEMPORARILY_UNAVAILABLE", f"the request could not be completed: {message}", {"Retry-After": "1"}
        )

    @staticmethod
    def _error(error: MlflowError) -> Response:
        status = STATUS_OF.get(error.code, 500)
        return json_response(status, {"error_code": error.code, "message": error.message}, error.headers)

    @staticmethod
    def _parse(request: Request, schema: type[B]) -> B:
        """GET parameters from the query string, the others from a JSON body (as MLflow sends them)."""
        if request.method.upper() == "GET":
            return schema.model_validate(dict(request.query))
        content_type = request.headers.get("content-type", "application/json").split(";")[0].strip().lower()
        if content_type not in ("application/json", ""):
            raise MlflowError("INVALID_PARAMETER_VALUE", f"send the body as application/json, not {content_type}")
        if not request.body.strip():
            return schema.model_validate({})
        try:
            document = json.loads(request.body)
        except ValueError as error:
            raise MlflowError("INVALID_PARAMETER_VALUE", f"the body is not valid JSON ({error})") from None
        if not isinstance(document, dict):
            raise MlflowError("INVALID_PARAMETER_VALUE", "the body must be a JSON object")
        return schema.model_validate(document)

    @staticmethod
    def _ok(payload: dict[str, Any]) -> Response:
        return json_response(200, payload)

    @staticmethod
    def _actor(request: Request) -> str:
        """Who acts: the principal the host authenticated, else `mlflow` (MLflow names no user)."""
        return request.principal or DEFAULT_ACTOR

    # --- registered models ---

    def _registered(self, name: str) -> bool:
        """Whether the experiment has its own record (a registration, a description or a tag made it);
        one whose artifacts were only recorded so far may still be created."""
        return self.repository.metadata.get(tables.experiment_partition(name), tables.COUNTER_ROW) is not None

    def create_registered_model(self, request: Request) -> Response:
        body = self._parse(request, CreateRegisteredModel)
        tags = _checked_tags(body.tags)
        if body.description is not None:
            check_description(body.description)
        if self._registered(body.name):
            raise MlflowError("RESOURCE_ALREADY_EXISTS", f"registered model {body.name!r} already exists")
        actor = self._actor(request)
        self.repository.describe_experiment(body.name, body.description or "", actor)
        for key, value in tags.items():
            self.repository.set_experiment_tag(body.name, key, value, actor)
        return self._ok({"registered_model": self._registered_model(self.repository.get_experiment(body.name))})

    def get_registered_model(self, request: Request) -> Response:
        body = self._parse(request, Named)
        return self._ok({"registered_model": self._registered_model(self.repository.get_experiment(body.name))})

    def update_registered_model(self, request: Request) -> Response:
        body = self._parse(request, UpdateRegisteredModel)
        experiment = self.repository.get_experiment(body.name)
        if body.description is not None:
            experiment = self.repository.describe_experiment(body.name, body.description, self._actor(request))
        return self._ok({"registered_model": self._registered_model(experiment)})

    def search_registered_models(self, request: Request) -> Response:
        body = self._parse(request, Search)
        _check_order(body.order_by, ("name ASC", "name"), "registered models come by name, ascending")
        limit = min(body.max_results or DEFAULT_MAX_RESULTS, limits.MAX_PAGE)
        exact, prefix = _name_filter(body.filter)
        if exact is not None:
            try:
                found = [self.repository.get_experiment(exact)]
            except NotFound:
                found = []
            return self._ok({"registered_models": [self._registered_model(e) for e in found]})
        page = self.repository.list_experiments(limit=limit, cursor=_token(body.page_token), prefix=prefix)
        return self._ok(
            _without_none(
                {
                    "registered_models": [self._registered_model(e) for e in page.items],
                    "next_page_token": page.next_cursor,
                }
            )
        )

    def get_latest_versions(self, request: Request) -> Response:
        body = self._parse(request, LatestVersions)
        self.repository.get_experiment(body.name)
        wanted = {stage.lower() for stage in body.stages}
        try:
            latest = self.repository.latest_model(body.name)
        except NotFound:
            return self._ok({"model_versions": []})
        if wanted and "none" not in wanted:
            return self._ok({"model_versions": []})  # modelrepo has no stages: every live version is "None"
        return self._ok({"model_versions": [self._model_version(latest)]})

    def set_registered_model_tag(self, request: Request) -> Response:
        body = self._parse(request, SetRegisteredModelTag)
        self.repository.get_experiment(body.name)
        self.repository.set_experiment_tag(body.name, body.key, body.value, self._actor(request))
        return self._ok({})

    def delete_registered_model_tag(self, request: Request) -> Response:
        body = self._parse(request, DeleteRegisteredModelTag)
        check_tag_key(body.key)
        experiment = self.repository.get_experiment(body.name)
        if body.key in experiment.tags:  # deleting an absent tag changes nothing, as in MLflow
            self.repository.delete_experiment_tag(body.name, body.key, self._actor(request))
        return self._ok({})

    # --- aliases ---

    def set_alias(self, request: Request) -> Response:
        body = self._parse(request, SetAlias)
        self.repository.deploy(body.name, body.version, body.alias, self._actor(request))
        return self._ok({})

    def get_by_alias(self, request: Request) -> Response:
        body = self._parse(request, AliasOf)
        try:
            deployment = self.repository.current_deployment(body.name, body.alias)
        except NotFound:
            raise NotFound(f"registered model {body.name!r} has no alias {body.alias!r}") from None
        return self._ok({"model_version": self._model_version(self._live(body.name, deployment.version))})

    def delete_alias(self, request: Request) -> Response:
        body = self._parse(request, AliasOf)
        self.repository.get_experiment(body.name)
        with suppress(NotFound):  # an alias that points nowhere is already deleted, as in MLflow
            self.repository.remove_deployment(body.name, body.alias, self._actor(request))
        return self._ok({})

    # --- model versions ---

    def create_model_version(self, request: Request) -> Response:
        body = self._parse(request, CreateModelVersion)
        tags = _checked_tags(body.tags)
        if body.description is not None:
            check_description(body.description)
        name, actor = body.name, self._actor(request)
        key = self._source_key(body)
        run_id, path = _run_and_path(key)
        if body.run_id and body.run_id != run_id:
            raise InvalidInput(f"run_id {body.run_id!r} does not match the source, which is in run {run_id!r}")
        metadata = VersionMetadata(description=body.description)
        single = self.repository.artifacts.head(key) if path else None
        if single is not None:
            artifact = self._recorded(single, actor)
            model = self.repository.register_model(
                name,
                artifact.run_artifact_id,
                actor,
                idempotency_key=_request_key(body, tags, artifact.run_artifact_id),
                metadata=metadata,
                idempotency_window=CREATE_WINDOW,
            )
        else:
            prefix = f"{path}/" if path else ""
            objects = self._recorded_folder(f"{name}/{run_id}/{prefix}", run_id, actor, body.source)
            content = ",".join(f"{info.key}@{_plain(info.etag)}" for info in objects)
            model = self.repository.register_folder(
                name, run_id, prefix, actor, _request_key(body, tags, content), metadata, CREATE_WINDOW
            )
        for tag_key, value in tags.items():  # after registration: the core takes no tags at registration
            if model.tags.get(tag_key) != value:
                model = self.repository.set_tag(name, model.version, tag_key, value, actor)
        return self._ok({"model_version": self._model_version(model)})

    def _source_key(self, body: CreateModelVersion) -> str:
        """The bucket key a source names; it must be inside the registered model's own experiment."""
        key = self.repository.artifacts.key_of_uri(body.source.strip())
        if key is None:
            example = self.repository.artifacts.uri_of(f"{body.name}/run-1/model")
            raise InvalidInput(
                f"source {body.source!r} is not a location in modelrepo's uploads bucket: give the file or "
                f"folder a run uploaded there, <model>/<run>/<path>, such as {example}"
            )
        key = key.rstrip("/")
        experiment = key.split("/", 1)[0]
        if experiment != body.name:
            raise InvalidInput(
                f"source {body.source!r} is in experiment {experiment!r}: a version of registered model "
                f"{body.name!r} comes from {body.name}/<run>/..."
            )
        return key

    def _recorded(self, info: ObjectInfo, actor: str) -> RunArtifact:
        """The run artifact of an object version, recorded now if the event path has not yet."""
        result = self.repository.record_artifact(ObjectCreated.from_object(info, f"mlflow:{actor}"))
        if result.artifact is None:
            reason = result.rejection.reason if result.rejection is not None else result.outcome.value
            raise InvalidInput(f"{info.key!r} cannot be registered: {reason}")
        return result.artifact

    def _recorded_folder(self, prefix: str, run_id: str, actor: str, source: str) -> list[ObjectInfo]:
        """Every object under a folder of the bucket, each recorded (those the run's current
        artifacts do not hold yet, as the reconcile sweep would)."""
        objects: list[ObjectInfo] = []
        after: str | None = None
        while True:
            listing = self.repository.artifacts.list(prefix, after=after, limit=1000)
            objects.extend(listing.objects)
            if len(objects) > limits.MAX_VERSION_FILES:
                raise Unprocessable(f"a version holds at most {limits.MAX_VERSION_FILES} files; {source!r} has more")
            if listing.next_after is None:
                break
            after = listing.next_after
        if not objects:
            raise NotFound(f"there is nothing in the bucket at {source!r}")
        current = {a.key: _plain(a.etag) for a in self.repository.list_run_artifacts(run_id)}
        for info in objects:
            if current.get(info.key) != _plain(info.etag):
                self._recorded(info, actor)
        return objects

    def get_model_version(self, request: Request) -> Response:
        body = self._parse(request, Versioned)
        return self._ok({"model_version": self._model_version(self._live(body.name, body.version))})

    def update_model_version(self, request: Request) -> Response:
        body = self._parse(request, UpdateModelVersion)
        model = self._live(body.name, body.version)
        if body.description is not None and body.description != (model.description or ""):
            model = self.repository.update_metadata(
                body.name, body.version, VersionMetadata(description=body.description), self._actor(request)
            )
        return self._ok({"model_version": self._model_version(model)})

    def delete_model_version(self, request: Request) -> Response:
        body = self._parse(request, Versioned)
        self.repository.delete_version(body.name, body.version, self._actor(request), "deleted through MLflow's API")
        return self._ok({})

    def set_model_version_tag(self, request: Request) -> Response:
        body = self._parse(request, SetModelVersionTag)
        self.repository.set_tag(body.name, body.version, body.key, body.value, self._actor(request))
        return self._ok({})

    def delete_model_version_tag(self, request: Request) -> Response:
        body = self._parse(request, DeleteModelVersionTag)
        check_tag_key(body.key)
        if body.key in self._live(body.name, body.version).tags:  # absent: nothing to do, as in MLflow
            self.repository.delete_tag(body.name, body.version, body.key, self._actor(request))
        return self._ok({})

    def search_model_versions(self, request: Request) -> Response:
        body = self._parse(request, Search)
        _check_order(
            body.order_by,
            ("version_number DESC", "creation_timestamp DESC"),
            "versions come newest first",
        )
        limit = min(body.max_results or DEFAULT_MAX_RESULTS, limits.MAX_PAGE)
        where = _version_filter(body.filter)
        cursor = _token(body.page_token)
        if where.name is not None:
            page = self.repository.list_models(
                where.name, limit=limit, cursor=cursor, where=VersionFilter(tags=where.tags, archived=True)
            )
        elif where.tags:
            page = self.repository.search_models(tags=where.tags, limit=limit, cursor=cursor)
        else:
            raise InvalidInput("search model versions by name = '<model>' and/or tags.<key> = '<value>'")
        found = [m for m in page.items if where.run_id is None or m.run_id == where.run_id]
        return self._ok(
            _without_none(
                {"model_versions": [self._model_version(m) for m in found], "next_page_token": page.next_cursor}
            )
        )

    def get_download_uri(self, request: Request) -> Response:
        body = self._parse(request, Versioned)
        model = self._live(body.name, body.version)
        base = _base_url(request)
        uri = f"{base}{ARTIFACTS_ROUTE}/{quote(model.experiment_id, safe='')}/{model.version}"
        return self._ok({"artifact_uri": uri})

    # --- artifacts: what HttpArtifactRepository lists and downloads ---

    def list_artifacts(self, request: Request) -> Response:
        """The files and folders directly under `<name>/<version>[/<folder>]` of a version."""
        body = self._parse(request, ArtifactListing)
        name, version, inner = _artifact_path(body.path)
        model = self._live(name, version)
        entries = self.repository.manifest(model).files
        if any(entry.path == inner for entry in entries):
            return self._ok({})  # a file, not a folder: MLflow lists nothing for it
        folder = f"{inner}/" if inner else ""
        files: dict[str, dict[str, Any]] = {}
        for entry in entries:
            if not entry.path.startswith(folder):
                continue
            child, nested, _ = entry.path[len(folder) :].partition("/")
            path = folder + child
            if nested:
                files.setdefault(path, {"path": path, "is_dir": True})
            else:
                files[path] = {"path": path, "is_dir": False, "file_size": entry.size}
        return self._ok({"files": [files[path] for path in sorted(files)]})

    def download_artifact(self, request: Request) -> Response:
        """One file of a version: the core's file route (streamed locally, a signed link on the clouds)."""
        name, version, inner = _artifact_path(request.path[len(ARTIFACTS_ROUTE) + 1 :], encoded=True)
        if not inner:
            raise InvalidInput("name a file of the version: .../artifacts/<name>/<version>/<path>")
        response = self.api.file({"experimentId": name, "version": str(version), "path": inner}, request)
        if request.method.upper() == "HEAD" and response.stream is not None:
            response.stream.close()
            response.stream = None
        return response

    # --- records as MLflow shows them ---

    def _live(self, name: str, version: int) -> RegisteredModel:
        model = self.repository.get_model(name, version)
        if model.deleted is not None:
            raise NotFound(f"version {version} of registered model {name!r} was deleted")
        return model

    def _aliases(self, name: str) -> dict[int, list[str]]:
        by_version: dict[int, list[str]] = {}
        for deployment in self.repository.list_deployments(name):
            by_version.setdefault(deployment.version, []).append(deployment.target)
        return by_version

    def _model_version(self, model: RegisteredModel, aliases: dict[int, list[str]] | None = None) -> dict[str, Any]:
        if aliases is None:
            aliases = self._aliases(model.experiment_id)
        changed = [model.registered_at, model.approval.at, model.archived_at]
        return _without_none(
            {
                "name": model.experiment_id,
                "version": str(model.version),
                "creation_timestamp": millis(model.registered_at),
                "last_updated_timestamp": millis(max(moment for moment in changed if moment is not None)),
                "user_id": model.registered_by,
                "current_stage": "Archived" if model.archived_at is not None else "None",
                "description": model.description or "",
                "source": self._source_of(model),
                "run_id": model.run_id,
                "status": "READY",
                "status_message": "",
                "tags": _tags(model.tags),
                "aliases": sorted(aliases.get(model.version, [])),
            }
        )

    def _source_of(self, model: RegisteredModel) -> str:
        key = f"{model.experiment_id}/{model.run_id}/{model.artifact_name}".rstrip("/")
        try:
            return self.repository.artifacts.uri_of(key)
        except ModelRepoError:
            return key

    def _registered_model(self, experiment: Experiment) -> dict[str, Any]:
        name = experiment.experiment_id
        aliases = self._aliases(name) if experiment.latest_version is not None else {}
        latest: list[dict[str, Any]] = []
        if experiment.latest_version is not None:
            with suppress(NotFound):
                latest = [self._model_version(self.repository.get_model(name, experiment.latest_version), aliases)]
        return _without_none(
            {
                "name": name,
                "creation_timestamp": millis(experiment.created_at),
                "last_updated_timestamp": millis(experiment.updated_at),
                "description": experiment.description or "",
                "tags": _tags(experiment.tags),
                "latest_versions": latest,
                "aliases": [
                    {"alias": alias, "version": str(version)}
                    for version, names in sorted(aliases.items())
                    for alias in sorted(names)
                ],
            }
        )


# --- helpers ---------------------------------------------------------------------------------------


def _checked_tags(tags: list[Tag]) -> dict[str, str]:
    """Tags of a create, all checked before anything is written."""
    checked: dict[str, str] = {}
    for tag in tags:
        checked[check_tag_key(tag.key)] = check_tag_value(tag.value)
    if len(checked) > limits.MAX_TAGS:
        raise InvalidInput(f"at most {limits.MAX_TAGS} tags, not {len(checked)}")
    return checked


def _request_key(body: CreateModelVersion, tags: Mapping[str, str], content: str) -> str:
    """The Idempotency-Key of a create: the request itself and what its source holds now."""
    request = [body.name, body.source, body.run_id or "", body.description, sorted(tags.items()), content]
    digest = hashlib.sha256(json.dumps(request, ensure_ascii=False).encode()).hexdigest()
    return f"mlflow-create-{digest}"


def _run_and_path(key: str) -> tuple[str, str]:
    """The run and the path inside it of a source's key `<experiment>/<run>[/<path>]`."""
    parts = key.split("/", 2)
    if len(parts) < 2 or not parts[1]:
        raise InvalidInput(f"the source {key!r} names no run: give <experiment>/<run>/<path> in the bucket")
    check_run_id(parts[1])
    path = parts[2] if len(parts) == 3 else ""
    if path:
        ArtifactKey.parse(f"{parts[0]}/{parts[1]}/{path}")  # the same name rules an upload has
    return parts[1], path


def _plain(etag: str) -> str:
    return etag.strip().removeprefix("W/").strip('"')


def _token(page_token: str | None) -> str | None:
    if page_token is not None and not limits.CURSOR_PATTERN.fullmatch(page_token):
        raise InvalidInput(f"page_token {page_token!r} is not one this server gave out")
    return page_token or None


def _check_order(order_by: list[str], supported: tuple[str, ...], how: str) -> None:
    for clause in order_by:
        if " ".join(clause.split()) not in supported:
            raise InvalidInput(f"order_by {clause!r} is not supported: {how}")


def _artifact_path(raw: str, *, encoded: bool = False) -> tuple[str, int, str]:
    """`<name>/<version>[/<path>]` of an artifact request."""
    segments = raw.strip("/").split("/")
    if encoded:
        segments = [decode_segment(segment) for segment in segments]
    if len(segments) < 2:
        raise InvalidInput(f"artifact path {raw!r} must start with <registered model>/<version>")
    name, version = _model_name(segments[0]), _version(segments[1])
    inner = "/".join(segments[2:])
    if any(segment in ("", ".", "..") for segment in segments[2:]):
        raise InvalidInput(f"artifact path {raw!r} has an empty, '.' or '..' segment")
    return name, version, inner


def _base_url(request: Request) -> str:
    """Where the client reached this API: what the host says, else the Host header it sent."""
    if request.base_url:
        return request.base_url.rstrip("/")
    host = request.headers.get("host")
    if not host or any(c.isspace() or c in "/\\@" for c in host):
        raise InvalidInput("the request has no usable Host header to build a download URI from")
    scheme = request.headers.get("x-forwarded-proto", "http").split(",")[0].strip().lower()
    return f"{'https' if scheme == 'https' else 'http'}://{host}"


# A filter is clauses joined by AND, each `<field> = <quoted value>` (MLflow's search syntax).
_CLAUSE = re.compile(
    r"""\s*(?P<field>[A-Za-z_][\w.]*(?:\.`[^`]+`|\."[^"]+")?)\s*(?P<op>=|!=|LIKE|ILIKE|<|>|<=|>=|IN)\s*"""
    r"""(?P<value>'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")\s*""",
    re.IGNORECASE,
)
_AND = re.compile(r"AND\b", re.IGNORECASE)


def _clauses(text: str | None) -> list[tuple[str, str, str]]:
    if text is None or not text.strip():
        return []
    found: list[tuple[str, str, str]] = []
    position = 0
    while True:
        clause = _CLAUSE.match(text, position)
        if clause is None:
            raise InvalidInput(f"filter {text!r} cannot be read: use clauses like name = 'x' joined by AND")
        found.append((clause["field"], clause["op"].upper(), clause["value"][1:-1].replace("\\'", "'")))
        position = clause.end()
        if position == len(text):
            return found
        joined = _AND.match(text, position)
        if joined is None:
            raise InvalidInput(f"filter {text!r} cannot be read: join clauses with AND")
        position = joined.end()


def _name_filter(text: str | None) -> tuple[str | None, str]:
    """A registered models filter: nothing, `name = 'x'`, or `name LIKE 'prefix%'`."""
    clauses = _clauses(text)
    if not clauses:
        return None, ""
    if len(clauses) == 1:
        field, op, value = clauses[0]
        if field == "name" and op == "=":
            return _model_name(value), ""
        if field == "name" and op in ("LIKE", "ILIKE") and value.endswith("%") and not set(value[:-1]) & {"%", "_"}:
            if value[:-1]:
                _model_name(value[:-1])
            return None, value[:-1]
    raise InvalidInput(f"filter {text!r} is not supported: use name = '<model>' or name LIKE '<prefix>%'")


class _VersionWhere(BaseModel):
    name: str | None = None
    run_id: str | None = None
    tags: tuple[tuple[str, str], ...] = ()


def _version_filter(text: str | None) -> _VersionWhere:
    """A model versions filter: `name = 'x'`, `run_id = 'r'` and `tags.<key> = 'v'`, joined by AND."""
    name: str | None = None
    run_id: str | None = None
    tags: list[tuple[str, str]] = []
    for field, op, value in _clauses(text):
        if op != "=":
            raise InvalidInput(f"filter {text!r}: only = is supported, not {op}")
        if field == "name":
            name = _model_name(value)
        elif field == "run_id":
            run_id = check_run_id(value)
        elif field.lower().startswith(("tags.", "tag.")):
            key = field.split(".", 1)[1].strip('`"')
            tags.append((check_tag_key(key), check_tag_value(value)))
        else:
            raise InvalidInput(f"filter {text!r}: search versions by name, run_id or tags.<key>, not {field}")
    return _VersionWhere(name=name, run_id=run_id, tags=tuple(tags))


ROUTES: dict[tuple[str, str], Handler] = {
    ("POST", "registered-models/create"): MlflowApi.create_registered_model,
    ("GET", "registered-models/get"): MlflowApi.get_registered_model,
    ("PATCH", "registered-models/update"): MlflowApi.update_registered_model,
    ("GET", "registered-models/search"): MlflowApi.search_registered_models,
    ("POST", "registered-models/get-latest-versions"): MlflowApi.get_latest_versions,
    ("GET", "registered-models/get-latest-versions"): MlflowApi.get_latest_versions,
    ("POST", "registered-models/set-tag"): MlflowApi.set_registered_model_tag,
    ("DELETE", "registered-models/delete-tag"): MlflowApi.delete_registered_model_tag,
    ("POST", "registered-models/alias"): MlflowApi.set_alias,
    ("GET", "registered-models/alias"): MlflowApi.get_by_alias,
    ("DELETE", "registered-models/alias"): MlflowApi.delete_alias,
    ("POST", "model-versions/create"): MlflowApi.create_model_version,
    ("GET", "model-versions/get"): MlflowApi.get_model_version,
    ("PATCH", "model-versions/update"): MlflowApi.update_model_version,
    ("DELETE", "model-versions/delete"): MlflowApi.delete_model_version,
    ("GET", "model-versions/search"): MlflowApi.search_model_versions,
    ("POST", "model-versions/set-tag"): MlflowApi.set_model_version_tag,
    ("DELETE", "model-versions/delete-tag"): MlflowApi.delete_model_version_tag,
    ("GET", "model-versions/get-download-uri"): MlflowApi.get_download_uri,
}

# MLflow registry endpoints modelrepo deliberately does not serve, and why.
UNSUPPORTED = {
    "registered-models/rename": "renaming is not supported: a registered model is a modelrepo experiment, "
    "whose id is fixed",
    "registered-models/delete": "deleting a registered model is not supported: delete its versions (each "
    "leaves a tombstone) instead",
    "model-versions/transition-stage": "stages are not supported: use aliases (modelrepo deployment targets) and "
    "modelrepo's approval instead",
}
