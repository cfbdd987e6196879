"""The reconcile sweep and dead-letter replay, on the fakes."""

from __future__ import annotations

import io
import threading
from datetime import UTC, datetime

from modelrepo.adapters.memory import MemoryArtifactStore
from modelrepo.errors import Throttled
from modelrepo.events import ObjectCreated
from modelrepo.ports import DeadLetter, DeadLetterQueue
from modelrepo.recovery import Reconciler, replay_dead_letters
from modelrepo.retry import RetryPolicy
from modelrepo.service import ModelRepository, Outcome
from tests.fixtures.faults import FaultyMetadataStore
from tests.unit.conftest import FAST_RETRY, record


def crash_after_upload(repo: ModelRepository, key: str, data: bytes) -> None:
    """The object is written; the process dies before the table write (no event is ever handled)."""
    repo.artifacts.put(key, io.BytesIO(data))


def test_objects_without_records_are_recorded_once(repo: ModelRepository) -> None:
    crash_after_upload(repo, "exp1/run1/a.bin", b"a")
    crash_after_upload(repo, "exp1/run2/b.bin", b"b")
    record(repo, "exp1/run1/c.bin", b"c")  # already recorded normally
    crash_after_upload(repo, "stray.bin", b"x")

    first = Reconciler(repo).run()
    assert (first.objects_scanned, first.recorded, first.rejected, first.complete) == (4, 2, 1, True)
    assert [a.name for a in repo.list_run_artifacts("run1")] == ["a.bin", "c.bin"]
    assert [a.name for a in repo.list_run_artifacts("run2")] == ["b.bin"]
    assert [e.actor for e in repo.run_audit("run2").items] == ["reconcile"]

    again = Reconciler(repo).run()
    assert (again.recorded, again.vanished, again.complete) == (0, 0, True)
    assert len(repo.run_audit("run1").items) == 2  # nothing recorded twice


def test_records_whose_object_vanished_are_flagged_once_and_restored_by_a_reupload(repo: ModelRepository) -> None:
    artifact = record(repo, "exp1/run1/model.bin", b"weights").artifact
    record(repo, "exp1/run1/kept.bin", b"kept")
    assert artifact is not None
    repo.register_model("exp1", artifact.run_artifact_id, "alice")
    repo.artifacts.delete("exp1/run1/model.bin")

    report = Reconciler(repo).run()
    assert (report.runs_checked, report.vanished) == (1, 1)
    flagged = {a.name: a.vanished_at for a in repo.list_run_artifacts("run1")}
    assert flagged["model.bin"] is not None and flagged["kept.bin"] is None
    assert Reconciler(repo).run().vanished == 0  # flagged once
    with repo.open_model("exp1", 1) as (_, stream):  # the registered version never depended on it
        assert stream.read() == b"weights"

    restored = record(repo, "exp1/run1/model.bin", b"weights")  # the same bytes come back
    assert restored.outcome is Outcome.RECORDED
    assert {a.name: a.vanished_at for a in repo.list_run_artifacts("run1")}["model.bin"] is None
    actions = [e.action for e in repo.run_audit("run1").items]
    assert actions[-2:] == ["artifact.vanished", "artifact.restored"]


def test_a_sweep_out_of_time_resumes_where_it_stopped(repo: ModelRepository) -> None:
    for n in range(7):
        crash_after_upload(repo, f"exp1/run{n}/m.bin", b"m%d" % n)
    ticks = iter(range(100))
    reconciler = Reconciler(repo, page_size=2, clock=lambda: float(next(ticks)))
    reports = []
    while True:
        report = reconciler.run(budget_seconds=1.5)  # about one page per call
        reports.append(report)
        if report.complete:
            break
    assert len(reports) > 3
    assert sum(r.recorded for r in reports) == 7
    assert sum(r.objects_scanned for r in reports) == 7  # each object looked at once
    assert all(repo.list_run_artifacts(f"run{n}") for n in range(7))


def test_a_sweep_alongside_live_uploads_records_each_upload_once(repo: ModelRepository) -> None:
    stop = threading.Event()

    def sweep() -> None:
        while not stop.is_set():
            Reconciler(repo, page_size=3).run()

    sweeper = threading.Thread(target=sweep)
    sweeper.start()
    try:
        for n in range(40):
            record(repo, f"exp1/live/m{n:02d}.bin", b"v%d" % n)
    finally:
        stop.set()
        sweeper.join()
    assert len(repo.list_run_artifacts("live")) == 40
    recorded = [e for e in repo.run_audit("live", limit=1000).items if e.action == "artifact.recorded"]
    assert len(recorded) == 40


class ListDeadLetters(DeadLetterQueue):
    """A fake queue: letters in a list."""

    def __init__(self, letters: list[DeadLetter]) -> None:
        self.letters = letters

    def peek(self, limit: int = 100) -> list[DeadLetter]:
        return self.letters[:limit]

    def remove(self, letter: DeadLetter) -> None:
        self.letters.remove(letter)


def letter_for(repo: ModelRepository, key: str, data: bytes, handle: str) -> DeadLetter:
    info = repo.artifacts.put(key, io.BytesIO(data))
    return DeadLetter(handle, "test", (ObjectCreated.from_object(info, "poison-test"),), datetime.now(UTC), "boom")


def test_replay_records_parked_uploads_and_keeps_what_still_fails(artifacts: MemoryArtifactStore) -> None:
    store = FaultyMetadataStore()
    repo = ModelRepository(artifacts, store, retry=FAST_RETRY)
    good = letter_for(repo, "exp1/run1/a.bin", b"a", "h1")
    undecodable = DeadLetter("h2", "test", (), None, "not JSON")
    queue = ListDeadLetters([good, undecodable])

    outcomes = replay_dead_letters(repo, queue)
    assert [(o.handle, o.replayed, o.outcomes) for o in outcomes] == [("h1", True, ["recorded"]), ("h2", False, [])]
    assert "cannot be decoded" in (outcomes[1].error or "")
    assert queue.letters == [undecodable]
    assert [a.name for a in repo.list_run_artifacts("run1")] == ["a.bin"]

    still_failing = letter_for(repo, "exp1/run1/b.bin", b"b", "h3")
    queue.letters.append(still_failing)

    def refuse(writes: object, inner: object) -> None:
        raise Throttled("the table is still down")

    store.fault = refuse
    # A backend that stays down outlasts the retry deadline: the letter stays parked, with the reason.
    impatient = ModelRepository(artifacts, store, retry=RetryPolicy(deadline_seconds=0.05))
    [kept, failed] = replay_dead_letters(impatient, queue)
    assert (kept.handle, kept.replayed) == ("h2", False)
    assert (failed.handle, failed.replayed) == ("h3", False)
    assert "still contended" in (failed.error or "")
    assert queue.letters == [undecodable, still_failing]
