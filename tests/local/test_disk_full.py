"""A full disk under `modelrepo serve`, for real: the root on a 16 MiB tmpfs that the test fills up.

Writes answer 507 naming the store that is full, a log line says so, nothing committed is lost, no
half-written temporary file stays behind, and once space returns the upload that arrived meanwhile
is recorded with no one lifting a finger.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

from tests.local.conftest import Answer, Served, fill_up, start_serve, stop_serve, wait_for

MODEL = os.urandom(512 * 1024)
LATE = os.urandom(256 * 1024)


def artifacts_of(served: Served, run: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = served.request("GET", f"/api/runs/{run}/artifacts").json()["items"]
    return items


def register(served: Served, artifact: dict[str, Any]) -> Answer:
    body = {"experimentId": "exp1", "runArtifactId": artifact["runArtifactId"], "registeredBy": "alice"}
    return served.request("POST", "/api/register", body)


def temp_files(root: Path) -> list[Path]:
    return sorted(root.rglob(".modelrepo-tmp-*"))


def assert_out_of_space(answer: Answer, store: str) -> None:
    assert answer.status == 507, (answer.status, answer.body)
    assert answer.headers["Content-Type"] == "application/problem+json"
    detail = answer.json()["detail"]
    assert store in detail and "out of space" in detail, detail


def test_a_full_disk_answers_507_loses_nothing_and_recovers_by_itself(small_disk: Path) -> None:
    root = small_disk / "root"
    served = start_serve(root)
    try:
        served.drop("exp1/run1/model.bin", MODEL)
        [first] = wait_for(lambda: artifacts_of(served, "run1"), timeout=60)
        assert register(served, first).status == 201  # version 1: its bytes are pinned
        served.drop("exp1/run2/other.bin", MODEL[::-1])
        [second] = wait_for(lambda: artifacts_of(served, "run2"), timeout=60)
        staged = root / "staging" / "late.bin"  # prepared on the same disk, moved in once it is full
        staged.parent.mkdir()
        staged.write_bytes(LATE)
        (root / "artifacts" / "exp1" / "run3").mkdir()

        filler = fill_up(small_disk)

        # Registering new bytes needs space: a pin lease in the metadata database first, then the bytes.
        assert_out_of_space(register(served, second), "the metadata database")
        tag = served.request("PUT", "/api/experiments/exp1/models/1/tags/stage", {"value": "gold", "by": "carol"})
        assert_out_of_space(tag, "the metadata database")  # a metadata write needs space
        os.replace(staged, root / "artifacts" / "exp1" / "run3" / "late.bin")  # an upload arrives meanwhile
        wait_for(lambda: any("cannot record uploads" in line and "out of space" in line for line in served.log), 60)
        assert artifacts_of(served, "run3") == []
        assert temp_files(root) == []  # nothing half-written left behind

        filler.unlink()  # space returns; nobody runs anything

        [late] = wait_for(lambda: artifacts_of(served, "run3"), timeout=60)
        assert (late["size"], late["sha256"]) == (len(LATE), hashlib.sha256(LATE).hexdigest())
        assert register(served, second).status == 201
        tag = served.request("PUT", "/api/experiments/exp1/models/1/tags/stage", {"value": "gold", "by": "carol"})
        assert tag.status == 200
        versions = served.request("GET", "/api/experiments/exp1/models").json()["items"]
        assert [(v["version"], v["sha256"]) for v in versions] == [
            (2, second["sha256"]),
            (1, first["sha256"]),
        ]  # nothing committed was lost
        assert served.request("GET", "/api/experiments/exp1/models/1/download").body == MODEL
        assert temp_files(root) == []
    finally:
        stop_serve(served)
