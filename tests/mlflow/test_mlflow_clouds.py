"""The same MLflow client calls against the cloud hosts, each through a loopback front:

- AWS: the front plays API Gateway (it verifies every SigV4 signature, which MLflow's client makes
  with the `modelrepo-sigv4` request-auth plugin, then invokes the API function with the proxy
  event); files come from presigned S3 links on moto, which the plugin follows without its headers.
- Azure: the front plays the Functions host (its function-key check, then the HTTP function); MLflow
  sends the key with the `modelrepo-function-key` plugin; files come from SAS links on Azurite.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.aws.conftest import Stack, api_event, call_api, stack  # noqa: F401 - the AWS host's fixture
from tests.aws.test_client_aws import STAGE, Gateway
from tests.azure.conftest import AzureApp, azure_app  # noqa: F401 - the Azure host's fixture
from tests.azure.host import FUNCTION_KEY
from tests.azure.test_client_azure import functions_host
from tests.client.loopback import Answer, Wire, loopback
from tests.fixtures.aws import DUMMY_ENVIRONMENT
from tests.mlflow.conftest import BURST, NAME, RUN, LosesOneAnswer, check_report, files_of, run_scenario


class OneContainer:
    """One Lambda container answers one request at a time (Powertools' resolver keeps the current
    event on the app object); concurrent callers queue for it, as they would for a warm container."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.lock = threading.Lock()

    def __call__(self, wire: Wire) -> Answer:
        with self.lock:
            return self.gateway(wire)


@pytest.fixture
def aws_front(stack: Stack) -> Iterator[tuple[str, LosesOneAnswer, Gateway]]:  # noqa: F811
    gateway = Gateway()
    front = LosesOneAnswer(OneContainer(gateway))
    with loopback(front) as server:
        yield server.url + STAGE, front, gateway


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:No application metrics to publish:UserWarning")
def test_mlflow_uses_the_aws_host_as_its_model_registry(
    stack: Stack,  # noqa: F811
    aws_front: tuple[str, LosesOneAnswer, Gateway],
    tiny_model: Path,
    tmp_path: Path,
) -> None:
    url, front, gateway = aws_front
    model = files_of(tiny_model)
    for name in (NAME, BURST):  # uploaded; MLflow's create records what the event path has not yet
        for path, data in model.items():
            stack.s3.put_object(Bucket=stack.uploads_bucket, Key=f"{name}/{RUN}/model/{path}", Body=data)
    sources = (f"s3://{stack.uploads_bucket}/{NAME}/{RUN}/model", f"s3://{stack.uploads_bucket}/{BURST}/{RUN}/model")
    environment = {
        **{k: v for k, v in DUMMY_ENVIRONMENT.items() if k.startswith("AWS_")},
        "MLFLOW_TRACKING_AUTH": "modelrepo-sigv4",
    }
    report = run_scenario(tmp_path, url, sources, environment)
    check_report(report, model)
    assert len(front.forwarded) == 2
    assert gateway.verified  # every signed request was verified before the function ran


@pytest.fixture
def azure_front(azure_app: AzureApp) -> Iterator[tuple[str, LosesOneAnswer]]:  # noqa: F811
    front = LosesOneAnswer(functions_host)
    with loopback(front) as server:
        yield server.url, front


@pytest.mark.slow
def test_mlflow_uses_the_azure_host_as_its_model_registry(
    azure_app: AzureApp,  # noqa: F811
    azure_front: tuple[str, LosesOneAnswer],
    tiny_model: Path,
    tmp_path: Path,
) -> None:
    url, front = azure_front
    model = files_of(tiny_model)
    for name in (NAME, BURST):
        for path, data in model.items():
            azure_app.upload(f"{name}/{RUN}/model/{path}", data)
    container = azure_app.service.get_container_client(azure_app.uploads).url.rstrip("/")
    sources = (f"{container}/{NAME}/{RUN}/model", f"{container}/{BURST}/{RUN}/model")
    environment = {"MLFLOW_TRACKING_AUTH": "modelrepo-function-key", "MODELREPO_FUNCTION_KEY": FUNCTION_KEY}
    report = run_scenario(tmp_path, url, sources, environment)
    check_report(report, model)
    assert len(front.forwarded) == 2


@pytest.mark.filterwarnings("ignore:No application metrics to publish:UserWarning")
def test_the_api_function_s_download_uri_keeps_api_gateway_s_stage(stack: Stack) -> None:  # noqa: F811
    stack.s3.put_object(Bucket=stack.uploads_bucket, Key=f"{NAME}/{RUN}/model/MLmodel", Body=b"flavors: {}\n")
    source = f"s3://{stack.uploads_bucket}/{NAME}/{RUN}/model"
    body = {"name": NAME, "source": source}
    status, _, created = call_api(api_event("POST", "/api/2.0/mlflow/model-versions/create", body=body))
    assert status == 200, created
    host = {"Host": "abc123defg.execute-api.us-east-1.amazonaws.com", "X-Forwarded-Proto": "https"}
    query = {"name": NAME, "version": created["model_version"]["version"]}
    path = "/api/2.0/mlflow/model-versions/get-download-uri"
    status, _, answer = call_api(api_event("GET", path, headers=host, query=query))
    assert (status, answer["artifact_uri"]) == (
        200,
        f"https://abc123defg.execute-api.us-east-1.amazonaws.com/prod/api/2.0/mlflow-artifacts/artifacts/{NAME}/1",
    )
