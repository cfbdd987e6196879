"""Rule 1: uploads are recorded exactly once, newest wins, bad keys become rejections."""

from __future__ import annotations

import hashlib
import io
from datetime import timedelta

import pytest

from modelrepo.adapters.memory import MemoryArtifactStore
from modelrepo.events import ObjectCreated
from modelrepo.service import ModelRepository, Outcome
from tests.unit.conftest import EPOCH, record, upload

KEY = "exp1/run1/model.bin"


def audit_actions(repo: ModelRepository, run_id: str) -> list[str]:
    return [entry.action for entry in repo.run_audit(run_id, limit=1000).items]


def test_one_event_replayed_ten_times_gives_one_artifact(repo: ModelRepository) -> None:
    event = upload(repo, KEY, b"weights")
    outcomes = [repo.record_artifact(event).outcome for _ in range(10)]
    assert outcomes == [Outcome.RECORDED] + [Outcome.DUPLICATE] * 9
    artifacts = repo.list_run_artifacts("run1")
    assert len(artifacts) == 1
    artifact = artifacts[0]
    assert (artifact.experiment_id, artifact.run_id, artifact.name, artifact.key) == ("exp1", "run1", "model.bin", KEY)
    assert artifact.size == 7
    assert artifact.sha256 == hashlib.sha256(b"weights").hexdigest()
    assert audit_actions(repo, "run1") == ["artifact.recorded"]


def test_the_digest_is_the_sha256_of_the_uploaded_bytes(repo: ModelRepository) -> None:
    data = b"x" * (3 * 1024 * 1024 + 5)
    result = record(repo, KEY, data)
    assert result.artifact is not None
    assert result.artifact.sha256 == hashlib.sha256(data).hexdigest()
    assert result.artifact.size == len(data)


def test_a_reupload_is_a_new_artifact_and_becomes_current(repo: ModelRepository) -> None:
    first = record(repo, KEY, b"v1").artifact
    second = record(repo, KEY, b"v2 is longer").artifact
    assert first is not None and second is not None
    assert first.run_artifact_id != second.run_artifact_id
    assert [a.run_artifact_id for a in repo.list_run_artifacts("run1")] == [second.run_artifact_id]
    assert repo.get_artifact(first.run_artifact_id) == first  # history stays addressable
    assert audit_actions(repo, "run1") == ["artifact.recorded", "artifact.recorded"]


def test_an_older_event_arriving_late_never_replaces_the_newer(repo: ModelRepository) -> None:
    older = upload(repo, KEY, b"older", sequencer="0055AEBA5E0000000A")
    newer = upload(repo, KEY, b"newer", sequencer="0055AEBA5E0000000B")
    assert repo.record_artifact(newer).outcome is Outcome.RECORDED
    assert repo.record_artifact(older).outcome is Outcome.STALE
    current = repo.list_run_artifacts("run1")
    assert [a.etag for a in current] == [newer.etag]


def test_ordering_falls_back_to_upload_time_without_sequencers(
    repo: ModelRepository, artifacts: MemoryArtifactStore
) -> None:
    newer_info = artifacts.replace_raw(KEY, b"newer")
    newer = ObjectCreated(KEY, newer_info.etag, 5, EPOCH + timedelta(seconds=10))
    # The digest comes with the event, so only the ordering rule can keep it out.
    older = ObjectCreated(KEY, "etag-of-an-overwritten-version", 5, EPOCH, sha256="0" * 64)
    assert repo.record_artifact(newer).outcome is Outcome.RECORDED
    assert repo.record_artifact(older).outcome is Outcome.STALE
    assert [a.etag for a in repo.list_run_artifacts("run1")] == [newer_info.etag]


def test_an_event_whose_object_was_overwritten_before_reading_is_stale(repo: ModelRepository) -> None:
    older = upload(repo, KEY, b"older")  # no sequencer: the read with its ETag tells
    upload(repo, KEY, b"newer")
    assert repo.record_artifact(older).outcome is Outcome.STALE
    assert repo.list_run_artifacts("run1") == []


