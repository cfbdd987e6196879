"""The client against the AWS host on moto: SigV4-signed requests through a loopback front that
plays API Gateway (it verifies every signature with the independent verifier, then turns the
request into the proxy event the API function gets), `modelrepo upload --profile` of 64 MiB into
S3 recorded by the real event path (S3 -> SQS -> the record function), and `modelrepo configure
aws` reading a CloudFormation stack's outputs."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from modelrepo.cli import main
from modelrepo.client import Client, NotAuthorized
from modelrepo.client.aws import SigV4Auth
from modelrepo.client.config import Profile, load_profile, save_profile
from tests.aws.cfn import PUBLIC_PATHS
from tests.aws.conftest import EventSourceMapping, Stack, api_event
from tests.aws.lambda_worker import FakeLambdaContext
from tests.aws.test_api_function import WEIGHTS, recorded_artifact
from tests.client import sigv4
from tests.client.loopback import Answer, Loopback, Wire, loopback
from tests.fixtures.aws import DUMMY_ENVIRONMENT, aws_client, unique_name

STAGE = "/prod"
CREDENTIALS = {DUMMY_ENVIRONMENT["AWS_ACCESS_KEY_ID"]: DUMMY_ENVIRONMENT["AWS_SECRET_ACCESS_KEY"]}
BIG = 64 * 1024 * 1024


class Gateway:
    """API Gateway (REST, IAM auth) in front of the API function, over real HTTP."""

    def __init__(self) -> None:
        self.verified: list[Wire] = []

    def __call__(self, wire: Wire) -> Answer:
        import api_function

        path = wire.path.removeprefix(STAGE)
        if path not in PUBLIC_PATHS:
            verdict = sigv4.verify(
                wire.method, wire.path, wire.query, wire.headers, wire.body,
                credentials=CREDENTIALS, token=DUMMY_ENVIRONMENT["AWS_SESSION_TOKEN"],
            )  # fmt: skip
            if not verdict.ok or verdict.service != "execute-api" or verdict.region != "us-east-1":
                message = json.dumps({"message": f"Forbidden: {verdict.reason}"}).encode()
                return Answer(403, {"Content-Type": "application/json", "x-amzn-ErrorType": "AccessDenied"}, message)
            self.verified.append(wire)
        event = api_event(
            wire.method,
            path,
            body=wire.body.decode("utf-8") if wire.body else None,
            headers=wire.headers,
            query=wire.params or None,
        )
        response = api_function.handler(event, FakeLambdaContext())
        headers = {k: v[-1] for k, v in (response.get("multiValueHeaders") or {}).items()}
        headers.update(response.get("headers") or {})
        raw = response.get("body") or ""
        body = base64.b64decode(raw) if response.get("isBase64Encoded") else raw.encode("utf-8")
        return Answer(response["statusCode"], headers, body)


def printed(out: str) -> Any:
    """The CLI's JSON (indented), after the metrics lines the functions print to stdout in-process."""
    lines = out.splitlines()
    start = max(i for i, line in enumerate(lines) if line == "{")
    return json.loads("\n".join(lines[start:]))


@pytest.fixture
def gateway(stack: Stack) -> Iterator[tuple[Loopback, Gateway]]:
    front = Gateway()
    with loopback(front) as server:
        yield server, front


def cli_beside_the_trigger(args: list[str], environ: dict[str, str], trigger: EventSourceMapping) -> int:
    """Run the CLI while Lambda's SQS trigger polls, as it would while the CLI uploads and waits."""
    outcome: dict[str, Any] = {}
    cli = threading.Thread(target=lambda: outcome.update(code=main(args, environ=environ)))
    cli.start()
    while cli.is_alive():
        trigger.poll_once()
        cli.join(timeout=0.2)
    code: int = outcome["code"]
    return code


def test_a_registration_through_the_client_reaches_the_api_function(
    stack: Stack, trigger: EventSourceMapping, gateway: tuple[Loopback, Gateway]
) -> None:
    server, front = gateway
    run_artifact_id = recorded_artifact(stack, trigger)
    url = server.url + STAGE + "/api"
    with Client.over_http(url, SigV4Auth.for_url(url, region="us-east-1")) as client:
        assert client.health() == "ok"
        first = client.register("exp1", run_artifact_id, "alice", description="through API Gateway")
        retried = [client.register("exp1", run_artifact_id, "bob", idempotency_key="ci-run-9") for _ in range(2)]
        assert (first.version, [m.version for m in retried]) == (1, [2, 2])
        assert [m.version for m in client.models("exp1", page_size=1)] == [2, 1]
        with client.download("exp1", 1) as download:
            data = download.read()
        assert (data, download.verified, download.filename) == (WEIGHTS, True, "model.onnx")
        client.deploy("exp1", 2, "production", "carol")
        assert client.current_deployment("exp1", "production").version == 2  # type: ignore[union-attr]
    signed = [w for w in server.requests if w.path.removeprefix(STAGE) not in PUBLIC_PATHS]
    assert len(signed) == 8 and front.verified == signed  # every request but health, each verified
    # The download's 307 went to a presigned S3 link on moto, fetched without our credentials.
    assert all(w.method != "GET" or not w.path.endswith("/registry") for w in server.requests)

    with Client.over_http(url) as unsigned, pytest.raises(NotAuthorized, match="Forbidden"):
        unsigned.register("exp1", run_artifact_id, "mallory")
    assert len(front.verified) == 8


