"""The OpenAPI document is served, describes what the checks enforce, and `modelrepo serve` keeps to it."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from modelrepo.errors import InvalidInput
from modelrepo.model import check_actor, check_description
from modelrepo.openapi import openapi_document
from tests.local.conftest import Served, wait_for

SCHEMAS = openapi_document()["components"]["schemas"]


def _accepts(check: object, text: str) -> bool:
    try:
        check(text)  # type: ignore[operator]
    except InvalidInput:
        return False
    return True


@settings(max_examples=500, deadline=None)
@given(text=st.text(max_size=40))
def test_documented_text_patterns_match_what_the_checks_accept(text: str) -> None:
    actor = SCHEMAS["RegisterBody"]["properties"]["registeredBy"]["pattern"]
    description = SCHEMAS["RegisterBody"]["properties"]["description"]["anyOf"][0]["pattern"]
    lone_surrogate = any(0xD800 <= ord(c) <= 0xDFFF for c in text)  # not representable in valid JSON text
    if not lone_surrogate:
        assert _matches(actor, text) == _accepts(check_actor, text), repr(text)
        assert _matches(description, text) == _accepts(check_description, text), repr(text)


def _matches(pattern: str, text: str) -> bool:
    """ECMA-262 semantics, as JSON Schema means them: `$` is the end of the text, not before a newline."""
    assert pattern.startswith("^") and pattern.endswith("$")
    return re.fullmatch(pattern[1:-1], text) is not None


def test_every_host_route_is_documented(served: Served) -> None:
    document = served.request("GET", "/api/openapi.json", authorized=False).json()
    assert document["openapi"].startswith("3.1")
    assert set(document["paths"]) == set(openapi_document()["paths"])
    register = document["paths"]["/api/register"]["post"]
    assert register["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/RegisterBody"
    }
    assert set(register["responses"]) >= {"201", "400", "404", "409", "422", "503"}


def test_schemathesis_finds_no_server_error_and_no_schema_violation(served: Served, tmp_path: Path) -> None:
    # Real data first, so the fuzzer's requests reach populated answers too.
    served.drop("exp1/run1/model.bin", b"weights")
    [artifact] = wait_for(lambda: served.request("GET", "/api/runs/run1/artifacts").json()["items"], timeout=5)
    body = {"experimentId": "exp1", "runArtifactId": artifact["runArtifactId"], "registeredBy": "alice"}
    for _ in range(2):
        assert served.request("POST", "/api/register", body).status == 201
    deploy = {"version": 1, "target": "production", "deployedBy": "carol"}
    assert served.request("POST", "/api/experiments/exp1/deployments", deploy).status == 201

    checks = ",".join(
        [
            "not_a_server_error",
            "status_code_conformance",
            "content_type_conformance",
            "response_schema_conformance",
            "response_headers_conformance",
            "unsupported_method",
            "allow_header_conformance",
        ]
    )
    result = subprocess.run(
        [
            str(Path(sys.executable).with_name("schemathesis")),
            "run",
            f"{served.url}/api/openapi.json",
            "--checks",
            checks,
            "--max-examples",
            "8",
            "--phases",
            "coverage,fuzzing,stateful",
            "--workers",
            "1",  # CPython 3.11 can fail compiling hypothesis' filters on several threads at once
            "--no-color",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
        check=False,
    )
    summary = result.stdout[-4000:]
    assert result.returncode == 0, summary
    assert re.search(r"\d+ generated, \d+ passed", summary), summary
