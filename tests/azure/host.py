"""What the Azure Functions host does around our functions, done in-process against Azurite.

Functions Core Tools cannot run here, so the tests call the functions registered on
`function_app.app` directly, with the objects the host would hand them:

- HTTP: a real `func.HttpRequest`, routed like the host routes `/api/...` by the registered
  functions' routes and methods (a literal route such as `health` before the catch-all
  `{*path}`), with the host's key check: a function above `anonymous` level answers 401 without
  running unless the request carries a valid key (`x-functions-key` header or `?code=`).
- Uploads: Azurite emits no Event Grid events, so a test uploads a real blob to Azurite and builds
  the `func.EventGridEvent` (BlobCreated) Azure Storage would publish for it. `deliver` then does
  what the host's blob extension does with that delivery: it binds the blob's *current* version,
  invokes `record_upload` with a real `func.InputStream`, retries a failing invocation up to
  `extensions.blobs.poisonBlobThreshold` (read from host.json) times, then parks it: it enqueues
  the message the host writes to the `webjobs-blobtrigger-poison` queue (base64-encoded JSON naming
  the function, container, blob and ETag) and keeps the event on a list for the test to see.
"""

from __future__ import annotations

import base64
import itertools
import json
import uuid
from collections.abc import Callable, Mapping
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import azure.functions as func
from azure.core import MatchConditions
from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError
from azure.functions.blob import BlobConverter
from azure.functions.meta import Datum
from azure.storage.blob import BlobServiceClient
from azure.storage.queue import QueueServiceClient

import function_app
from modelrepo.adapters.azure import POISON_QUEUE, blob_name_from_url

REPO = Path(__file__).resolve().parents[2]
HOST_JSON = json.loads((REPO / "host.json").read_text())
POISON_THRESHOLD: int = HOST_JSON["extensions"]["blobs"]["poisonBlobThreshold"]

# get_functions() may be called once per app object: index them once per process.
FUNCTIONS = {f.get_function_name(): f for f in function_app.app.get_functions()}
_sequencer = itertools.count(1)


def user_function(name: str) -> Callable[..., Any]:
    return FUNCTIONS[name].get_user_function()


# The function keys the simulated host accepts (in Azure: `az functionapp keys list`).
FUNCTION_KEY = "simulated-function-key"


def http_functions() -> dict[str, dict[str, Any]]:
    """The httpTrigger binding of every HTTP function, by name."""
    found: dict[str, dict[str, Any]] = {}
    for name, function in FUNCTIONS.items():
        for binding in json.loads(function.get_function_json())["bindings"]:
            if binding["type"] == "httpTrigger":
                found[str(name)] = binding
    return found


def route_of(method: str, path: str) -> str:
    """The function the host runs for `method` on `/api/<path>`: a literal route before a catch-all."""
    route = path.removeprefix("/api/")
    candidates = [(name, b) for name, b in http_functions().items() if method.upper() in b["methods"]]
    for name, binding in candidates:
        if binding["route"] == route:
            return name
    for name, binding in candidates:  # a literal prefix before the bare catch-all: `ui/{*asset}`
        prefix, star, _ = binding["route"].partition("{*")
        if star and prefix and (route + "/").startswith(prefix):
            return name
    [catch_all] = [name for name, binding in candidates if binding["route"].startswith("{*")]
    return catch_all


def http(
    method: str,
    path: str,
    *,
    body: bytes | str | dict[str, Any] | list[Any] | None = None,
    headers: Mapping[str, str] | None = None,
    params: Mapping[str, str] | None = None,
    key: str | None = FUNCTION_KEY,
) -> func.HttpResponse:
    """Call the HTTP function the host would route `path` to. `path` is raw (percent-encoded).

    `key` travels as `x-functions-key`; None sends no key.
    """
    if isinstance(body, dict | list):
        raw = json.dumps(body).encode()
        headers = {"Content-Type": "application/json", **(headers or {})}
    elif isinstance(body, str):
        raw = body.encode()
    else:
        raw = body or b""
    if key is not None:
        headers = {"x-functions-key": key, **(headers or {})}
    query = f"?{urlencode(params)}" if params else ""
    request = func.HttpRequest(
        method=method,
        url=f"http://localhost:7071{path}{query}",
        headers=dict(headers or {}),
        params=dict(params or {}),
        route_params={"path": path.removeprefix("/api/")},
        body=raw,
    )
    name = route_of(method, path)
    if http_functions()[name]["authLevel"] != "ANONYMOUS":
        given = request.headers.get("x-functions-key") or request.params.get("code")
        if given != FUNCTION_KEY:
            return func.HttpResponse(b"", status_code=401)  # the host refuses before the function runs
    response = user_function(name)(request)
    assert isinstance(response, func.HttpResponse)
    return response


