"""The scheduled reconcile (timer trigger) on Azurite: what the event path missed gets healed, once."""

from __future__ import annotations

import io
import json
import logging
import math
import threading
from collections import Counter
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import requests
from azure.functions.timer import TimerRequest
from azure.storage.blob import ContainerClient, ContainerSasPermissions, generate_container_sas

from modelrepo import tables
from modelrepo.adapters.azure import (
    RECONCILE_SCHEDULE_SETTING,
    AzureBlobArtifactStore,
    AzureSettings,
    AzureStorage,
    create_container,
)
from modelrepo.adapters.memory import MemoryMetadataStore
from modelrepo.ports import Put
from modelrepo.recovery import SWEEP_ROW, Reconciler
from modelrepo.service import ModelRepository
from tests.azure.conftest import AzureApp
from tests.azure.faults import FaultyTransport
from tests.azure.host import FUNCTIONS, HOST_JSON, REPO, blob_created, http, user_function
from tests.fixtures.azure import KEY, Azurite, unique_name


def body_of(response: Any) -> Any:
    return json.loads(response.get_body())


def run_reconcile(caplog: pytest.LogCaptureFixture) -> dict[str, Any]:
    """Invoke the timer function as the host does and return the sweep report it logged."""
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="functions_azure.maintenance"):
        user_function("reconcile")(TimerRequest(past_due=False))
    [record] = [r for r in caplog.records if r.name == "functions_azure.maintenance"]
    assert isinstance(record.args, tuple)
    report = record.args[1]
    assert isinstance(report, dict)
    return report


def test_the_timer_reads_its_schedule_from_an_app_setting_and_fits_the_function_timeout() -> None:
    [binding] = json.loads(FUNCTIONS["reconcile"].get_function_json())["bindings"]
    assert binding["type"] == "timerTrigger" and binding["schedule"] == f"%{RECONCILE_SCHEDULE_SETTING}%"
    assert binding.get("runOnStartup") is False
    hours, minutes, seconds = (int(part) for part in HOST_JSON["functionTimeout"].split(":"))
    timeout = hours * 3600 + minutes * 60 + seconds
    limit = AzureSettings.model_fields["reconcile_budget_seconds"].metadata
    assert max(m.le for m in limit if hasattr(m, "le")) <= timeout - 60  # a minute left to save the position
    example = json.loads((REPO / "local.settings.json.example").read_text())["Values"]
    assert AzureSettings.from_environment(example).reconcile_schedule == example[RECONCILE_SCHEDULE_SETTING]


def test_a_scheduled_run_records_missed_uploads_flags_vanished_ones_and_a_rerun_changes_nothing(
    azure_app: AzureApp, caplog: pytest.LogCaptureFixture
) -> None:
    for key in ("exp1/run1/seen.bin", "exp1/run1/deleted.bin"):
        azure_app.upload(key, key.encode())
        azure_app.host.deliver(blob_created(azure_app.service, azure_app.uploads, key))
    azure_app.upload("exp1/run2/missed.bin", b"its event was never handled")  # crash before the table write
    azure_app.service.get_blob_client(azure_app.uploads, "exp1/run1/deleted.bin").delete_blob()

    report = run_reconcile(caplog)
    assert report == {
        "objectsScanned": 2,
        "recorded": 1,
        "rejected": 0,
        "runsChecked": 2,
        "vanished": 1,
        "indexed": 0,  # runs' events are not the index's: the uploads listed their experiment
        "released": 0,
        "complete": True,
    }
    [missed] = body_of(http("GET", "/api/runs/run2/artifacts"))["items"]
    assert (missed["key"], missed["size"]) == ("exp1/run2/missed.bin", len(b"its event was never handled"))
    audit = body_of(http("GET", "/api/runs/run2/audit"))["items"]
    assert [(e["actor"], e["action"]) for e in audit] == [("reconcile", "artifact.recorded")]
    run1 = {a["name"]: a for a in body_of(http("GET", "/api/runs/run1/artifacts"))["items"]}
    assert run1["deleted.bin"]["vanishedAt"] is not None and run1["seen.bin"]["vanishedAt"] is None
    assert [e["experimentId"] for e in body_of(http("GET", "/api/experiments"))["items"]] == ["exp1"]

    before = azure_app.rows()
    again = run_reconcile(caplog)
    assert (again["recorded"], again["vanished"], again["complete"]) == (0, 0, True)
    assert azure_app.rows() == before


