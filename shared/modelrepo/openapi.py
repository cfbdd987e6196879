"""The OpenAPI 3.1 document of the HTTP API, generated from the routes and schemas `api.py` uses."""

from __future__ import annotations

import functools
import re
from typing import Any, Literal

from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from modelrepo import __version__
from modelrepo.api import ROUTES, Route
from modelrepo.model import ID_PATTERN, MAX_ACTOR_CHARS, RUN_ARTIFACT_ID_PATTERN, TAG_KEY_PATTERN, TARGET_PATTERN
from modelrepo.service import MAX_PAGE

PROBLEM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["type", "title", "status", "detail"],
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string", "description": "What is wrong, naming the field or thing"},
    },
}

PATH_PARAMETERS: dict[str, dict[str, Any]] = {
    "experimentId": {"type": "string", "pattern": f"^{ID_PATTERN.pattern}$"},
    "runId": {"type": "string", "pattern": f"^{ID_PATTERN.pattern}$"},
    "runArtifactId": {"type": "string", "pattern": f"^{RUN_ARTIFACT_ID_PATTERN.pattern}$"},
    "version": {"type": "string", "pattern": "^[1-9][0-9]{0,9}$"},
    "target": {"type": "string", "pattern": f"^{TARGET_PATTERN.pattern}$"},
    "key": {"type": "string", "pattern": f"^{TAG_KEY_PATTERN.pattern}$"},
}

QUERY_PARAMETERS: dict[str, dict[str, Any]] = {
    "limit": {"schema": {"type": "integer", "minimum": 1, "maximum": MAX_PAGE}, "required": False},
    "cursor": {
        "schema": {"type": "string", "pattern": "^[A-Za-z0-9_-]*$"},
        "required": False,
        "description": "nextCursor of the previous page",
    },
    "by": {"schema": {"type": "string", "minLength": 1, "maxLength": MAX_ACTOR_CHARS}, "required": True},
}

ERRORS = {
    400: "Bad input: the detail names the field or value",
    401: "Missing or wrong credentials",
    404: "No such thing (or route)",
    409: "Conflicts with the current state",
    413: "Body too large",
    415: "Body is not application/json",
    422: "Refers to things that cannot be combined",
    503: "Busy beyond the retry deadline, or a store is unusable (the detail names it); see Retry-After",
    507: "A store is out of space (the detail names it); nothing was written",
}


Refs = dict[tuple[Any, JsonSchemaMode], Any]


def _schemas() -> tuple[Refs, dict[str, Any]]:
    wanted: list[tuple[type[BaseModel], JsonSchemaMode]] = []
    for route in ROUTES:
        if route.body is not None:
            wanted.append((route.body, "validation"))
        if route.answer is not None:
            wanted.append((route.answer, "serialization"))
    refs, document = models_json_schema(list(dict.fromkeys(wanted)), ref_template="#/components/schemas/{model}")
    return dict(refs), dict(document.get("$defs", {}))


def _operation(route: Route, refs: Refs) -> dict[str, Any]:
    parameters: list[dict[str, Any]] = [
        {"name": name, "in": "path", "required": True, "schema": PATH_PARAMETERS[name]}
        for name in re.findall(r"\{(\w+)\}", route.template)
    ]
    parameters += [{"name": name, "in": "query", **QUERY_PARAMETERS[name]} for name in route.query]
    responses: dict[str, Any] = {}
    if route.answer is not None:
        responses[str(route.status)] = {
            "description": route.summary,
            "content": {"application/json": {"schema": refs[(route.answer, "serialization")]}},
        }
    elif route.template.endswith("/download"):
        responses["200"] = {
            "description": "The bytes, streamed",
            "content": {
                "application/octet-stream": {
                    "schema": {"type": "string", "contentMediaType": "application/octet-stream"}
                }
            },
        }
        responses["307"] = {"description": "Redirect to a time-limited download link (cloud hosts)"}
    else:
        responses["200"] = {
            "description": route.summary,
            "content": {"application/json": {"schema": {"type": "object"}}},
        }
    problem = {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}
    for status, description in ERRORS.items():
        if status in (409, 413, 415, 422) and route.body is None and route.method != "DELETE":
            continue
        responses[str(status)] = {"description": description, "content": problem}
    operation: dict[str, Any] = {
        "operationId": route.handler.__name__,
        "summary": route.summary,
        "parameters": parameters,
        "responses": responses,
    }
    if route.body is not None:
        operation["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": refs[(route.body, "validation")]}},
        }
    if route.template == "/api/register":
        operation["parameters"].append(
            {
                "name": "Idempotency-Key",
                "in": "header",
                "required": False,
                "schema": {"type": "string", "minLength": 1, "maxLength": 255},
            }
        )
    if route.template in ("/api/health", "/api/openapi.json"):
        operation["security"] = []
    return operation


@functools.cache
def openapi_document() -> dict[str, Any]:
    refs, definitions = _schemas()
    paths: dict[str, dict[str, Any]] = {}
    for route in ROUTES:
        method: Literal["get", "post", "put", "delete"] = route.method.lower()  # type: ignore[assignment]
        paths.setdefault(route.template, {})[method] = _operation(route, refs)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "modelrepo",
            "version": __version__,
            "description": (
                "A versioned model repository. Every host serves this API; how it authenticates depends on "
                "the host: local `modelrepo serve` wants `Authorization: Bearer <MODELREPO_API_KEY>` when a key "
                "is set, Azure Functions a function key, AWS API Gateway IAM (SigV4)."
            ),
        },
        "paths": paths,
        "components": {
            "schemas": {**definitions, "Problem": PROBLEM_SCHEMA},
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{}, {"bearer": []}],
    }
