"""The lifecycle on every backend pair: the rules live in the core, so each backend must carry the
same answers (conditional writes, queries with prefixes and cursors, the index, the registry)."""

from __future__ import annotations

import io

import pytest

from modelrepo.dispatch import Dispatcher
from modelrepo.errors import Conflict, Gone, Unprocessable
from modelrepo.events import ObjectCreated
from modelrepo.model import ApprovalStatus
from modelrepo.projections import Indexer
from modelrepo.service import ModelRepository, VersionFilter
from tests.fixtures.pairs import repository

__all__ = ["repository"]


def test_the_lifecycle_holds_on_every_backend(repository: ModelRepository) -> None:
    repo = repository
    ids = {}
    for experiment in ("exp-a", "exp-b"):
        info = repo.artifacts.put(f"{experiment}/run1/model.bin", io.BytesIO(f"{experiment} bytes".encode()))
        artifact = repo.record_artifact(ObjectCreated.from_object(info, "test")).artifact
        assert artifact is not None
        ids[experiment] = artifact.run_artifact_id
        for _ in range(3):
            repo.register_model(experiment, artifact.run_artifact_id, "alice")
    repo.describe_experiment("exp-a", "first", "bob")
    repo.set_tag("exp-a", 2, "stage", "candidate", "bob")
    repo.set_approval("exp-a", 2, ApprovalStatus.APPROVED, "lead")
    repo.set_target_policy("exp-a", "production", require_approval=True, by="lead")
    with pytest.raises(Unprocessable):
        repo.deploy("exp-a", 3, "production", "carol")
    repo.deploy("exp-a", 2, "production", "carol")
    with pytest.raises(Conflict):
        repo.delete_version("exp-a", 2, "bob")
    repo.archive("exp-a", 3, "bob")
    repo.delete_version("exp-a", 1, "bob")
    with pytest.raises(Gone):
        repo.download_link("exp-a", 1)
    assert repo.latest_model("exp-a").version == 2
    assert [m.version for m in repo.list_models("exp-a").items] == [2]
    assert [m.version for m in repo.list_models("exp-a", where=VersionFilter(archived=True, deleted=True)).items] == [
        3,
        2,
        1,
    ]
    summary = repo.get_experiment("exp-a")
    assert (summary.description, summary.latest_version, summary.version_count) == ("first", 2, 2)

    assert Dispatcher(repo.metadata, Indexer(repo.metadata)).sweep() > 0
    assert [(e.experiment_id, e.latest_version) for e in repo.list_experiments().items] == [("exp-a", 2), ("exp-b", 3)]
    found = repo.search_models(tags=(("stage", "candidate"),), status=ApprovalStatus.APPROVED)
    assert [(m.experiment_id, m.version) for m in found.items] == [("exp-a", 2)]
    pending = repo.search_models(status=ApprovalStatus.PENDING)
    assert [(m.experiment_id, m.version) for m in pending.items] == [("exp-b", 3), ("exp-b", 2), ("exp-b", 1)]
    types = [e.type.removeprefix("io.modelrepo.") for e in repo.experiment_events("exp-a", limit=100).items]
    assert types == [
        *["version.registered"] * 3,
        "experiment.updated",
        "version.tagged",
        "version.approval_changed",
        "target.updated",
        "deployment.created",
        "version.archived",
        "version.deleted",
    ]
