"""The embedded runtime end to end: drop folder → recorded → registered → listed → downloaded."""

from __future__ import annotations

import os
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tests.local.conftest import Served, run_modelrepo, wait_for

MODEL = os.urandom(256 * 1024)


def artifacts_of(served: Served, run: str) -> list[dict[str, object]]:
    answer = served.request("GET", f"/api/runs/{run}/artifacts")
    assert answer.status == 200
    items: list[dict[str, object]] = answer.json()["items"]
    return items


def recorded_events(served: Served, run: str) -> list[str]:
    return [e["action"] for e in served.request("GET", f"/api/runs/{run}/audit?limit=1000").json()["items"]]


def watcher_outcomes(served: Served, outcome: str) -> int:
    """How many of the watcher's looks ended in `outcome`, from its summary lines
    ("drop folder: 1 duplicate, 2 recorded (latest …)"): the proof that it looked."""
    total = 0
    for line in list(served.log):
        found = re.search(r"drop folder: (.*) \(latest ", line)
        for part in found.group(1).split(", ") if found else ():
            count, _, name = part.partition(" ")
            total += int(count) if name == outcome else 0
    return total


def test_a_dropped_file_is_recorded_once_and_identical_rewrites_change_nothing(served: Served) -> None:
    """How fast a drop is recorded is measured in bench/ (ingest latency), not asserted here."""
    served.drop("exp1/run1/model.bin", MODEL)
    [artifact] = wait_for(lambda: artifacts_of(served, "run1"), timeout=60)
    assert artifact["name"] == "model.bin" and artifact["size"] == len(MODEL)

    path = served.root / "artifacts" / "exp1/run1/model.bin"
    os.utime(path)  # touched
    path.write_bytes(MODEL)  # rewritten with identical bytes
    wait_for(lambda: watcher_outcomes(served, "duplicate") >= 1, timeout=60)  # the watcher looked at it
    assert artifacts_of(served, "run1") == [artifact]
    assert recorded_events(served, "run1") == ["artifact.recorded"]

    path.write_bytes(MODEL + b"retrained")  # a real change is noticed: the watcher was listening
    [changed] = wait_for(
        lambda: [a for a in artifacts_of(served, "run1") if a["runArtifactId"] != artifact["runArtifactId"]],
        timeout=60,
    )
    assert changed["size"] == len(MODEL) + 9
    assert recorded_events(served, "run1") == ["artifact.recorded", "artifact.recorded"]


def test_files_written_before_start_and_into_new_folders_are_recorded(tmp_path: Path) -> None:
    from tests.local.conftest import start_serve, stop_serve

    root = tmp_path / "root"
    early = root / "artifacts" / "exp1" / "early-run" / "model.bin"
    early.parent.mkdir(parents=True)
    early.write_bytes(b"was here first")
    served = start_serve(root)
    try:
        wait_for(lambda: artifacts_of(served, "early-run"), timeout=60)
        for n in range(5):  # several new nested folders at once
            served.drop(f"exp1/run-{n}/sub/dir/model-{n}.bin", f"model {n}".encode())
        for n in range(5):
            wait_for(lambda n=n: artifacts_of(served, f"run-{n}"), timeout=60)  # type: ignore[misc]
    finally:
        stop_serve(served)


def test_bad_names_in_the_drop_folder_become_rejections(served: Served) -> None:
    served.drop("loose-file.bin", b"x")
    served.drop("exp1/run1/back\\slash.bin", b"x")
    served.drop("exp1/run1/bidi\u202egnp.exe", b"x")
    rejections = wait_for(
        lambda: (r := served.request("GET", "/api/rejections").json()["items"]) and len(r) == 3 and r,
        timeout=60,
    )
    reasons = {r["key"]: r["reason"] for r in rejections}
    assert "layout" in reasons["loose-file.bin"]
    assert "backslash" in reasons["exp1/run1/back\\slash.bin"]
    assert "bidirectional" in reasons["exp1/run1/bidi\u202egnp.exe"]
    assert artifacts_of(served, "run1") == []


def test_32_concurrent_registrations_get_versions_1_to_32_and_page(served: Served) -> None:
    served.drop("exp1/run1/model.bin", MODEL)
    [artifact] = wait_for(lambda: artifacts_of(served, "run1"), timeout=60)
    body = {"experimentId": "exp1", "runArtifactId": artifact["runArtifactId"], "registeredBy": "alice"}
    with ThreadPoolExecutor(max_workers=32) as pool:
        answers = list(pool.map(lambda _: served.request("POST", "/api/register", body), range(32)))
    assert [a.status for a in answers] == [201] * 32
    assert sorted(a.json()["version"] for a in answers) == list(range(1, 33))

    listed: list[int] = []
    path = "/api/experiments/exp1/models?limit=5"
    while True:
        page = served.request("GET", path).json()
        assert len(page["items"]) <= 5
        listed.extend(m["version"] for m in page["items"])
        if not page["nextCursor"]:
            break
        path = f"/api/experiments/exp1/models?limit=5&cursor={page['nextCursor']}"
    assert listed == list(range(32, 0, -1))


