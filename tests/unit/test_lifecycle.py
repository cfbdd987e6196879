"""The model lifecycle on the core: experiments as models, aliases, approval and its gate, metadata,
search, archive and delete. Every change is audited and evented like any other."""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

import pytest

from modelrepo import collect, outbox, tables
from modelrepo.adapters.memory import MemoryArtifactStore, MemoryMetadataStore
from modelrepo.api import Api, Request, Response
from modelrepo.dispatch import Dispatcher
from modelrepo.errors import Conflict, Gone, InvalidInput, NotFound, Unprocessable
from modelrepo.model import ApprovalStatus, Lineage
from modelrepo.ports import Write
from modelrepo.projections import Indexer
from modelrepo.service import ModelRepository, VersionFilter, VersionMetadata
from tests.unit.conftest import EPOCH, FAST_RETRY, record


def versions_of(repo: ModelRepository, experiment: str = "exp1", limit: int = 5) -> str:
    artifact = record(repo, f"{experiment}/run-{experiment}/model.bin", f"bytes of {experiment}".encode()).artifact
    assert artifact is not None
    for _ in range(limit):
        repo.register_model(experiment, artifact.run_artifact_id, "alice")
    return artifact.run_artifact_id


def index(repo: ModelRepository) -> int:
    """What the index subscriber does on every host after commits: follow the outbox."""
    return Dispatcher(repo.metadata, Indexer(repo.metadata)).sweep()


class ListingCountingMetadataStore(MemoryMetadataStore):
    """The in-memory store, noting every transaction that writes a row of the experiments listing."""

    def __init__(self) -> None:
        super().__init__()
        self.listing_writes = 0

    def transact(self, writes: Sequence[Write]) -> None:
        self.listing_writes += any(w.partition == tables.EXPERIMENTS_PARTITION for w in writes)
        super().transact(writes)


def call(api: Api, method: str, path: str, body: Any = None, **query: str) -> Response:
    payload = json.dumps(body).encode() if body is not None else b""
    return api.handle(Request(method, path, query, {"content-type": "application/json"}, payload))


# --- experiments are the models --------------------------------------------------------------------


def test_an_experiment_summarises_its_versions_and_carries_a_description_and_tags(repo: ModelRepository) -> None:
    versions_of(repo, limit=3)
    summary = repo.get_experiment("exp1")
    assert (summary.latest_version, summary.version_count) == (3, 3)
    assert summary.created_at is not None and summary.updated_at is not None
    described = repo.describe_experiment("exp1", "churn model", "bob")
    assert described.description == "churn model" and described.created_at == summary.created_at
    assert repo.set_experiment_tag("exp1", "team", "ml", "bob").tags == {"team": "ml"}
    assert repo.delete_experiment_tag("exp1", "team", "bob").tags == {}
    with pytest.raises(NotFound, match="no tag 'team'"):
        repo.delete_experiment_tag("exp1", "team", "bob")
    types = [e.type for e in repo.experiment_events("exp1").items[-3:]]
    assert types == [outbox.EXPERIMENT_UPDATED] * 3
    with pytest.raises(NotFound):
        repo.get_experiment("nothing-here")


def test_the_listing_holds_every_experiment_with_an_artifact_or_a_version_one_query_a_page(
    repo: ModelRepository,
) -> None:
    for name in ("b-exp", "a-exp", "c-exp"):
        versions_of(repo, name, limit=2)
    record(repo, "d-exp/run9/weights.bin", b"only an artifact")
    index(repo)
    listed = repo.list_experiments(limit=2)
    assert [e.experiment_id for e in listed.items] == ["a-exp", "b-exp"]
    rest = repo.list_experiments(limit=2, cursor=listed.next_cursor)
    assert [(e.experiment_id, e.latest_version) for e in rest.items] == [("c-exp", 2), ("d-exp", None)]
    assert rest.next_cursor is None
    assert [e.experiment_id for e in repo.list_experiments(prefix="b").items] == ["b-exp"]
    assert repo.get_experiment("d-exp").created_at is not None  # known from its artifact
    repo.describe_experiment("a-exp", "first", "bob")
    index(repo)
    assert repo.list_experiments(limit=1).items[0].description == "first"


