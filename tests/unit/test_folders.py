"""A version is a model folder: every current artifact of a run under a prefix, pinned file by file
beside a manifest, listed, served one by one and as one tar archive."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from datetime import timedelta
from typing import Any

import pytest

from modelrepo import collect
from modelrepo.adapters.memory import MemoryArtifactStore, MemoryMetadataStore
from modelrepo.api import Api, Request, Response
from modelrepo.errors import Conflict, InvalidInput, NotFound, Unprocessable
from modelrepo.service import ModelRepository
from tests.unit.conftest import EPOCH, FAST_RETRY, record

FOLDER = {
    "MLmodel": b"flavors:\n  python_function: {}\n",
    "model.pkl": b"pickled weights " * 1000,
    "code/predict.py": b"def predict(x):\n    return x\n",
    "naïve name.txt": b"unicode path",
}


def drop_folder(
    repo: ModelRepository, run: str = "run1", experiment: str = "exp1", files: dict[str, bytes] = FOLDER
) -> None:
    for path, data in files.items():
        record(repo, f"{experiment}/{run}/model/{path}", data)
    record(repo, f"{experiment}/{run}/metrics.json", b"{}")  # beside the folder, not in it


def call(api: Api, method: str, path: str, body: Any = None) -> Response:
    payload = json.dumps(body).encode() if body is not None else b""
    return api.handle(Request(method, path, {}, {"content-type": "application/json"}, payload))


def drained(response: Response) -> bytes:
    assert response.stream is not None, response.body
    try:
        return b"".join(response.stream)
    finally:
        response.stream.close()


def test_a_folder_registers_as_one_version_and_reads_back_exactly(repo: ModelRepository) -> None:
    api = Api(repo)
    drop_folder(repo)
    answer = call(
        api,
        "POST",
        "/api/register",
        {"experimentId": "exp1", "runId": "run1", "prefix": "model/", "registeredBy": "alice"},
    )
    assert answer.status == 201, answer.body
    version = answer.json()
    assert (version["files"], version["size"], version["artifactName"], version["runArtifactId"]) == (
        4,
        sum(len(d) for d in FOLDER.values()),
        "model/",
        None,
    )
    listed = call(api, "GET", "/api/experiments/exp1/models/1/files").json()["items"]
    assert {e["path"]: (e["sha256"], e["size"]) for e in listed} == {
        path: (hashlib.sha256(data).hexdigest(), len(data)) for path, data in FOLDER.items()
    }
    manifest_digest = hashlib.sha256(
        json.dumps(
            {"files": sorted(listed, key=lambda e: e["path"])},
            sort_keys=True,
            separators=(",", ":"),
            ensure_ascii=False,
        ).encode()
    ).hexdigest()
    assert version["sha256"] == manifest_digest, "the version names its manifest by digest"
    one = call(api, "GET", "/api/experiments/exp1/models/1/files/code/predict.py")
    assert (one.status, drained(one)) == (200, FOLDER["code/predict.py"])
    assert one.headers["ETag"] == f'"{hashlib.sha256(FOLDER["code/predict.py"]).hexdigest()}"'
    encoded = call(api, "GET", "/api/experiments/exp1/models/1/files/na%C3%AFve%20name.txt")
    assert drained(encoded) == b"unicode path"
    assert call(api, "GET", "/api/experiments/exp1/models/1/files/missing.txt").status == 404

    archive = call(api, "GET", "/api/experiments/exp1/models/1/download")
    assert (archive.status, archive.headers["Content-Type"]) == (200, "application/x-tar")
    data = drained(archive)
    assert len(data) == int(archive.headers["Content-Length"])
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        read = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}  # type: ignore[union-attr]
    assert read == FOLDER


def test_files_are_pinned_once_and_shared_between_versions(repo: ModelRepository) -> None:
    drop_folder(repo, "run1")
    drop_folder(repo, "run2", files={**FOLDER, "model.pkl": b"retrained"})
    first = repo.register_folder("exp1", "run1", "model/", "alice")
    second = repo.register_folder("exp1", "run2", "model/", "alice")
    again = repo.register_folder("exp1", "run1", "model/", "alice")
    assert (first.version, second.version, again.version) == (1, 2, 3)
    assert first.sha256 == again.sha256 != second.sha256
    digests, _ = repo.artifacts.list_pinned()
    # 4 files of run1, 1 new file of run2, 2 manifests: every file once.
    assert len(digests) == 4 + 1 + 2


def test_a_file_overwritten_after_it_was_recorded_registers_nothing(repo: ModelRepository) -> None:
    drop_folder(repo)
    repo.artifacts.put("exp1/run1/model/model.pkl", io.BytesIO(b"changed under our feet"))  # not recorded yet
    with pytest.raises(Conflict, match="overwritten"):
        repo.register_folder("exp1", "run1", "model/", "alice")
    assert repo.list_models("exp1").items == []


def test_folder_prefixes_and_limits_are_checked(repo: ModelRepository, monkeypatch: pytest.MonkeyPatch) -> None:
    drop_folder(repo)
    for prefix in ("model", "../model/", "/model/", "model//"):
        with pytest.raises(InvalidInput):
            repo.register_folder("exp1", "run1", prefix, "alice")
    with pytest.raises(NotFound, match="no current artifacts under 'weights/'"):
        repo.register_folder("exp1", "run1", "weights/", "alice")
    monkeypatch.setattr("modelrepo.commands.versions.MAX_VERSION_FILES", 3)
    with pytest.raises(Unprocessable, match="at most 3 files"):
        repo.register_folder("exp1", "run1", "model/", "alice")
    monkeypatch.setattr("modelrepo.commands.versions.MAX_VERSION_FILES", 100)
    assert repo.register_folder("exp1", "run1", "", "alice").files == 5, "'' takes the whole run"


def test_an_idempotency_key_binds_to_the_folder_it_registered(repo: ModelRepository) -> None:
    drop_folder(repo)
    first = repo.register_folder("exp1", "run1", "model/", "alice", idempotency_key="k1")
    assert repo.register_folder("exp1", "run1", "model/", "alice", idempotency_key="k1") == first
    with pytest.raises(Conflict, match="folder"):
        repo.register_folder("exp1", "run1", "model/code/", "alice", idempotency_key="k1")


def test_single_file_versions_list_one_file(repo: ModelRepository) -> None:
    api = Api(repo)
    artifact = record(repo, "exp1/run1/weights.onnx", b"onnx bytes").artifact
    assert artifact is not None
    repo.register_model("exp1", artifact.run_artifact_id, "alice")
    [entry] = call(api, "GET", "/api/experiments/exp1/models/1/files").json()["items"]
    assert (entry["path"], entry["size"]) == ("weights.onnx", 10)
    assert drained(call(api, "GET", "/api/experiments/exp1/models/1/files/weights.onnx")) == b"onnx bytes"


def test_deleting_a_folder_version_releases_its_files_but_not_shared_ones(artifacts: MemoryArtifactStore) -> None:
    clock = [EPOCH]
    repo = ModelRepository(artifacts, MemoryMetadataStore(), retry=FAST_RETRY, now=lambda: clock[0])
    drop_folder(repo, "run1")
    drop_folder(repo, "run2", files={"model.pkl": FOLDER["model.pkl"], "extra.bin": b"only in run2"})
    repo.register_folder("exp1", "run1", "model/", "alice")
    kept = repo.register_folder("exp1", "run2", "model/", "alice")
    repo.delete_version("exp1", 1, "bob")
    clock[0] += collect.LEASE + timedelta(seconds=1)
    report = collect.collect(repo.context)
    assert report.released == 3 + 1, "three files only version 1 had, and its manifest"
    assert [e.path for e in repo.manifest(kept).files] == ["extra.bin", "model.pkl"]
    for entry in repo.manifest(kept).files:
        with artifacts.open_pinned(entry.sha256) as stream:
            assert hashlib.sha256(stream.read()).hexdigest() == entry.sha256


def test_a_key_with_a_window_replays_within_it_and_registers_again_after(artifacts: MemoryArtifactStore) -> None:
    """What an MLflow client's retries need: the same request within the window is one version."""
    clock = [EPOCH]
    repo = ModelRepository(artifacts, MemoryMetadataStore(), retry=FAST_RETRY, now=lambda: clock[0])
    drop_folder(repo)
    window = timedelta(minutes=5)
    first = repo.register_folder("exp1", "run1", "model/", "alice", "same-request", idempotency_window=window)
    clock[0] += timedelta(minutes=4)
    assert repo.register_folder("exp1", "run1", "model/", "alice", "same-request", idempotency_window=window) == first
    clock[0] += timedelta(minutes=2)
    second = repo.register_folder("exp1", "run1", "model/", "alice", "same-request", idempotency_window=window)
    assert second.version == 2, "past its window the request is a new one"
    assert repo.register_folder("exp1", "run1", "model/", "alice", "same-request", idempotency_window=window) == second