def test_cli_upload_of_64_mib_into_s3_waits_until_the_event_path_recorded_it(
    stack: Stack,
    trigger: EventSourceMapping,
    gateway: tuple[Loopback, Gateway],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    function_logs: io.StringIO,  # the functions' JSON logs, kept apart from the CLI's output
) -> None:
    server, _ = gateway
    environ = {"XDG_CONFIG_HOME": str(tmp_path / "xdg"), "HOME": str(tmp_path)}
    profile = Profile(
        url=server.url + STAGE + "/api", auth="sigv4", region="us-east-1", uploads_bucket=stack.uploads_bucket
    )
    save_profile("aws", profile, environ)
    source = tmp_path / "big-model.onnx"
    data = hashlib.sha256(b"seed").digest() * (BIG // 32)
    source.write_bytes(data)

    args = ["upload", "exp1", "run-big", str(source), "--profile", "aws", "--json", "--timeout", "240"]
    code = cli_beside_the_trigger(args, environ, trigger)
    out, err = capsys.readouterr()
    assert code == 0, err
    artifact = printed(out)
    head = stack.s3.head_object(Bucket=stack.uploads_bucket, Key="exp1/run-big/big-model.onnx")
    assert head["ETag"].strip('"').endswith("-8")  # a multipart upload of 8 parts of 8 MiB
    assert artifact["etag"].strip('"') == head["ETag"].strip('"')
    assert (artifact["key"], artifact["size"]) == ("exp1/run-big/big-model.onnx", BIG)
    assert artifact["sha256"] == hashlib.sha256(data).hexdigest()


def test_cli_upload_says_when_nothing_recorded_it_in_time(
    stack: Stack,
    gateway: tuple[Loopback, Gateway],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    function_logs: io.StringIO,
) -> None:
    server, _ = gateway
    environ = {"XDG_CONFIG_HOME": str(tmp_path / "xdg"), "HOME": str(tmp_path)}
    save_profile(
        "aws", Profile(url=server.url + STAGE + "/api", auth="sigv4", uploads_bucket=stack.uploads_bucket), environ
    )
    source = tmp_path / "model.bin"
    source.write_bytes(b"weights nobody records")
    # No trigger polls the queue here: the notification waits in SQS, unrecorded.
    code = main(["upload", "exp1", "run2", str(source), "--profile", "aws", "--timeout", "0.5"], environ=environ)
    _, err = capsys.readouterr()
    assert code == 1 and err.count("\n") == 1
    assert "was uploaded but not recorded within 0.5 s" in err and "modelrepo dead-letters --backend aws" in err
    code = main(["upload", "exp1", "run2", str(source), "--profile", "aws", "--no-wait", "--json"], environ=environ)
    uploaded = printed(capsys.readouterr().out)
    assert code == 0 and uploaded["where"] == f"s3://{stack.uploads_bucket}/exp1/run2/model.bin"


STACK_TEMPLATE = {
    "Resources": {
        "UploadsBucket": {"Type": "AWS::S3::Bucket"},
        "RegistryBucket": {"Type": "AWS::S3::Bucket"},
        "UploadsDeadLetterQueue": {"Type": "AWS::SQS::Queue"},
        "MetadataTable": {
            "Type": "AWS::DynamoDB::Table",
            "Properties": {
                "BillingMode": "PAY_PER_REQUEST",
                "AttributeDefinitions": [
                    {"AttributeName": "pk", "AttributeType": "S"},
                    {"AttributeName": "rk", "AttributeType": "S"},
                ],
                "KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "rk", "KeyType": "RANGE"}],
            },
        },
    },
    # The Outputs of template.yaml, under the same names.
    "Outputs": {
        "ApiUrl": {"Value": {"Fn::Sub": "https://abc123defg.execute-api.${AWS::Region}.amazonaws.com/prod/api"}},
        "UploadsBucketName": {"Value": {"Ref": "UploadsBucket"}},
        "RegistryBucketName": {"Value": {"Ref": "RegistryBucket"}},
        "MetadataTableName": {"Value": {"Ref": "MetadataTable"}},
        "UploadsDeadLetterQueueUrl": {"Value": {"Ref": "UploadsDeadLetterQueue"}},
    },
}


def test_configure_aws_reads_the_stack_outputs(
    moto_endpoint: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_endpoint)
    name = unique_name("stack")
    # One attempt with a long wait: a create retried after a slow answer (a busy machine) fails AlreadyExists.
    cloudformation = aws_client("cloudformation", moto_endpoint, total_attempts=1, read_timeout=120.0)
    cloudformation.create_stack(StackName=name, TemplateBody=json.dumps(STACK_TEMPLATE))
    outputs = {
        o["OutputKey"]: o["OutputValue"] for o in cloudformation.describe_stacks(StackName=name)["Stacks"][0]["Outputs"]
    }
    environ = {"XDG_CONFIG_HOME": str(tmp_path / "xdg"), "HOME": str(tmp_path)}

    assert main(["configure", "aws", "--stack", name, "--profile", "prod", "--json"], environ=environ) == 0
    shown = json.loads(capsys.readouterr().out)
    profile = load_profile("prod", environ)
    assert profile.url == "https://abc123defg.execute-api.us-east-1.amazonaws.com/prod/api" == shown["url"]
    assert (profile.auth, profile.region, profile.stack) == ("sigv4", "us-east-1", name)
    assert profile.uploads_bucket == outputs["UploadsBucketName"] and profile.cloud == "aws"
    assert profile.registry_bucket == outputs["RegistryBucketName"]
    assert profile.table == outputs["MetadataTableName"]
    assert profile.dead_letter_queue_url == outputs["UploadsDeadLetterQueueUrl"]

    assert main(["configure", "aws", "--stack", "no-such-stack"], environ=environ) == 1
    assert "cannot read the stack 'no-such-stack'" in capsys.readouterr().err