def test_an_upload_lists_its_experiment_itself_and_the_index_keeps_out_of_runs(repo: ModelRepository) -> None:
    """Every upload is a run of its own in the usual layout: the index subscriber neither reads
    runs' events nor keeps a cursor in them, because the upload lists its experiment."""
    uploads = [record(repo, f"new-exp/run{n}/weights.bin", f"weights {n}".encode()) for n in range(3)]
    [listed] = repo.list_experiments().items  # no index subscriber has run
    first = uploads[0].artifact
    assert first is not None
    assert (listed.experiment_id, listed.latest_version, listed.created_at) == ("new-exp", None, first.recorded_at)
    assert repo.get_experiment("new-exp").created_at == first.recorded_at
    assert index(repo) == 0
    cursor = tables.dispatch_row(Indexer.subscriber)
    assert [repo.metadata.get(tables.run_partition(f"run{n}"), cursor) for n in range(3)] == [None] * 3
    assert Dispatcher(repo.metadata, Indexer(repo.metadata)).drain(tables.run_partition("run0")) == 0
    versions_of(repo, "new-exp", limit=1)  # its first change: the index's summary takes over
    index(repo)
    [summarised] = repo.list_experiments().items
    assert (summarised.latest_version, summarised.version_count) == (1, 1)


def test_a_process_lists_an_experiment_once_however_many_runs_upload_to_it(artifacts: MemoryArtifactStore) -> None:
    metadata = ListingCountingMetadataStore()
    repo = ModelRepository(artifacts, metadata, retry=FAST_RETRY)
    for n in range(5):
        record(repo, f"exp1/run{n}/model.bin", f"model {n}".encode())
    assert metadata.listing_writes == 1
    other_host = ModelRepository(artifacts, metadata, retry=FAST_RETRY)
    record(other_host, "exp1/run9/model.bin", b"model 9")
    assert metadata.listing_writes == 2  # a fresh process tries once; the row is there, nothing changes
    assert [e.experiment_id for e in repo.list_experiments().items] == ["exp1"]


# --- approval and the gate -------------------------------------------------------------------------


def test_versions_start_pending_and_every_decision_is_audited_and_evented(repo: ModelRepository) -> None:
    versions_of(repo, limit=1)
    assert repo.get_model("exp1", 1).approval.status is ApprovalStatus.PENDING
    approved = repo.set_approval("exp1", 1, ApprovalStatus.APPROVED, "carol", "looks good")
    assert (approved.approval.status, approved.approval.by, approved.approval.comment) == (
        "approved",
        "carol",
        "looks good",
    )
    rejected = repo.set_approval("exp1", 1, ApprovalStatus.REJECTED, "dave")
    assert rejected.approval.status is ApprovalStatus.REJECTED
    trail = repo.experiment_audit("exp1").items[-2:]
    assert [(a.action, a.details["to"]) for a in trail] == [
        ("model.approval_changed", "approved"),
        ("model.approval_changed", "rejected"),
    ]
    assert repo.experiment_events("exp1").items[-1].type == outbox.VERSION_APPROVAL_CHANGED


def test_a_repository_may_start_versions_approved(artifacts: MemoryArtifactStore) -> None:
    repo = ModelRepository(artifacts, MemoryMetadataStore(), retry=FAST_RETRY, default_approval=ApprovalStatus.APPROVED)
    versions_of(repo, limit=1)
    assert repo.get_model("exp1", 1).approval.status is ApprovalStatus.APPROVED


def test_a_gated_target_takes_only_approved_versions_on_deploy_and_rollback(repo: ModelRepository) -> None:
    versions_of(repo, limit=3)
    repo.deploy("exp1", 1, "production", "carol")  # not gated yet
    repo.set_target_policy("exp1", "production", require_approval=True, by="lead")
    with pytest.raises(
        Unprocessable, match=r"requires approved versions \(rule requireApproval\); version 2 of 'exp1' is pending"
    ):
        repo.deploy("exp1", 2, "production", "carol")
    repo.set_approval("exp1", 2, ApprovalStatus.APPROVED, "lead")
    repo.deploy("exp1", 2, "production", "carol")
    with pytest.raises(Unprocessable, match="version 1 of 'exp1' is pending"):
        repo.rollback("exp1", "production", "carol")  # back to 1, which was never approved
    repo.set_approval("exp1", 3, ApprovalStatus.REJECTED, "lead")
    with pytest.raises(Unprocessable, match="is rejected"):
        repo.deploy("exp1", 3, "production", "carol")
    assert repo.current_deployment("exp1", "production").version == 2
    assert repo.target_policy("exp1", "production").require_approval
    repo.deploy("exp1", 3, "staging", "carol")  # other targets have no such rule