def test_a_run_concurrent_with_live_uploads_records_every_upload_exactly_once(
    azure_app: AzureApp, caplog: pytest.LogCaptureFixture
) -> None:
    keys = [f"exp1/run{n % 4}/model-{n}.bin" for n in range(40)]
    uploading = threading.Event()
    uploading.set()
    sweeps: list[dict[str, Any]] = []

    def sweep() -> None:
        while uploading.is_set():
            sweeps.append(run_reconcile(caplog))

    sweeper = threading.Thread(target=sweep)
    sweeper.start()
    try:
        for n, key in enumerate(keys):
            azure_app.upload(key, f"model {n}".encode())
            if n % 3:  # every third event is lost: only the sweep can find those
                azure_app.host.deliver(blob_created(azure_app.service, azure_app.uploads, key))
    finally:
        uploading.clear()
        sweeper.join()
    sweeps.append(run_reconcile(caplog))  # one full run after the uploads stopped

    assert len(sweeps) >= 2 and azure_app.host.failures == []
    recorded: Counter[str] = Counter()
    for run in range(4):
        artifacts = body_of(http("GET", f"/api/runs/run{run}/artifacts"))["items"]
        recorded.update(a["key"] for a in artifacts)
        assert all(a["vanishedAt"] is None for a in artifacts)
        audit = body_of(http("GET", f"/api/runs/run{run}/audit", params={"limit": "100"}))["items"]
        actions = [entry["action"] for entry in audit]
        assert actions == ["artifact.recorded"] * len(artifacts)  # one record per upload, whoever made it
    assert recorded == Counter(keys)
    assert sum(s["recorded"] for s in sweeps) >= len([n for n in range(40) if n % 3 == 0])


SWEEP_PAGE = 500


def put_many(container: ContainerClient, names: Iterable[str]) -> None:
    """Create small blobs, in parallel, with plain PUTs under a container SAS: Azurite spends
    about 3 ms on each, and the SDK's request pipeline would about as much again of this side's CPU."""
    sas = generate_container_sas(
        container.account_name,
        container.container_name,
        account_key=KEY,
        permission=ContainerSasPermissions(create=True, write=True),
        expiry=datetime.now(UTC) + timedelta(hours=1),
    )
    sessions = threading.local()

    def put(name: str) -> None:
        if not hasattr(sessions, "http"):
            sessions.http = requests.Session()
        answer = sessions.http.put(f"{container.url}/{name}?{sas}", data=b"x", headers={"x-ms-blob-type": "BlockBlob"})
        assert answer.status_code == 201, answer.text

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(put, names))


def test_the_sweep_lists_each_page_with_one_call_however_large_the_container(azurite: Azurite) -> None:
    """Each page resumes from List Blobs' continuation token: n blobs cost ceil(n / page) list
    calls. Resuming by name instead re-listed from the start of the container for every page, a
    cost that grew with the square of n. The blobs are named outside the upload layout, so the
    sweep rejects each without reading it: what is counted is the listing."""
    counted = FaultyTransport()  # no plan: it only notes every request it sends
    storage = AzureStorage.from_connection_string(azurite.connection_string, transport=counted)
    uploads = create_container(storage.blobs, unique_name("uploads-"))
    registry = create_container(storage.blobs, unique_name("registry-"))
    artifacts = AzureBlobArtifactStore(storage.blobs, uploads.container_name, registry.container_name)
    repository = ModelRepository(artifacts, MemoryMetadataStore())

    def list_calls() -> int:
        return counted.count(
            "sent", lambda method, url: method == "GET" and "comp=list" in url and uploads.container_name in url
        )

    calls: dict[int, int] = {}
    stored = 0
    for total in (2_501, 5_003):
        put_many(uploads, (f"loose-{n:05d}.bin" for n in range(stored, total)))
        stored = total
        before = list_calls()
        report = Reconciler(repository, page_size=SWEEP_PAGE).run()
        calls[total] = list_calls() - before
        assert report.complete and (report.objects_scanned, report.rejected) == (total, total)

    assert calls == {total: math.ceil(total / SWEEP_PAGE) for total in calls}, "one list call per page"


def test_a_sweep_position_saved_as_a_blob_name_resumes_after_that_blob(azure_storage: AzureStorage) -> None:
    """Sweeps of earlier releases saved their position as the last blob name they listed; a sweep
    that finds one resumes right after it, then pages by continuation token."""
    uploads = create_container(azure_storage.blobs, unique_name("uploads-"))
    registry = create_container(azure_storage.blobs, unique_name("registry-"))
    artifacts = AzureBlobArtifactStore(azure_storage.blobs, uploads.container_name, registry.container_name)
    repository = ModelRepository(artifacts, MemoryMetadataStore())
    keys = [f"exp1/run1/m{n}.bin" for n in range(9)]
    for key in keys:
        artifacts.put(key, io.BytesIO(key.encode()))
    saved = {"phase": "objects", "after": keys[2]}
    repository.metadata.transact([Put(tables.SWEEPS_PARTITION, SWEEP_ROW, saved)])

    report = Reconciler(repository, page_size=2).run()

    assert report.complete and (report.objects_scanned, report.recorded) == (6, 6)
    assert [a.key for a in repository.list_run_artifacts("run1")] == keys[3:]
