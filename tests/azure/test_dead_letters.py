"""Dead letters on Azure: the blob trigger's poison queue and Event Grid's dead-letter container,
listed and replayed with `modelrepo dead-letters|replay --backend azure` on Azurite, with the very
app settings the functions get."""

from __future__ import annotations

import base64
import json
import uuid
from typing import Any

import pytest

from functions_azure.bootstrap import runtime
from modelrepo.adapters.azure import (
    EVENT_GRID_SOURCE,
    POISON_QUEUE,
    POISON_SOURCE,
    AzureSettings,
    connect,
    dead_letter_queue,
)
from modelrepo.cli import main
from modelrepo.recovery import replay_dead_letters
from tests.azure.conftest import AzureApp
from tests.azure.host import POISON_THRESHOLD, blob_created, event_grid_json, http

KEY = "exp1/run1/model.onnx"


def cli(app: AzureApp, capsys: pytest.CaptureFixture[str], *args: str) -> Any:
    code = main([*args, "--backend", "azure", "--json"], environ=dict(app.settings))
    out, err = capsys.readouterr()
    assert code == 0, err
    return json.loads(out)


def artifacts_of(run_id: str) -> list[dict[str, Any]]:
    return json.loads(http("GET", f"/api/runs/{run_id}/artifacts").get_body())["items"]  # type: ignore[no-any-return]


def poison_messages(app: AzureApp) -> list[Any]:
    return list(app.queues.get_queue_client(POISON_QUEUE).peek_messages(max_messages=32))


def test_a_poisoned_upload_is_listed_replayed_and_removed_while_others_flow(
    azure_app: AzureApp, capsys: pytest.CaptureFixture[str]
) -> None:
    azure_app.upload(KEY, b"weights")
    event = blob_created(azure_app.service, azure_app.uploads, KEY)
    azure_app.tables.delete_table(azure_app.table)  # every attempt fails
    azure_app.host.deliver(event)
    assert (azure_app.host.invocations, azure_app.host.poison) == (POISON_THRESHOLD, [event])
    [message] = poison_messages(azure_app)
    parked = json.loads(base64.b64decode(message.content))
    assert (parked["ContainerName"], parked["BlobName"], parked["ETag"]) == (
        azure_app.uploads,
        KEY,
        azure_app.service.get_blob_client(azure_app.uploads, KEY).get_blob_properties().etag,
    )

    azure_app.tables.create_table(azure_app.table)  # storage is back: the next upload flows
    azure_app.upload("exp1/run2/next.bin", b"next")
    azure_app.host.deliver(blob_created(azure_app.service, azure_app.uploads, "exp1/run2/next.bin"))
    assert azure_app.host.invocations == POISON_THRESHOLD + 1
    assert [a["name"] for a in artifacts_of("run2")] == ["next.bin"]
    assert artifacts_of("run1") == []  # the poisoned one waits for the operator

    [letter] = cli(azure_app, capsys, "dead-letters")
    assert (letter["source"], letter["keys"]) == (POISON_SOURCE, [KEY])
    assert letter["handle"] == f"{POISON_SOURCE}:{message.id}" and "record_upload" in letter["detail"]
    assert len(poison_messages(azure_app)) == 1  # listing leaves it in place

    [replayed] = cli(azure_app, capsys, "replay")
    assert (replayed["replayed"], replayed["outcomes"]) == (True, ["recorded"])
    [artifact] = artifacts_of("run1")
    assert (artifact["key"], artifact["size"]) == (KEY, len(b"weights"))
    assert poison_messages(azure_app) == []
    assert cli(azure_app, capsys, "dead-letters") == []
    assert cli(azure_app, capsys, "replay") == []


def dead_letter_event(app: AzureApp, key: str, reason: str = "MaxDeliveryAttemptsExceeded") -> dict[str, Any]:
    """What Event Grid writes for an event it could not deliver: the event plus delivery facts."""
    return event_grid_json(
        blob_created(app.service, app.uploads, key),
        deadLetterReason=reason,
        deliveryAttempts=30,
        lastDeliveryOutcome="GenericError",
        lastHttpStatusCode=500,
        publishTime="2026-01-02T03:04:05.1234567Z",
        lastDeliveryAttemptTime="2026-01-03T03:04:05.1234567Z",
    )


def park(app: AzureApp, document: bytes) -> str:
    name = f"UPLOADS-TO-RECORD_UPLOAD/2026/1/3/3/{uuid.uuid4()}.json"
    app.service.get_blob_client(app.dead_letters, name).upload_blob(document)
    return name


