"""The MLflow request-auth plugins (modelrepo.mlflow_auth) with `requests`, as MLflow uses them: what
the API's origin receives, that a redirect to storage carries none of it, and their entry points."""

from __future__ import annotations

import tomllib
from collections.abc import Iterator
from importlib import import_module
from pathlib import Path

import pytest
import requests
from botocore.credentials import Credentials

from modelrepo.mlflow_auth import FunctionKeyProvider, SigV4Auth, SigV4Provider
from tests.client import sigv4
from tests.client.loopback import Answer, Loopback, Wire, loopback

REPO = Path(__file__).resolve().parents[2]
KEY, SECRET, TOKEN = "AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", "session-token-value"
STORED = b"bytes the storage link serves"
CREDENTIAL_HEADERS = ("authorization", "x-functions-key", "x-amz-date", "x-amz-security-token")


@pytest.fixture
def storage() -> Iterator[Loopback]:
    """Another origin, playing a presigned storage link."""
    with loopback(lambda wire: Answer(200, {"Content-Type": "application/octet-stream"}, STORED)) as server:
        yield server


def test_the_function_key_goes_to_the_api_and_never_to_the_storage_link(storage: Loopback) -> None:
    auth = FunctionKeyProvider({"MODELREPO_FUNCTION_KEY": "the-function-key"}).get_auth()
    with loopback(lambda wire: redirect_or_ok(wire, storage)) as api:
        listed = requests.get(f"{api.url}/api/2.0/mlflow-artifacts/artifacts", params={"path": "churn/1"}, auth=auth)
        fetched = requests.get(f"{api.url}/api/2.0/mlflow-artifacts/artifacts/churn/1/MLmodel", auth=auth, stream=True)
        assert (listed.status_code, fetched.status_code, fetched.content) == (200, 200, STORED)
        assert [w.headers.get("x-functions-key") for w in api.requests] == ["the-function-key"] * 2
    [link] = storage.requests
    assert not [name for name in CREDENTIAL_HEADERS if name in link.headers]
    assert "the-function-key" not in repr(auth)


def redirect_or_ok(wire: Wire, storage: Loopback) -> Answer:
    if wire.path.endswith("/artifacts/churn/1/MLmodel"):
        return Answer(307, {"Location": f"{storage.url}/registry/sha256/ab?X-Amz-Signature=x"})
    return Answer(200, {"Content-Type": "application/json"}, b"{}")


def test_sigv4_signs_what_is_sent_and_a_storage_link_gets_none_of_it(storage: Loopback) -> None:
    auth = SigV4Auth(Credentials(KEY, SECRET, TOKEN), "eu-west-1")
    with loopback(lambda wire: redirect_or_ok(wire, storage)) as api:
        base = f"{api.url}/prod/api/2.0"
        query = {"filter": "name = 'churn' AND tags.`stage` = 'a b+c/ü'", "max_results": "10"}
        requests.get(f"{base}/mlflow/model-versions/search", params=query, auth=auth)
        requests.post(f"{base}/mlflow/model-versions/create", json={"name": "churn", "source": "s3://b/k"}, auth=auth)
        requests.delete(f"{base}/mlflow/registered-models/alias", json={"name": "churn", "alias": "x"}, auth=auth)
        fetched = requests.get(f"{base}/mlflow-artifacts/artifacts/churn/1/MLmodel", auth=auth)
        assert fetched.content == STORED
        verdicts = [verified(w) for w in api.requests]
    assert [(v.ok, v.reason, v.service, v.region) for v in verdicts] == [(True, "ok", "execute-api", "eu-west-1")] * 4
    [link] = storage.requests
    assert not [name for name in CREDENTIAL_HEADERS if name in link.headers]
    # A changed body no longer verifies: the body is signed.
    post = api.requests[1]
    assert not verified(post, body=post.body + b" ").ok


def verified(wire: Wire, body: bytes | None = None) -> sigv4.Verdict:
    payload = wire.body if body is None else body
    return sigv4.verify(
        wire.method, wire.path, wire.query, wire.headers, payload, credentials={KEY: SECRET}, token=TOKEN
    )


def test_providers_are_mlflow_entry_points_and_say_what_they_miss(monkeypatch: pytest.MonkeyPatch) -> None:
    declared = tomllib.loads((REPO / "shared" / "pyproject.toml").read_text())["project"]["entry-points"]
    providers = declared["mlflow.request_auth_provider"]
    for name, target in providers.items():
        module, _, attribute = target.partition(":")
        assert getattr(import_module(module), attribute)().get_name() == name  # what MLFLOW_TRACKING_AUTH names
    assert set(providers) == {"modelrepo-sigv4", "modelrepo-function-key"}
    with pytest.raises(RuntimeError, match="MODELREPO_FUNCTION_KEY"):
        FunctionKeyProvider({}).get_auth()
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent/config")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/credentials")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    with pytest.raises(RuntimeError, match="found no AWS credentials"):
        SigV4Provider().get_auth()