def problem_of(response: func.HttpResponse) -> dict[str, Any]:
    assert response.headers.get("Content-Type") == "application/problem+json"
    document: dict[str, Any] = json.loads(response.get_body())
    assert document["status"] == response.status_code and document["detail"]
    return document


def blob_created(service: BlobServiceClient, container: str, key: str) -> func.EventGridEvent:
    """The BlobCreated event Azure Storage publishes for the blob's current version."""
    blob = service.get_blob_client(container, key)
    properties = blob.get_blob_properties()
    return func.EventGridEvent(
        id=str(uuid.uuid4()),
        topic=f"/subscriptions/{uuid.UUID(int=0)}/resourceGroups/rg/providers/Microsoft.Storage/storageAccounts/dev",
        subject=f"/blobServices/default/containers/{container}/blobs/{key}",
        event_type="Microsoft.Storage.BlobCreated",
        event_time=properties.last_modified,
        data={
            "api": "PutBlob",
            "clientRequestId": str(uuid.uuid4()),
            "requestId": str(uuid.uuid4()),
            "eTag": properties.etag.strip('"'),
            "contentType": properties.content_settings.content_type,
            "contentLength": properties.size,
            "blobType": "BlockBlob",
            "url": blob.url,
            "sequencer": f"{next(_sequencer):032X}",
            "storageDiagnostics": {"batchId": str(uuid.uuid4())},
        },
        data_version="",
    )


def event_grid_json(event: func.EventGridEvent, **delivery: Any) -> dict[str, Any]:
    """The event in Event Grid's JSON schema, as a webhook or a dead-letter blob carries it."""
    return {
        "id": event.id,
        "eventTime": event.event_time.isoformat() if event.event_time else None,
        "eventType": event.event_type,
        "subject": event.subject,
        "topic": event.topic,
        "data": event.get_json(),
        "dataVersion": event.data_version,
        "metadataVersion": "1",
        **delivery,
    }


@dataclass
class BlobTriggerHost:
    """Delivers Event Grid events to `record_upload` the way the Functions host does."""

    service: BlobServiceClient
    queues: QueueServiceClient | None = None
    invocations: int = 0
    poison: list[func.EventGridEvent] = field(default_factory=list)
    failures: list[Exception] = field(default_factory=list)
    with_properties: bool = True

    def deliver(self, event: func.EventGridEvent) -> None:
        for attempt in range(1, POISON_THRESHOLD + 1):
            stream = self._bind(event)
            if stream is None:
                return  # the blob is gone: the host drops the work
            self.invocations += 1
            try:
                user_function("record_upload")(stream)
            except Exception as error:  # the host logs it and tries again
                self.failures.append(error)
                if attempt == POISON_THRESHOLD:
                    self.poison.append(event)
                    self._enqueue_poison(stream)
                continue
            return

    def _enqueue_poison(self, stream: func.InputStream) -> None:
        """The message the WebJobs blob extension writes for a blob it gave up on."""
        if self.queues is None:
            return
        container, _, name = (stream.name or "").partition("/")
        properties = getattr(stream, "blob_properties", None) or {}
        etag = properties.get("ETag") or self.service.get_blob_client(container, name).get_blob_properties().etag
        message = {
            "Type": "BlobTrigger",
            "FunctionId": "Host.Functions.record_upload",
            "BlobType": "BlockBlob",
            "ContainerName": container,
            "BlobName": name,
            "ETag": etag,
        }
        queue = self.queues.get_queue_client(POISON_QUEUE)
        with suppress(ResourceExistsError):
            queue.create_queue()
        queue.send_message(base64.b64encode(json.dumps(message).encode()).decode())

    def _bind(self, event: func.EventGridEvent) -> func.InputStream | None:
        """The blob binding: the blob's current version, named `<container>/<name>`."""
        container = event.subject.split("/containers/", 1)[1].split("/blobs/", 1)[0]
        name = blob_name_from_url(str(event.get_json()["url"]), container)
        blob = self.service.get_blob_client(container, name)
        try:
            properties = blob.get_blob_properties()
        except ResourceNotFoundError:
            return None
        data = blob.download_blob(etag=properties.etag, match_condition=MatchConditions.IfNotModified).readall()
        # The worker builds the InputStream from the host's trigger metadata with BlobConverter.
        metadata = {
            "BlobTrigger": Datum(f"{container}/{name}", "string"),
            "Uri": Datum(blob.url, "string"),
        }
        if self.with_properties:
            document = {
                "ETag": properties.etag,
                "LastModified": properties.last_modified.isoformat(),
                "ContentLength": properties.size,
                "ContentType": properties.content_settings.content_type,
                "BlobType": "BlockBlob",
            }
            metadata["Properties"] = Datum(json.dumps(document), "json")
        stream = BlobConverter.decode(Datum(data, "bytes"), trigger_metadata=metadata)
        assert isinstance(stream, func.InputStream)
        return stream