# --- metadata --------------------------------------------------------------------------------------


def test_metadata_at_registration_and_later_with_write_once_fields(repo: ModelRepository) -> None:
    artifact = record(repo, "exp1/run1/model.bin", b"weights").artifact
    assert artifact is not None
    metadata = VersionMetadata(
        metrics={"auc": 0.91, "loss": 0.2},
        params={"lr": "0.01"},
        signature={"inputs": [{"name": "x", "type": "double"}]},
        lineage=Lineage(source_commit="abc1234", datasets=["s3://data/train.parquet"], notes="first try"),
    )
    model = repo.register_model("exp1", artifact.run_artifact_id, "alice", description="v1", metadata=metadata)
    assert (model.metrics, model.params, model.description) == ({"auc": 0.91, "loss": 0.2}, {"lr": "0.01"}, "v1")
    assert model.lineage is not None and model.lineage.datasets == ["s3://data/train.parquet"]
    with pytest.raises(Conflict, match="write-once"):
        repo.update_metadata("exp1", 1, VersionMetadata(metrics={"auc": 0.5}), "bob")
    updated = repo.update_metadata(
        "exp1", 1, VersionMetadata(description="v1, retrained", lineage=Lineage(notes="x")), "bob"
    )
    assert updated.description == "v1, retrained" and updated.metrics == {"auc": 0.91, "loss": 0.2}
    bare = repo.register_model("exp1", artifact.run_artifact_id, "alice")
    assert repo.update_metadata("exp1", bare.version, VersionMetadata(params={"lr": "0.1"}), "bob").params == {
        "lr": "0.1"
    }
    assert repo.experiment_audit("exp1").items[-1].details == {"fields": ["params"]}
    with pytest.raises(InvalidInput, match="signature is"):
        repo.update_metadata("exp1", 2, VersionMetadata(signature={"big": "x" * 70_000}), "bob")
    with pytest.raises(InvalidInput, match="finite"):
        repo.update_metadata("exp1", 2, VersionMetadata(metrics={"auc": float("nan")}), "bob")


# --- search ----------------------------------------------------------------------------------------


def test_versions_filter_by_status_tag_time_and_archive(repo: ModelRepository) -> None:
    versions_of(repo, limit=6)
    repo.set_tag("exp1", 2, "stage", "candidate", "bob")
    repo.set_tag("exp1", 5, "stage", "candidate", "bob")
    repo.set_approval("exp1", 5, ApprovalStatus.APPROVED, "lead")
    repo.archive("exp1", 6, "bob")

    def listed(**filters: Any) -> list[int]:
        return [m.version for m in repo.list_models("exp1", limit=100, where=VersionFilter(**filters)).items]

    assert listed() == [5, 4, 3, 2, 1]
    assert listed(archived=True) == [6, 5, 4, 3, 2, 1]
    assert listed(tags=(("stage", "candidate"),)) == [5, 2]
    assert listed(status=ApprovalStatus.APPROVED) == [5]
    assert listed(status=ApprovalStatus.PENDING, tags=(("stage", "candidate"),)) == [2]
    registered = repo.get_model("exp1", 3).registered_at
    assert listed(registered_before=registered + timedelta(microseconds=1)) == [3, 2, 1]
    assert listed(registered_after=registered + timedelta(days=1)) == []
    # Paging through a filter: pages of 1 find every match, each page one more.
    first = repo.list_models("exp1", limit=1, where=VersionFilter(tags=(("stage", "candidate"),)))
    second = repo.list_models(
        "exp1", limit=1, cursor=first.next_cursor, where=VersionFilter(tags=(("stage", "candidate"),))
    )
    assert [m.version for m in first.items + second.items] == [5, 2]


