"""The OpenAPI 3.1 document of the HTTP API, generated from the routes and schemas `api.py` uses.

Everything comes from the route table (`Route`: parameters, headers, media, public or not) and
the error table (`ERRORS`): nothing here knows a route by its path.
"""

from __future__ import annotations

import functools
from typing import Any, Literal

from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from modelrepo import __version__
from modelrepo.api import ERRORS, ROUTES, UNAUTHORIZED, Param, Route

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


IF_NONE_MATCH = Param("If-None-Match", "header", {"type": "string"}, description="the ETag of a copy already held")


def _descriptions() -> dict[int, str]:
    """Each status once; where several errors share one (503: busy, or a store unusable), all of them."""
    described: dict[int, list[str]] = {UNAUTHORIZED[0]: [UNAUTHORIZED[1]]}
    for entry in ERRORS:
        seen = described.setdefault(entry.status, [])
        if entry.description not in seen:
            seen.append(entry.description)
    return {status: "; or ".join(texts) for status, texts in described.items()}


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


def _parameter(param: Param) -> dict[str, Any]:
    described: dict[str, Any] = {
        "name": param.name,
        "in": param.where,
        "required": param.required,
        "schema": dict(param.schema),
    }
    if param.description:
        described["description"] = param.description
    return described


def _operation(route: Route, refs: Refs, descriptions: dict[int, str]) -> dict[str, Any]:
    responses: dict[str, Any] = {}
    if route.answer is not None:
        schema = refs[(route.answer, "serialization")]
    elif route.media == "application/json":
        schema = {"type": "object"}
    else:
        schema = {"type": "string", "contentMediaType": route.media}
    media = (route.media, *route.more_media)
    responses[str(route.status)] = {
        "description": route.summary,
        "content": {
            m: {"schema": schema if m == route.media else {"type": "string", "contentMediaType": m}} for m in media
        },
    }
    parameters = [_parameter(p) for p in (*route.path_params, *route.params)]
    if route.revalidates:
        responses[str(route.status)]["headers"] = {"ETag": {"schema": {"type": "string"}}}
        responses["304"] = {"description": "Not modified: the ETag sent in If-None-Match is still current"}
        parameters.append(_parameter(IF_NONE_MATCH))
    if route.redirects:
        responses["307"] = {"description": "Redirect to a time-limited download link (cloud hosts)"}
    problem = {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}
    for status in route.statuses:
        responses[str(status)] = {"description": descriptions[status], "content": problem}
    operation: dict[str, Any] = {
        "operationId": route.operation_id,
        "summary": route.summary,
        "parameters": parameters,
        "responses": responses,
    }
    if route.body is not None:
        operation["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": refs[(route.body, "validation")]}},
        }
    if route.public:
        operation["security"] = []
    return operation


@functools.cache
def openapi_document() -> dict[str, Any]:
    refs, definitions = _schemas()
    descriptions = _descriptions()
    paths: dict[str, dict[str, Any]] = {}
    for route in ROUTES:
        method: Literal["get", "post", "put", "delete", "patch"] = route.method.lower()  # type: ignore[assignment]
        paths.setdefault(route.template, {})[method] = _operation(route, refs, descriptions)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "modelrepo",
            "version": __version__,
            "description": (
                "A versioned model repository. Every host serves this API; how it authenticates depends on "
                "the host: local `modelrepo serve` wants `Authorization: Bearer <MODELREPO_API_KEY>` when a key "
                "is set, Azure Functions a function key, AWS API Gateway IAM (SigV4). Every change is also a "
                "CloudEvent (schema `CloudEvent`), replayable from `/api/experiments/{experimentId}/events`."
            ),
        },
        "paths": paths,
        "components": {
            "schemas": {**definitions, "Problem": PROBLEM_SCHEMA},
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{}, {"bearer": []}],
    }
