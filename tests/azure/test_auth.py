"""Auth on Azure: function keys on every route but health and the OpenAPI document, nothing written
without one, read-only download links that expire, and the OpenAPI document served anonymously.

The key check itself is the Functions host's (it runs before any function code); what can be shown
here is that every function is registered with the right auth level, that every API route lands
on such a function, and, with the simulated host refusing keyless requests as the real host does,
that a refused request changes nothing in Azurite.
"""

from __future__ import annotations

import json
import re
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from functions_azure.bootstrap import runtime
from modelrepo.adapters import azure as azure_adapter
from modelrepo.api import (
    ROUTES,
    ApprovalBody,
    ByBody,
    DeployBody,
    DescribeBody,
    PatchVersionBody,
    RegisterBody,
    RollbackBody,
    TagBody,
    TargetPolicyBody,
)
from modelrepo.openapi import openapi_document
from tests.azure.conftest import AzureApp
from tests.azure.host import FUNCTIONS, blob_created, http, http_functions, route_of

ANONYMOUS = {"health", "openapi", "ui"}
MUTATING = [route for route in ROUTES if route.method in ("POST", "PUT", "DELETE", "PATCH")]


def body_of(response: Any) -> Any:
    return json.loads(response.get_body())


def test_every_http_function_but_health_openapi_and_the_page_needs_a_function_key() -> None:
    levels = {name: binding["authLevel"] for name, binding in http_functions().items()}
    assert levels == {"api": "FUNCTION", "health": "ANONYMOUS", "openapi": "ANONYMOUS", "ui": "ANONYMOUS"}
    assert set(FUNCTIONS) - set(levels) == {"record_upload", "reconcile", "deliver_events", "sweep_events"}  # not HTTP
    # Every route of the API lands on a keyed function, except the public ones (health, the
    # document, the web page's files); the OpenAPI document says the same (`security: []` there).
    for route in ROUTES:
        if not route.template.startswith("/api/"):
            continue  # the host serves only /api/... (routePrefix); `/` is modelrepo serve's page
        path = re.sub(r"\{\w+\}", "app.js" if "{asset}" in route.template else "x1", route.template)
        function = route_of(route.method, path)
        assert (function in ANONYMOUS) == route.public, route
        operation = openapi_document()["paths"][route.template][route.method.lower()]
        assert (operation.get("security") == []) == (function in ANONYMOUS), route


@pytest.fixture
def registered(azure_app: AzureApp) -> dict[str, str]:
    """An artifact registered as version 1 and deployed to 'prod': every mutating route has a target."""
    key = "exp1/run1/model.bin"
    azure_app.upload(key, b"weights")
    azure_app.host.deliver(blob_created(azure_app.service, azure_app.uploads, key))
    [artifact] = body_of(http("GET", "/api/runs/run1/artifacts"))["items"]
    body = {"experimentId": "exp1", "runArtifactId": artifact["runArtifactId"], "registeredBy": "ci"}
    assert http("POST", "/api/register", body=body).status_code == 201
    deploy = {"version": 1, "target": "prod", "deployedBy": "ci"}
    assert http("POST", "/api/experiments/exp1/deployments", body=deploy).status_code == 201
    return {"runArtifactId": artifact["runArtifactId"]}


def valid_request(route: Any, registered: dict[str, str]) -> tuple[str, dict[str, Any] | None, dict[str, str]]:
    """A request for `route` that would succeed with a key."""
    values = {"experimentId": "exp1", "version": "1", "target": "prod", "key": "stage", **registered}
    path = re.sub(r"\{(\w+)\}", lambda m: values[m.group(1)], route.template)
    bodies: dict[Any, dict[str, Any]] = {
        RegisterBody: {"experimentId": "exp1", "runArtifactId": registered["runArtifactId"], "registeredBy": "x"},
        DeployBody: {"version": 1, "target": "prod", "deployedBy": "x"},
        RollbackBody: {"deployedBy": "x"},
        TagBody: {"value": "yes", "by": "x"},
        ApprovalBody: {"status": "approved", "by": "x"},
        ByBody: {"by": "x"},
        TargetPolicyBody: {"requireApproval": False, "by": "x"},
        DescribeBody: {"description": "d", "by": "x"},
        PatchVersionBody: {"description": "d", "by": "x"},
    }
    params = {"by": "x"} if any(p.name == "by" for p in route.params) else {}
    return path, bodies.get(route.body) if route.body else None, params