def test_event_grid_dead_letters_are_replayed_through_the_one_event_translation(
    azure_app: AzureApp, capsys: pytest.CaptureFixture[str]
) -> None:
    keys = ["exp1/run1/a model.bin", "exp1/run1/plus+%2B.bin"]
    for key in keys:
        azure_app.upload(key, key.encode())
    batch = park(azure_app, json.dumps([dead_letter_event(azure_app, key) for key in keys]).encode())
    garbage = park(azure_app, b"{not json")

    letters = {letter["handle"]: letter for letter in cli(azure_app, capsys, "dead-letters")}
    assert set(letters) == {f"{EVENT_GRID_SOURCE}:{batch}", f"{EVENT_GRID_SOURCE}:{garbage}"}
    assert letters[f"{EVENT_GRID_SOURCE}:{batch}"]["keys"] == keys
    assert "MaxDeliveryAttemptsExceeded (GenericError)" in letters[f"{EVENT_GRID_SOURCE}:{batch}"]["detail"]
    assert letters[f"{EVENT_GRID_SOURCE}:{batch}"]["failedAt"].startswith("2026-01-03T03:04:05")
    assert letters[f"{EVENT_GRID_SOURCE}:{garbage}"]["keys"] == []

    outcomes = {r["handle"]: r for r in cli(azure_app, capsys, "replay")}
    assert outcomes[f"{EVENT_GRID_SOURCE}:{batch}"]["outcomes"] == ["recorded", "recorded"]
    assert outcomes[f"{EVENT_GRID_SOURCE}:{garbage}"]["replayed"] is False
    assert "cannot be decoded" in outcomes[f"{EVENT_GRID_SOURCE}:{garbage}"]["error"]
    assert sorted(a["key"] for a in artifacts_of("run1")) == sorted(keys)
    # The replayed letter is gone; the unreadable one stays for a person to look at.
    remaining = [b.name for b in azure_app.service.get_container_client(azure_app.dead_letters).list_blobs()]
    assert remaining == [garbage]
    # Replaying again records nothing twice.
    again = cli(azure_app, capsys, "replay")
    assert [r["replayed"] for r in again] == [False]
    assert len(artifacts_of("run1")) == 2


def test_poison_messages_in_every_form_the_queue_may_hold(azure_app: AzureApp) -> None:
    """Plain or base64 JSON; a replaced version; another container; not a poison message at all."""
    settings = AzureSettings.from_environment(azure_app.settings)
    storage = connect(settings)
    repository = runtime().repository
    queue = storage.queues.get_queue_client(POISON_QUEUE)
    queue.create_queue()
    azure_app.upload(KEY, b"first")
    first = azure_app.service.get_blob_client(azure_app.uploads, KEY).get_blob_properties()
    azure_app.upload("exp1/run1/current.bin", b"current")
    current = azure_app.service.get_blob_client(azure_app.uploads, "exp1/run1/current.bin").get_blob_properties()
    azure_app.upload(KEY, b"second, replacing the poisoned version")

    def message(container: str, key: str, etag: str) -> str:
        fields = {"FunctionId": "Host.Functions.record_upload", "BlobType": "BlockBlob", "ContainerName": container}
        return json.dumps(fields | {"BlobName": key, "ETag": etag})

    queue.send_message(message(azure_app.uploads, KEY, first.etag))  # plain JSON
    queue.send_message(base64.b64encode(message(azure_app.uploads, current.name, current.etag).encode()).decode())
    queue.send_message(message("somebody-else", KEY, first.etag))
    queue.send_message("not a poison message")
    letters = dead_letter_queue(settings, storage, repository.artifacts)
    replaced, intact, foreign, broken = letters.peek(10)
    assert "gone or replaced" in replaced.detail and replaced.events[0].etag == first.etag
    [event] = intact.events
    assert (event.key, event.etag, event.size, event.uploaded_at) == (
        current.name,
        current.etag,
        current.size,
        current.last_modified,
    )
    assert foreign.events == () and "not the uploads container" in foreign.detail
    assert broken.events == () and "not a blob trigger poison message" in broken.detail

    # A replaced version records nothing (the newer upload has its own event); the intact one records.
    assert [o.outcomes for o in replay_dead_letters(repository, letters, limit=10)] == [["stale"], ["recorded"], [], []]
    assert [letter.handle for letter in letters.peek(10)] == [foreign.handle, broken.handle]