def test_search_across_experiments_follows_the_index(repo: ModelRepository) -> None:
    versions_of(repo, "exp1", limit=2)
    versions_of(repo, "exp2", limit=2)
    repo.set_tag("exp1", 2, "stage", "candidate", "bob")
    repo.set_tag("exp2", 1, "stage", "candidate", "bob")
    repo.set_approval("exp2", 1, ApprovalStatus.APPROVED, "lead")
    index(repo)
    found = repo.search_models(tags=(("stage", "candidate"),))
    assert [(m.experiment_id, m.version) for m in found.items] == [("exp1", 2), ("exp2", 1)]
    approved = repo.search_models(status=ApprovalStatus.APPROVED)
    assert [(m.experiment_id, m.version) for m in approved.items] == [("exp2", 1)]
    both = repo.search_models(tags=(("stage", "candidate"),), status=ApprovalStatus.PENDING)
    assert [(m.experiment_id, m.version) for m in both.items] == [("exp1", 2)]
    # A changed tag leaves the old index row behind as dead, never as a false hit.
    repo.set_tag("exp1", 2, "stage", "production", "bob")
    repo.archive("exp2", 1, "bob")
    index(repo)
    assert repo.search_models(tags=(("stage", "candidate"),)).items == []
    assert [m.version for m in repo.search_models(tags=(("stage", "production"),)).items] == [2]
    with pytest.raises(InvalidInput, match="needs a tag"):
        repo.search_models()


# --- archive and delete ----------------------------------------------------------------------------


def test_archived_versions_leave_latest_and_cannot_be_deployed(repo: ModelRepository) -> None:
    versions_of(repo, limit=3)
    repo.archive("exp1", 3, "bob")
    assert repo.latest_model("exp1").version == 2
    assert repo.get_experiment("exp1").latest_version == 2
    with pytest.raises(Unprocessable, match="archived"):
        repo.deploy("exp1", 3, "production", "carol")
    repo.deploy("exp1", 2, "production", "carol")
    with pytest.raises(Conflict, match="current deployment of production"):
        repo.archive("exp1", 2, "bob")
    assert repo.restore("exp1", 3, "bob").archived_at is None
    assert repo.latest_model("exp1").version == 3
    assert [e.type for e in repo.experiment_events("exp1").items[-3:]] == [
        outbox.VERSION_ARCHIVED,
        outbox.DEPLOYMENT_CREATED,
        outbox.VERSION_RESTORED,
    ]


def test_a_deleted_version_is_a_tombstone_whose_number_is_never_reused(repo: ModelRepository) -> None:
    artifact_id = versions_of(repo, limit=3)
    repo.deploy("exp1", 2, "production", "carol")
    with pytest.raises(Conflict, match="current deployment of production"):
        repo.delete_version("exp1", 2, "bob")
    deleted = repo.delete_version("exp1", 3, "bob", reason="leaked data")
    assert deleted.deleted is not None and deleted.deleted.reason == "leaked data"
    assert repo.get_model("exp1", 3).deleted is not None  # the record stays
    assert repo.latest_model("exp1").version == 2
    assert repo.get_experiment("exp1").version_count == 2
    with pytest.raises(Gone):
        repo.open_model("exp1", 3).__enter__()
    with pytest.raises(Gone):
        repo.set_tag("exp1", 3, "k", "v", "bob")
    with pytest.raises(Gone):
        repo.deploy("exp1", 3, "staging", "carol")
    assert repo.register_model("exp1", artifact_id, "alice").version == 4
    assert [a.action for a in repo.experiment_audit("exp1").items].count("model.deleted") == 1