@pytest.mark.parametrize("key", [None, "a-wrong-key"], ids=["no key", "wrong key"])
def test_mutating_requests_without_a_valid_key_are_refused_and_write_nothing(
    azure_app: AzureApp, registered: dict[str, str], key: str | None
) -> None:
    before = (azure_app.rows(), azure_app.blobs(azure_app.registry), azure_app.blobs(azure_app.uploads))
    for route in MUTATING:
        path, body, params = valid_request(route, registered)
        response = http(route.method, path, body=body, params=params, key=key)
        assert (response.status_code, response.get_body()) == (401, b""), route.template
        assert http("GET", path, params={"code": key} if key else None, key=None).status_code == 401
    assert (azure_app.rows(), azure_app.blobs(azure_app.registry), azure_app.blobs(azure_app.uploads)) == before
    # The same requests with the key do write: the refusal, not the request, kept the state unchanged.
    answers = {}
    for route in sorted(MUTATING, key=lambda r: r.method == "DELETE"):  # take things away last
        path, body, params = valid_request(route, registered)
        answers[route.template] = http(route.method, path, body=body, params=params).status_code
    # Each reached the API, which decided on its own terms (409: version 1 is what 'prod' runs, so it
    # may not be archived or deleted).
    refused = {template: status for template, status in answers.items() if status not in (200, 201, 409)}
    assert not refused, refused
    assert azure_app.rows() != before[0]


def test_a_key_in_the_query_is_the_hosts_and_never_reaches_the_api(azure_app: AzureApp) -> None:
    from tests.azure.host import FUNCTION_KEY

    response = http("GET", "/api/rejections", params={"code": FUNCTION_KEY, "limit": "5"}, key=None)
    assert response.status_code == 200 and body_of(response)["items"] == []


def test_the_openapi_document_is_served_anonymously_and_is_the_cores(azure_app: AzureApp) -> None:
    response = http("GET", "/api/openapi.json", key=None)
    assert response.status_code == 200 and response.mimetype == "application/json"
    document = body_of(response)
    assert document == json.loads(json.dumps(openapi_document()))
    assert document["openapi"].startswith("3.1") and "/api/register" in document["paths"]
    assert http("GET", "/api/health", key=None).status_code == 200
    assert http("GET", "/api/rejections", key=None).status_code == 401


def test_the_web_page_is_served_anonymously_and_what_it_shows_needs_the_key(azure_app: AzureApp) -> None:
    page = http("GET", "/api/ui/", key=None)
    assert page.status_code == 200 and page.mimetype.startswith("text/html")
    assert page.headers["Content-Security-Policy"].startswith("default-src 'self'")
    assert b'src="./app.js"' in page.get_body()
    script = http("GET", "/api/ui/app.js", key=None)
    assert script.status_code == 200 and script.mimetype.startswith("text/javascript")
    assert http("GET", "/api/ui/..%2Frejections", key=None).status_code == 404
    # The page's calls carry the key as x-functions-key (with a Bearer header the host ignores).
    assert http("GET", "/api/dead-letters", key=None).status_code == 401
    answer = http("GET", "/api/dead-letters", headers={"Authorization": "Bearer anything"})
    assert answer.status_code == 200 and body_of(answer) == {"items": []}


class _HourBehind(datetime):
    """`datetime` for the Azure adapter, with a clock an hour behind: it signs links already expired."""

    @classmethod
    def now(cls, tz: tzinfo | None = None) -> _HourBehind:
        return cls.fromtimestamp(time.time() - 3600, tz)


def sas_of(link: str) -> dict[str, Any]:
    """A SAS link's parameters; its start and expiry (`st`, `se`) as datetimes."""
    sas: dict[str, Any] = {name: values[0] for name, values in parse_qs(urlsplit(link).query).items()}
    for name in ("st", "se"):
        if name in sas:
            sas[name] = datetime.fromisoformat(sas[name].replace("Z", "+00:00"))
    return sas


def test_download_links_are_read_only_and_expire_within_15_minutes(
    azure_app: AzureApp, registered: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    asked = datetime.now(UTC).replace(microsecond=0)  # `se` counts whole seconds
    response = http("GET", "/api/experiments/exp1/models/1/download")
    answered = datetime.now(UTC)
    assert response.status_code == 307
    link = response.headers["Location"]
    sas = sas_of(link)
    # The expiry the link itself states: 15 minutes from the moment it was signed.
    assert asked <= sas["se"] - timedelta(minutes=15) <= answered
    assert (sas["sp"], sas["sr"]) == ("r", "b")  # read, one blob
    with urllib.request.urlopen(link) as download:
        assert download.read() == b"weights"
    # The same signature cannot write: Azurite refuses it.
    overwrite = urllib.request.Request(link, data=b"evil", method="PUT", headers={"x-ms-blob-type": "BlockBlob"})
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(overwrite)
    assert refused.value.code == 403
    # Without the signature the registry is private.
    with pytest.raises(urllib.error.HTTPError) as private:
        urllib.request.urlopen(link.split("?")[0])
    assert private.value.code in (403, 404)

    # A link past its expiry is refused. Signed by a clock an hour behind instead of waited out: it
    # states an expiry an hour ago (no sleep has to outlast it).
    with monkeypatch.context() as clock:
        clock.setattr(azure_adapter, "datetime", _HourBehind)
        _, stale = runtime().repository.download_link("exp1", 1, expires_seconds=1)
    assert stale is not None
    assert sas_of(stale)["se"] < datetime.now(UTC) - timedelta(minutes=59)
    with pytest.raises(urllib.error.HTTPError) as expired:
        urllib.request.urlopen(stale)
    assert expired.value.code == 403
