"""SigV4: the client's signatures, checked over the wire by a verifier that shares no code with
botocore and that first reproduces AWS's published test vectors."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from botocore.credentials import Credentials

from modelrepo.client import Client, NotAuthorized
from modelrepo.client.aws import SigV4Auth, region_from_url
from modelrepo.model import Deployment, RegisteredModel
from tests.client import sigv4
from tests.client.loopback import Answer, Loopback, Wire, loopback

SUITE_KEY, SUITE_SECRET = "AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
S3_KEY, S3_SECRET = "AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
EMPTY = hashlib.sha256(b"").hexdigest()

# (name, secret, service, method, path, query, extra headers, body, date, signed headers, signature):
# AWS's SigV4 test suite (service "service") and the S3 API reference's worked examples.
VECTORS = [
    ("get-vanilla", SUITE_SECRET, "service", "GET", "/", "", {}, b"", "20150830T123600Z",
     "host;x-amz-date", "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"),
    ("get-vanilla-query-order-key-case", SUITE_SECRET, "service", "GET", "/", "Param2=value2&Param1=value1", {},
     b"", "20150830T123600Z", "host;x-amz-date",
     "b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500"),
    ("post-vanilla", SUITE_SECRET, "service", "POST", "/", "", {}, b"", "20150830T123600Z",
     "host;x-amz-date", "5da7c1a2acd57cee7505fc6676e4e544621c30862966e37dddb68e92efbe5d6b"),
    ("s3-get-object", S3_SECRET, "s3", "GET", "/test.txt", "", {"range": "bytes=0-9", "x-amz-content-sha256": EMPTY},
     b"", "20130524T000000Z", "host;range;x-amz-content-sha256;x-amz-date",
     "f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"),
    ("s3-put-object", S3_SECRET, "s3", "PUT", "/test%24file.text", "",
     {"date": "Fri, 24 May 2013 00:00:00 GMT", "x-amz-storage-class": "REDUCED_REDUNDANCY",
      "x-amz-content-sha256": hashlib.sha256(b"Welcome to Amazon S3.").hexdigest()},
     b"Welcome to Amazon S3.", "20130524T000000Z", "date;host;x-amz-content-sha256;x-amz-date;x-amz-storage-class",
     "98ad721746da40c64f1a55b78f14c238d841ea1380cd77a1b5971af0ece108bd"),
    ("s3-get-lifecycle", S3_SECRET, "s3", "GET", "/", "lifecycle", {"x-amz-content-sha256": EMPTY}, b"",
     "20130524T000000Z", "host;x-amz-content-sha256;x-amz-date",
     "fea454ca298b7da1c68078a5d1bdbfbbe0d65c699e0f91ac7a200a0136783543"),
    ("s3-list-objects", S3_SECRET, "s3", "GET", "/", "max-keys=2&prefix=J", {"x-amz-content-sha256": EMPTY}, b"",
     "20130524T000000Z", "host;x-amz-content-sha256;x-amz-date",
     "34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7"),
]  # fmt: skip


@pytest.mark.parametrize("vector", VECTORS, ids=[v[0] for v in VECTORS])
def test_the_verifier_reproduces_the_published_sigv4_test_vectors(vector: tuple[Any, ...]) -> None:
    _, secret, service, method, path, query, extra, body, date, signed, expected = vector
    key = SUITE_KEY if secret == SUITE_SECRET else S3_KEY
    host = "example.amazonaws.com" if service == "service" else "examplebucket.s3.amazonaws.com"
    headers = {"host": host, "x-amz-date": date, **extra}
    request = sigv4.canonical_request(
        method, path, query, headers, signed.split(";"), body, double_encode=service != "s3"
    )
    assert sigv4.signature(secret, date, "us-east-1", service, request) == expected
    authorization = (
        f"AWS4-HMAC-SHA256 Credential={key}/{date[:8]}/us-east-1/{service}/aws4_request, "
        f"SignedHeaders={signed}, Signature={expected}"
    )
    verdict = sigv4.verify(
        method, path, query, {**headers, "authorization": authorization}, body,
        credentials={key: secret}, double_encode=service != "s3",
    )  # fmt: skip
    assert verdict.ok, verdict.reason
    tampered = sigv4.verify(
        method, path, query, {**headers, "authorization": authorization}, body + b"!",
        credentials={key: secret}, double_encode=service != "s3",
    )  # fmt: skip
    assert not tampered.ok


ACCESS_KEY, SECRET_KEY, TOKEN = "AKIDCLIENTTEST", "client-test-secret-key", "client-test-session-token"
AT = datetime(2026, 1, 1, tzinfo=UTC)
MODEL = RegisteredModel(
    experiment_id="exp1", version=3, run_artifact_id="run1~abcdefghijklmnopqrstuvwxyz", run_id="run1",
    artifact_name="model.bin", registered_by="alice", registered_at=AT, sha256="0" * 64, size=1,
)  # fmt: skip
DEPLOYMENT = Deployment(experiment_id="exp1", target="production", version=3, deployed_by="carol", deployed_at=AT)


@pytest.fixture
def gateway() -> Iterator[Loopback]:
    """Answers like API Gateway with IAM auth: 403 unless the signature verifies, else echoes it."""

    def answer(wire: Wire) -> Answer:
        verdict = sigv4.verify(
            wire.method, wire.path, wire.query, wire.headers, wire.body,
            credentials={ACCESS_KEY: SECRET_KEY}, token=TOKEN,
        )  # fmt: skip
        if not verdict.ok:
            return Answer(403, {"Content-Type": "application/json"}, json.dumps({"message": verdict.reason}).encode())
        document: dict[str, Any] = {"items": []}
        if wire.method == "POST" and wire.path.endswith("/deployments"):
            document = DEPLOYMENT.to_json()
        elif wire.method != "GET":
            document = MODEL.to_json()
        return Answer(200, {"Content-Type": "application/json"}, json.dumps(document).encode())

    with loopback(answer) as server:
        yield server


def signing_client(url: str, secret: str = SECRET_KEY) -> Client:
    return Client.over_http(url, SigV4Auth(Credentials(ACCESS_KEY, secret, TOKEN), "eu-west-1"))


def test_every_kind_of_request_the_client_signs_verifies_on_the_wire(gateway: Loopback) -> None:
    with signing_client(gateway.url + "/prod/api") as client:
        client.run_artifacts("run.1_x-y")
        list(client.models("exp1", page_size=7))
        client.register("exp1", "run1~abcdefghijklmnopqrstuvwxyz", "Zoë O'Brien", description="naïve — 1/2 + ~")
        client.set_tag("exp1", 3, "stage:env", "gold & silver", "ci bot")
        client.delete_tag("exp1", 3, "stage:env", "a b+c%/d?e=f")
        client.deploy("exp1", 3, "production", "carol")
        client.deployments("exp1")
    requests = gateway.requests
    assert len(requests) == 7
    assert all(r.target.startswith("/prod/api/") for r in requests)
    assert {r.headers["authorization"].split("/")[3] for r in requests} == {"execute-api"}
    statuses = [
        sigv4.verify(r.method, r.path, r.query, r.headers, r.body, credentials={ACCESS_KEY: SECRET_KEY}, token=TOKEN).ok
        for r in requests
    ]
    assert statuses == [True] * 7
    register = next(r for r in requests if r.method == "POST" and r.path.endswith("/register"))
    assert "idempotency-key" in register.headers["authorization"]  # signed, so it cannot be swapped
    assert json.loads(register.body)["registeredBy"] == "Zoë O'Brien"
    untag = next(r for r in requests if r.method == "DELETE")
    assert untag.path == "/prod/api/experiments/exp1/models/3/tags/stage%3Aenv"
    assert untag.params == {"by": "a b+c%/d?e=f"}


def test_a_wrong_secret_or_a_changed_body_does_not_verify(gateway: Loopback) -> None:
    with (
        signing_client(gateway.url + "/prod/api", secret="not-the-secret") as client,
        pytest.raises(NotAuthorized, match="signature mismatch") as refused,
    ):
        client.run_artifacts("run1")
    assert refused.value.status == 403
    with signing_client(gateway.url + "/prod/api") as client:
        client.register("exp1", "run1~abcdefghijklmnopqrstuvwxyz", "alice")
    sent = gateway.requests[-1]
    changed = sent.body.replace(b"alice", b"mallory")
    verdict = sigv4.verify(
        sent.method, sent.path, sent.query, sent.headers, changed, credentials={ACCESS_KEY: SECRET_KEY}, token=TOKEN
    )
    assert (verdict.ok, verdict.reason) == (False, "signature mismatch")


def test_the_region_comes_from_an_execute_api_url_else_from_the_profile(aws_environment: dict[str, str]) -> None:
    assert region_from_url("https://abc123.execute-api.eu-west-1.amazonaws.com/prod/api") == "eu-west-1"
    assert region_from_url("https://abc123.execute-api.cn-north-1.amazonaws.com.cn/prod/api") == "cn-north-1"
    assert region_from_url("http://127.0.0.1:7071/api") is None
    auth = SigV4Auth.for_url("https://abc123.execute-api.ap-south-2.amazonaws.com/prod/api", region="us-east-1")
    assert auth.region == "ap-south-2"
    assert SigV4Auth.for_url("http://127.0.0.1:9/prod/api", region="sa-east-1").region == "sa-east-1"
