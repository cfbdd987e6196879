"""The client against the Azure host on Azurite: requests with a function key through a loopback
front that plays the Functions host (tests/azure/host.py: its key check, then the real HTTP
function), `modelrepo configure azure` from the Bicep outputs, and `modelrepo upload --profile` of
64 MiB into Blob Storage (a block list) recorded by the Event Grid blob trigger."""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from azure.core.exceptions import ResourceNotFoundError

from functions_azure.bootstrap import runtime
from modelrepo.cli import main
from modelrepo.client import Client, NotAuthorized
from modelrepo.client.auth import FunctionKeyAuth
from tests.azure.conftest import AzureApp
from tests.azure.host import FUNCTION_KEY, blob_created, http
from tests.azure.test_functions import recorded
from tests.client.loopback import Answer, Loopback, Wire, loopback
from tests.fixtures.azure import ACCOUNT, Azurite

WEIGHTS = b"azure client weights " * 2048
BIG = 64 * 1024 * 1024


def functions_host(wire: Wire) -> Answer:
    """The Functions host over real HTTP: route, check the key, run the function."""
    response = http(wire.method, wire.path, body=wire.body, headers=wire.headers, params=wire.params, key=None)
    return Answer(response.status_code, dict(response.headers), response.get_body())


@pytest.fixture
def host(azure_app: AzureApp) -> Iterator[Loopback]:
    with loopback(functions_host) as server:
        yield server


def test_a_registration_through_the_client_reaches_the_http_function(azure_app: AzureApp, host: Loopback) -> None:
    artifact = recorded(azure_app, "exp1/run1/nested/model.onnx", WEIGHTS)
    with Client.over_http(host.url + "/api", FunctionKeyAuth(FUNCTION_KEY)) as client:
        first = client.register("exp1", artifact["runArtifactId"], "alice")
        again = [client.register("exp1", artifact["runArtifactId"], "bob", idempotency_key="k-7") for _ in range(2)]
        assert (first.version, [m.version for m in again]) == (1, [2, 2])
        client.set_tag("exp1", 1, "stage", "gold", "alice")
        assert [(m.version, m.tags) for m in client.models("exp1")] == [(2, {}), (1, {"stage": "gold"})]
        with client.download("exp1", 1) as download:  # a 307 to a SAS link on Azurite, fetched bare
            assert download.read() == WEIGHTS and download.verified
        assert download.filename == "model.onnx"
    assert all(w.headers["x-functions-key"] == FUNCTION_KEY for w in host.requests if w.path != "/api/health")
    assert host.connections == 1
    with Client.over_http(host.url + "/api", FunctionKeyAuth("not-the-key")) as client:
        with pytest.raises(NotAuthorized) as refused:
            client.register("exp1", artifact["runArtifactId"], "mallory")
        assert client.health() == "ok"  # anonymous
    assert refused.value.status == 401
    assert [m.version for m in Client.in_process(runtime().api).models("exp1")] == [2, 1]  # nothing written


def outputs(azure_app: AzureApp) -> dict[str, Any]:
    """What `az deployment group show --query properties.outputs` prints for infra/main.bicep."""
    return {
        "functionAppName": {"type": "String", "value": "modelrepo-test"},
        "apiBaseUrl": {"type": "String", "value": "https://modelrepo-test.azurewebsites.net/api"},
        "storageAccountName": {"type": "String", "value": ACCOUNT},
        "uploadsContainer": {"type": "String", "value": azure_app.uploads},
    }


def test_cli_upload_of_64_mib_into_blob_storage_waits_until_the_blob_trigger_recorded_it(
    azure_app: AzureApp, azurite: Azurite, host: Loopback, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    environ = {
        "XDG_CONFIG_HOME": str(tmp_path / "xdg"),
        "HOME": str(tmp_path),
        "MODELREPO_FUNCTION_KEY": FUNCTION_KEY,
        "AZURE_STORAGE_CONNECTION_STRING": azurite.connection_string,  # Azurite: the account key, no Entra
        "MODELREPO_URL": host.url + "/api",  # the deployment's URL, overridden to reach the front
    }
    (tmp_path / "outputs.json").write_text(json.dumps(outputs(azure_app)))
    assert main(["configure", "azure", "--outputs", str(tmp_path / "outputs.json")], environ=environ) == 0
    capsys.readouterr()
    source = tmp_path / "big-model.onnx"
    data = hashlib.sha256(b"azure seed").digest() * (BIG // 32)
    source.write_bytes(data)
    key = "exp1/run-big/big-model.onnx"

    outcome: dict[str, Any] = {}
    args = ["upload", "exp1", "run-big", str(source), "--profile", "azure", "--json", "--timeout", "240"]
    cli = threading.Thread(target=lambda: outcome.update(code=main(args, environ=environ)))
    cli.start()
    blob = azure_app.service.get_blob_client(azure_app.uploads, key)
    while cli.is_alive():  # Event Grid: once the block list is committed, deliver BlobCreated
        try:
            blob.get_blob_properties()
        except ResourceNotFoundError:
            cli.join(timeout=0.2)
            continue
        azure_app.host.deliver(blob_created(azure_app.service, azure_app.uploads, key))
        break
    cli.join(timeout=240)
    out, err = capsys.readouterr()
    assert outcome["code"] == 0, err
    artifact = json.loads(out)
    committed, _ = blob.get_block_list("committed")
    assert len(committed) == 16  # staged as 4 MiB blocks, committed as one block list
    assert artifact["etag"].strip('"') == blob.get_blob_properties().etag.strip('"')
    assert (artifact["key"], artifact["size"]) == (key, BIG)
    assert artifact["sha256"] == hashlib.sha256(data).hexdigest()
    assert azure_app.host.invocations == 1
