"""Each host's credentials go out in the header its README documents, and no credential (nor a
signed link's signature) reaches a log record, a repr or an error message."""

from __future__ import annotations

import base64
import hashlib
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from botocore.credentials import Credentials
from pydantic import SecretStr

from modelrepo.client import ApiError, Client
from modelrepo.client import azure as client_azure
from modelrepo.client.auth import BearerAuth, EntraAuth, FunctionKeyAuth, default_scope
from modelrepo.client.aws import SigV4Auth
from modelrepo.client.config import Profile, auth, connect
from tests.client.loopback import Answer, Loopback, Wire, loopback

BEARER = "bearer-key-0f3a9c"
FUNCTION_KEY = "function-key-7d21be"
TOKEN_1, TOKEN_2 = "entra-token-one-5b8e", "entra-token-two-c4d9"
AWS_SECRET, AWS_TOKEN = "aws-secret-key-91e0aa", "aws-session-token-2c77f1"
LINK_SIGNATURE = "link-signature-e6b3d2"
SECRETS = (BEARER, FUNCTION_KEY, TOKEN_1, TOKEN_2, AWS_SECRET, AWS_TOKEN, LINK_SIGNATURE)


@dataclass
class Token:
    token: str
    expires_on: int


class FakeCredential:
    """What an azure-identity credential offers: `get_token(*scopes)`; hands out tokens in turn."""

    def __init__(self, *tokens: Token) -> None:
        self.tokens = list(tokens)
        self.scopes: list[tuple[str, ...]] = []

    def get_token(self, *scopes: str, **kwargs: Any) -> Token:
        self.scopes.append(scopes)
        return self.tokens.pop(0)


@pytest.fixture
def recorder() -> Iterator[Loopback]:
    with loopback(lambda wire: Answer(200, {"Content-Type": "application/json"}, b'{"items": []}')) as server:
        yield server


def test_bearer_and_function_key_headers(recorder: Loopback) -> None:
    with Client.over_http(recorder.url, BearerAuth(BEARER)) as client:
        client.run_artifacts("run1")
    with Client.over_http(recorder.url + "/api", FunctionKeyAuth(FUNCTION_KEY)) as client:
        client.run_artifacts("run1")
    bearer, keyed = recorder.requests
    assert bearer.headers["authorization"] == f"Bearer {BEARER}" and "x-functions-key" not in bearer.headers
    assert keyed.headers["x-functions-key"] == FUNCTION_KEY and "authorization" not in keyed.headers
    assert keyed.target == "/api/runs/run1/artifacts"  # the key never travels as ?code=


def test_an_entra_token_for_the_app_s_scope_is_sent_and_renewed_before_it_expires(recorder: Loopback) -> None:
    now = [1_000_000.0]
    credential = FakeCredential(Token(TOKEN_1, 1_003_600), Token(TOKEN_2, 1_007_200))
    entra = EntraAuth(credential, default_scope("8f1e2d3c-app"), clock=lambda: now[0])
    with Client.over_http(recorder.url, entra) as client:
        client.run_artifacts("run1")
        client.run_artifacts("run1")  # the same token: still valid for an hour
        now[0] = 1_003_600 - 299  # within five minutes of its expiry: a new one
        client.run_artifacts("run1")
    sent = [w.headers["authorization"] for w in recorder.requests]
    assert sent == [f"Bearer {TOKEN_1}", f"Bearer {TOKEN_1}", f"Bearer {TOKEN_2}"]
    assert credential.scopes == [("api://8f1e2d3c-app/.default",)] * 2


def test_profiles_build_each_kind_of_auth(recorder: Loopback, monkeypatch: pytest.MonkeyPatch) -> None:
    credential = FakeCredential(Token(TOKEN_1, 2**40), Token(TOKEN_1, 2**40))
    monkeypatch.setattr(client_azure, "credential", lambda: credential)
    profiles = [
        Profile(url=recorder.url, auth="bearer", api_key=SecretStr(BEARER)),
        Profile(url=recorder.url, auth="function-key", function_key=SecretStr(FUNCTION_KEY)),
        Profile(url=recorder.url, auth="entra", app_id="app-1", function_key=SecretStr(FUNCTION_KEY)),
        Profile(url=recorder.url, auth="entra", scope="https://example.org/modelrepo/.default"),
        Profile(url=recorder.url),
    ]
    for profile in profiles:
        with connect(profile) as client:
            client.run_artifacts("run1")
    headers = [(w.headers.get("authorization"), w.headers.get("x-functions-key")) for w in recorder.requests]
    assert headers == [
        (f"Bearer {BEARER}", None),
        (None, FUNCTION_KEY),
        (f"Bearer {TOKEN_1}", FUNCTION_KEY),
        (f"Bearer {TOKEN_1}", None),
        (None, None),
    ]
    assert credential.scopes == [("api://app-1/.default",), ("https://example.org/modelrepo/.default",)]


def refusing_api(storage: Loopback) -> Any:
    """401 to everything but a download, which redirects to a signed link on `storage`."""
    digest = base64.b64encode(hashlib.sha256(b"weights").digest()).decode()

    def answer(wire: Wire) -> Answer:
        if wire.path.endswith("/download"):
            link = f"{storage.url}/registry/x?X-Amz-Signature={LINK_SIGNATURE}&sig={LINK_SIGNATURE}"
            return Answer(307, {"Location": link, "Repr-Digest": f"sha-256=:{digest}:"})
        problem = {"status": 401, "detail": "missing or wrong credentials"}
        return Answer(401, {"Content-Type": "application/problem+json"}, json.dumps(problem).encode())

    return answer


def test_no_credential_reaches_logs_reprs_or_error_messages(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    caplog.set_level(logging.DEBUG)
    credential = FakeCredential(Token(TOKEN_1, 2**40))
    monkeypatch.setattr(client_azure, "credential", lambda: credential)
    auths = [
        BearerAuth(BEARER),
        FunctionKeyAuth(FUNCTION_KEY),
        EntraAuth(FakeCredential(Token(TOKEN_2, 2**40)), "api://app/.default"),
        SigV4Auth(Credentials("AKIDLOGTEST", AWS_SECRET, AWS_TOKEN), "eu-west-1"),
    ]
    profiles = [
        Profile(url="http://127.0.0.1:1", auth="bearer", api_key=SecretStr(BEARER)),
        Profile(url="http://127.0.0.1:1", auth="entra", app_id="app", function_key=SecretStr(FUNCTION_KEY)),
    ]
    shown: list[str] = [repr(p) + str(p) + json.dumps(p.shown()) + repr(auth(p)) for p in profiles]
    with loopback(lambda wire: Answer(200, {}, b"weights")) as storage, loopback(refusing_api(storage)) as api:
        for each in auths:
            with Client.over_http(api.url + "/api", each) as client:
                with pytest.raises(ApiError) as refused:
                    client.run_artifacts("run1")
                with client.download("exp1", 1) as download:
                    assert download.read() == b"weights"
                shown += [repr(client), repr(each), str(refused.value), refused.value.detail]
    assert len(api.requests) == 8 and len(storage.requests) == 4
    assert any(w.headers.get("x-amz-security-token") == AWS_TOKEN for w in api.requests)  # it was sent
    loggers = {record.name for record in caplog.records}
    assert {"httpx", "httpcore.http11", "botocore.auth"} <= loggers  # the records searched below
    for secret in SECRETS:
        assert secret not in caplog.text, secret
        assert not any(secret in text for text in shown), secret
