"""The lifecycle through `modelrepo serve` over HTTP: the approval gate, @production, and the
experiments listing and search that its index worker keeps."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from tests.fixtures.lifecycle import walk
from tests.local.conftest import Served, wait_for


def send(served: Served) -> Any:
    def call(method: str, path: str, body: Any, query: dict[str, str] | None) -> tuple[int, dict[str, str], Any]:
        answer = served.request(method, path + (f"?{urlencode(query)}" if query else ""), body)
        parsed = answer.json() if "json" in answer.headers.get("Content-Type", "") else answer.body
        return answer.status, answer.headers, parsed

    return call


def test_the_gate_at_production_listing_and_search(served: Served) -> None:
    served.drop("exp1/run1/model.bin", b"weights")
    [artifact] = wait_for(lambda: served.request("GET", "/api/runs/run1/artifacts").json()["items"], timeout=30)
    body = {"experimentId": "exp1", "runArtifactId": artifact["runArtifactId"], "registeredBy": "alice"}
    for _ in range(3):
        assert served.request("POST", "/api/register", body).status == 201
    walk(send(served))

    def listed() -> Any:
        items = served.request("GET", "/api/experiments").json()["items"]
        return items if items and items[0].get("latestVersion") == 2 else None

    [experiment] = wait_for(listed, timeout=30)
    assert (experiment["experimentId"], experiment["versionCount"]) == ("exp1", 2)
    rejected = wait_for(
        lambda: served.request("GET", "/api/search/models?status=rejected").json()["items"] or None, timeout=30
    )
    assert [(m["experimentId"], m["version"]) for m in rejected] == [("exp1", 2)]