def test_an_event_whose_object_was_deleted_is_gone(repo: ModelRepository) -> None:
    event = upload(repo, KEY, b"short-lived")
    repo.artifacts.delete(KEY)
    assert repo.record_artifact(event).outcome is Outcome.GONE
    assert repo.list_run_artifacts("run1") == []


def test_uploading_older_bytes_again_makes_them_current_again(repo: ModelRepository) -> None:
    a = record(repo, KEY, b"A", sequencer="01").artifact
    b = record(repo, KEY, b"B", sequencer="02").artifact
    again = record(repo, KEY, b"A", sequencer="03")
    assert a is not None and b is not None
    assert again.outcome is Outcome.RECORDED
    assert again.artifact == a  # same object version, same artifact
    assert [x.run_artifact_id for x in repo.list_run_artifacts("run1")] == [a.run_artifact_id]
    assert audit_actions(repo, "run1") == ["artifact.recorded", "artifact.recorded", "artifact.current"]


def test_artifacts_of_a_run_are_listed_per_key(repo: ModelRepository) -> None:
    for name in ("b.bin", "a/model.onnx", "c d+e.pt"):
        record(repo, f"exp1/run1/{name}", name.encode())
    record(repo, "exp1/run2/other.bin", b"x")
    assert [a.name for a in repo.list_run_artifacts("run1")] == ["a/model.onnx", "b.bin", "c d+e.pt"]


@pytest.mark.parametrize(
    ("key", "reason"),
    [
        ("loose-file.bin", "does not fit the layout"),
        ("exp1/run1/../../etc/passwd", "'..' path segment"),
        ("exp1/run1/a\\b.bin", "backslash"),
        ("exp1/run1/bell\x07.bin", "control character U+0007"),
        ("exp1/run1/txt.\u202eexe", "bidirectional control character U+202E"),
        ("exp1/run1/" + "x" * 1025, "1025 UTF-8 bytes"),
        ("exp 1/run1/model.bin", "experimentId"),
    ],
)
def test_keys_outside_the_layout_are_recorded_as_rejections(repo: ModelRepository, key: str, reason: str) -> None:
    event = ObjectCreated(key, "etag-1", 3, EPOCH)
    results = [repo.record_artifact(event) for _ in range(3)]
    assert {r.outcome for r in results} == {Outcome.REJECTED}
    rejections = repo.list_rejections().items
    assert len(rejections) == 1  # replays do not pile up
    assert rejections[0].key == key
    assert reason in rejections[0].reason
    assert repo.list_run_artifacts("run1") == []


def test_a_rejected_key_with_broken_unicode_is_stored_printably(repo: ModelRepository) -> None:
    repo.record_artifact(ObjectCreated("exp1/run1/\udcff.bin", "e", 1, EPOCH))
    [rejection] = repo.list_rejections().items
    assert rejection.key == "exp1/run1/\\udcff.bin"
    assert "UTF-8" in rejection.reason


def test_rejections_page_with_cursors(repo: ModelRepository) -> None:
    for n in range(7):
        repo.record_artifact(ObjectCreated(f"bad-{n}", "e", 1, EPOCH))
    first = repo.list_rejections(limit=4)
    assert len(first.items) == 4 and first.next_cursor
    second = repo.list_rejections(limit=4, cursor=first.next_cursor)
    assert len(second.items) == 3 and second.next_cursor is None
    assert {r.key for r in first.items + second.items} == {f"bad-{n}" for n in range(7)}


def test_a_put_then_event_with_precomputed_digest_skips_the_read(
    repo: ModelRepository, artifacts: MemoryArtifactStore
) -> None:
    info = artifacts.put(KEY, io.BytesIO(b"bytes"))
    event = ObjectCreated(KEY, info.etag, 5, info.modified_at, sha256="f" * 64)
    artifacts.delete(KEY)  # a read would now fail with GONE
    result = repo.record_artifact(event)
    assert result.outcome is Outcome.RECORDED
    assert result.artifact is not None and result.artifact.sha256 == "f" * 64