def test_deleted_bytes_are_released_once_no_version_needs_them_and_their_lease_is_old(
    artifacts: MemoryArtifactStore,
) -> None:
    clock = [EPOCH]
    repo = ModelRepository(artifacts, MemoryMetadataStore(), retry=FAST_RETRY, now=lambda: clock[0])
    shared = record(repo, "exp1/run1/model.bin", b"shared bytes").artifact
    alone = record(repo, "exp1/run1/other.bin", b"bytes of one version").artifact
    assert shared is not None and alone is not None
    repo.register_model("exp1", shared.run_artifact_id, "alice")  # 1
    repo.register_model("exp1", alone.run_artifact_id, "alice")  # 2
    artifact2 = record(repo, "exp2/run2/model.bin", b"shared bytes").artifact
    assert artifact2 is not None
    repo.register_model("exp2", artifact2.run_artifact_id, "alice")  # the same digest, another experiment
    repo.delete_version("exp1", 1, "bob")
    repo.delete_version("exp1", 2, "bob")
    assert collect.collect(repo.context).released == 0, "leases are fresh: a registration may be in flight"
    clock[0] += collect.LEASE + timedelta(seconds=1)
    report = collect.collect(repo.context)
    assert (report.released, report.live_digests) == (1, 1)
    assert not artifacts.has_pinned(alone.sha256)
    assert artifacts.has_pinned(shared.sha256), "exp2's version still needs the shared bytes"
    with repo.open_model("exp2", 1) as (_, stream):
        assert stream.read() == b"shared bytes"
    # Registering the released bytes again pins them again.
    again = record(repo, "exp1/run3/other.bin", b"bytes of one version").artifact
    assert again is not None
    repo.register_model("exp1", again.run_artifact_id, "alice")
    with repo.open_model("exp1", 3) as (_, stream):
        assert stream.read() == b"bytes of one version"


# --- the HTTP API: @target wherever a version is taken ------------------------------------------------


def test_at_target_resolves_on_every_route_that_takes_a_version(repo: ModelRepository) -> None:
    api = Api(repo)
    versions_of(repo, limit=2)
    repo.deploy("exp1", 1, "production", "carol")
    version_routes = [r for r in __import__("modelrepo.api", fromlist=["ROUTES"]).ROUTES if "{version}" in r.template]
    assert version_routes, "there are routes that take a version"
    assert call(api, "GET", "/api/experiments/exp1/models/@production").json()["version"] == 1
    download = call(api, "GET", "/api/experiments/exp1/models/@production/download")
    assert download.status == 200 and download.stream is not None
    assert b"".join(download.stream) == b"bytes of exp1"
    download.stream.close()
    tagged = call(api, "PUT", "/api/experiments/exp1/models/@production/tags/stage", {"value": "live", "by": "bob"})
    assert (tagged.status, tagged.json()["version"]) == (200, 1)
    approved = call(
        api, "POST", "/api/experiments/exp1/models/@production/approval", {"status": "approved", "by": "lead"}
    )
    assert approved.json()["approval"]["status"] == "approved"
    patched = call(api, "PATCH", "/api/experiments/exp1/models/@production", {"description": "live one", "by": "bob"})
    assert patched.json()["description"] == "live one"
    assert call(api, "GET", "/api/experiments/exp1/models/latest/download").status == 200
    missing = call(api, "GET", "/api/experiments/exp1/models/@staging")
    assert (missing.status, "deployed to 'staging'" in missing.json()["detail"]) == (404, True)
    assert call(api, "GET", "/api/experiments/exp1/models/@Bad!").status == 400
    assert call(api, "DELETE", "/api/experiments/exp1/models/@production", by="bob").status == 409


def test_lifecycle_routes_answer_with_problems_for_mistakes(repo: ModelRepository) -> None:
    api = Api(repo)
    versions_of(repo, limit=2)
    assert call(api, "POST", "/api/experiments/exp1/models/1/approval", {"status": "maybe", "by": "x"}).status == 400
    assert call(api, "GET", "/api/experiments/exp1/models", status="maybe").status == 400
    assert call(api, "GET", "/api/experiments/exp1/models", archived="yes").status == 400
    assert call(api, "GET", "/api/experiments/exp1/models", registeredAfter="yesterday").status == 400
    assert call(api, "DELETE", "/api/experiments/exp1/models/1").status == 400  # who deletes?
    assert call(api, "DELETE", "/api/experiments/exp1/models/1", by="bob").status == 200
    gone = call(api, "GET", "/api/experiments/exp1/models/1/download")
    assert gone.status == 410 and gone.headers["Content-Type"] == "application/problem+json"
    assert call(api, "POST", "/api/experiments/exp1/models/1/archive", {"by": "bob"}).status == 410
    gated = call(api, "PUT", "/api/experiments/exp1/targets/production", {"requireApproval": True, "by": "lead"})
    assert gated.json()["requireApproval"] is True
    refused = call(
        api, "POST", "/api/experiments/exp1/deployments", {"version": 2, "target": "production", "deployedBy": "c"}
    )
    assert refused.status == 422 and "requireApproval" in refused.json()["detail"]
    assert call(api, "GET", "/api/search/models").status == 400
    assert call(api, "GET", "/api/experiments", prefix="bad prefix!").status == 400