def test_pinned_bytes_are_served_after_the_source_changes(served: Served) -> None:
    source = served.drop("exp1/run1/model.bin", MODEL)
    [artifact] = wait_for(lambda: artifacts_of(served, "run1"), timeout=60)
    body = {"experimentId": "exp1", "runArtifactId": artifact["runArtifactId"], "registeredBy": "alice"}
    assert served.request("POST", "/api/register", body).status == 201
    source.write_bytes(b"overwritten")
    source.unlink()
    download = served.request("GET", "/api/experiments/exp1/models/1/download")
    assert download.status == 200
    assert download.body == MODEL
    assert download.headers["Content-Type"] == "application/octet-stream"


def test_bad_requests_get_problem_answers(served: Served) -> None:
    answer = served.request("POST", "/api/register", {"experimentId": "exp 1"})
    assert answer.status == 400
    assert answer.headers["Content-Type"] == "application/problem+json"
    assert "experimentId" in answer.json()["detail"]
    big = served.request("POST", "/api/register", {"description": "x" * (1024 * 1024)})
    assert big.status == 413
    assert served.request("GET", "/api/health").status == 200  # the server is fine afterwards


def test_with_an_api_key_every_route_but_health_needs_it(served_with_key: Served) -> None:
    served = served_with_key
    served.drop("exp1/run1/model.bin", MODEL)
    [artifact] = wait_for(lambda: artifacts_of(served, "run1"), timeout=60)
    body = {"experimentId": "exp1", "runArtifactId": artifact["runArtifactId"], "registeredBy": "mallory"}
    denied = served.request("POST", "/api/register", body, authorized=False)
    assert denied.status == 401
    assert denied.headers["WWW-Authenticate"].startswith("Bearer")
    wrong = served.request("POST", "/api/register", body, authorized=False, headers={"Authorization": "Bearer nope"})
    assert wrong.status == 401
    assert served.request("GET", "/api/runs/run1/artifacts", authorized=False).status == 401
    assert served.request("GET", "/api/health", authorized=False).status == 200
    assert served.request("GET", "/api/experiments/exp1/models").json()["items"] == []  # nothing was written
    assert served.request("POST", "/api/register", body).status == 201


def test_binding_beyond_loopback_without_a_key_is_refused(tmp_path: Path) -> None:
    result = run_modelrepo("serve", "--root", str(tmp_path), "--host", "0.0.0.0", "--port", "0")
    assert result.returncode == 1
    assert "refusing to listen on 0.0.0.0 without an API key" in result.stderr


def test_the_cli_talks_to_a_running_service(served: Served) -> None:
    served.drop("exp1/run1/model.bin", MODEL)
    [artifact] = wait_for(lambda: artifacts_of(served, "run1"), timeout=60)
    registered = run_modelrepo(
        "register", "exp1", str(artifact["runArtifactId"]), "--by", "alice", "--url", served.url, "--json"
    )
    assert registered.returncode == 0, registered.stderr
    assert '"version": 1' in registered.stdout
    missing = run_modelrepo("show", "exp1", "7", "--url", served.url)
    assert missing.returncode == 1
    assert missing.stderr.strip() == "modelrepo: error: experiment 'exp1' has no version 7 (HTTP 404)"


def test_every_mutating_route_refuses_a_request_without_the_key(served_with_key: Served) -> None:
    from modelrepo.api import ROUTES

    served = served_with_key
    served.drop("exp1/run1/model.bin", MODEL)
    [artifact] = wait_for(lambda: artifacts_of(served, "run1"), timeout=60)
    body = {"experimentId": "exp1", "runArtifactId": artifact["runArtifactId"], "registeredBy": "alice"}
    assert served.request("POST", "/api/register", body).status == 201
    before = served.request("GET", "/api/experiments/exp1/audit").json()

    valid_bodies = {
        "/api/register": body,
        "/api/experiments/{experimentId}/deployments": {"version": 1, "target": "production", "deployedBy": "m"},
        "/api/experiments/{experimentId}/deployments/{target}/rollback": {"deployedBy": "m"},
        "/api/experiments/{experimentId}/models/{version}/tags/{key}": {"value": "v", "by": "m"},
        "/api/experiments/{experimentId}": {"description": "mine now", "by": "m"},
        "/api/experiments/{experimentId}/tags/{key}": {"value": "v", "by": "m"},
        "/api/experiments/{experimentId}/models/{version}": {"description": "mine now", "by": "m"},
        "/api/experiments/{experimentId}/models/{version}/approval": {"status": "approved", "by": "m"},
        "/api/experiments/{experimentId}/models/{version}/archive": {"by": "m"},
        "/api/experiments/{experimentId}/models/{version}/restore": {"by": "m"},
        "/api/experiments/{experimentId}/targets/{target}": {"requireApproval": True, "by": "m"},
    }
    mutating = [r for r in ROUTES if r.method in ("POST", "PUT", "DELETE", "PATCH")]
    # Each one is tried with a body that would succeed with the key: no route is left out.
    assert {r.template for r in mutating if r.body is not None} <= set(valid_bodies)
    for route in mutating:
        path = (
            route.template.replace("{experimentId}", "exp1")
            .replace("{version}", "1")
            .replace("{target}", "production")
            .replace("{key}", "stage")
        )
        if route.method == "DELETE":
            path += "?by=mallory"
        answer = served.request(route.method, path, valid_bodies.get(route.template), authorized=False)
        assert answer.status == 401, (route.method, route.template, answer.status)
    assert served.request("GET", "/api/experiments/exp1/audit").json() == before  # nothing was written
    assert [m["version"] for m in served.request("GET", "/api/experiments/exp1/models").json()["items"]] == [1]