def test_the_collector_never_takes_bytes_a_registration_has_leased(artifacts: MemoryArtifactStore) -> None:
    """The lease protocol, step by step: a collector that started before a lease sees it fresh."""
    clock = [EPOCH]
    repo = ModelRepository(artifacts, MemoryMetadataStore(), retry=FAST_RETRY, now=lambda: clock[0])
    info = artifacts.put("exp1/run1/model.bin", io.BytesIO(b"weights"))
    artifacts.pin(info.key, etag=info.etag, digest=__import__("hashlib").sha256(b"weights").hexdigest())
    digest = __import__("hashlib").sha256(b"weights").hexdigest()
    clock[0] += collect.LEASE * 2  # long after anyone pinned it: unreferenced and unleased
    collect.lease(repo.context, digest)  # a registration leases it now
    assert collect.collect(repo.context).released == 0
    assert artifacts.has_pinned(digest)
    assert repo.metadata.get(collect.PINS_PARTITION, collect.lease_row(digest)) is not None
    assert tables.EXPERIMENTS_PARTITION  # the mark phase read the (empty) experiments index


def test_a_registration_waits_out_a_release_in_progress_and_pins_the_bytes_again(
    artifacts: MemoryArtifactStore,
) -> None:
    """The other interleaving, made deterministic: the collector has claimed the digest and is
    deleting its bytes when a registration of the same bytes arrives."""
    import threading

    clock = [EPOCH]
    repo = ModelRepository(artifacts, MemoryMetadataStore(), retry=FAST_RETRY, now=lambda: clock[0])
    first = record(repo, "exp1/run1/model.bin", b"weights").artifact
    assert first is not None
    repo.register_model("exp1", first.run_artifact_id, "alice")
    repo.delete_version("exp1", 1, "bob")
    clock[0] += collect.LEASE * 2
    deleting, resume = threading.Event(), threading.Event()
    discard = artifacts.discard_pinned

    def slow_discard(digest: str) -> None:
        deleting.set()
        resume.wait(30)
        discard(digest)

    artifacts.discard_pinned = slow_discard  # type: ignore[method-assign]
    collector = threading.Thread(target=collect.collect, args=(repo.context,))
    collector.start()
    assert deleting.wait(30), "the collector claimed the digest and is deleting its bytes"
    second = record(repo, "exp2/run2/model.bin", b"weights").artifact
    assert second is not None
    registration: list[object] = []
    registering = threading.Thread(
        target=lambda: registration.append(repo.register_model("exp2", second.run_artifact_id, "carol"))
    )
    registering.start()
    registering.join(0.2)
    assert registration == [], "while the digest is claimed, the registration waits"
    resume.set()
    collector.join(30)
    registering.join(30)
    assert len(registration) == 1
    with repo.open_model("exp2", 1) as (_, stream):
        assert stream.read() == b"weights", "the bytes were pinned again after the release"


def test_a_deployment_taken_away_leaves_its_history_and_the_target_deployable(repo: ModelRepository) -> None:
    versions_of(repo, limit=2)
    repo.deploy("exp1", 1, "champion", "carol")
    removed = repo.remove_deployment("exp1", "champion", "carol")
    assert removed.version == 1
    with pytest.raises(NotFound):
        repo.current_deployment("exp1", "champion")
    with pytest.raises(NotFound):
        repo.remove_deployment("exp1", "champion", "carol")
    assert repo.list_deployments("exp1") == []
    repo.deploy("exp1", 2, "champion", "carol")
    history = repo.deployment_history("exp1", "champion")
    assert history.current is not None and [d.version for d in history.history] == [2, 1]
    assert history.history[0].previous_version is None, "nothing was deployed right before"
    assert repo.experiment_events("exp1").items[-2].type == outbox.DEPLOYMENT_REMOVED
    repo.delete_version("exp1", 1, "bob")  # no target runs it any more
