"""Rule 4 and the audit trail: deploy, current per target, history, rollback, tags."""

from __future__ import annotations

import itertools
import threading

import pytest

from modelrepo.adapters.memory import MemoryArtifactStore
from modelrepo.errors import InvalidInput, NotFound, Unprocessable
from modelrepo.limits import MAX_TAGS
from modelrepo.service import ModelRepository
from tests.unit.conftest import FAST_RETRY, FaultyMetadataStore, commit_then_lose_answer, record


@pytest.fixture
def three_versions(repo: ModelRepository) -> ModelRepository:
    artifact = record(repo, "exp1/run1/model.bin", b"weights").artifact
    assert artifact is not None
    for _ in range(3):
        repo.register_model("exp1", artifact.run_artifact_id, "alice")
    return repo


def test_deploy_sets_the_current_version_per_target(three_versions: ModelRepository) -> None:
    repo = three_versions
    repo.deploy("exp1", 1, "staging", "carol")
    repo.deploy("exp1", 2, "production", "dave")
    repo.deploy("exp1", 3, "staging", "carol")
    current = {d.target: (d.version, d.deployed_by, d.previous_version) for d in repo.list_deployments("exp1")}
    assert current == {"staging": (3, "carol", 1), "production": (2, "dave", None)}
    history = repo.deployment_history("exp1", "staging")
    assert history.current is not None and history.current.version == 3
    assert [d.version for d in history.history] == [3, 1]


def test_rollback_deploys_the_previous_version_again(three_versions: ModelRepository) -> None:
    repo = three_versions
    repo.deploy("exp1", 1, "production", "carol")
    repo.deploy("exp1", 3, "production", "carol")
    rolled = repo.rollback("exp1", "production", "erin")
    assert (rolled.version, rolled.previous_version, rolled.deployed_by) == (1, 3, "erin")
    assert [d.version for d in repo.deployment_history("exp1", "production").history] == [1, 3, 1]


def test_rollback_needs_an_earlier_deployment(three_versions: ModelRepository) -> None:
    repo = three_versions
    with pytest.raises(NotFound, match="nothing of experiment 'exp1' is deployed to 'production'"):
        repo.rollback("exp1", "production", "erin")
    repo.deploy("exp1", 2, "production", "carol")
    with pytest.raises(Unprocessable, match="no earlier deployment"):
        repo.rollback("exp1", "production", "erin")


def test_deploying_needs_a_registered_version_and_a_valid_target(three_versions: ModelRepository) -> None:
    repo = three_versions
    with pytest.raises(NotFound, match="no version 9"):
        repo.deploy("exp1", 9, "production", "carol")
    with pytest.raises(InvalidInput, match="target"):
        repo.deploy("exp1", 1, "Prod!", "carol")
    assert repo.list_deployments("exp1") == []
    with pytest.raises(NotFound, match="was ever deployed to"):
        repo.deployment_history("exp1", "production")


def test_concurrent_deploys_keep_a_complete_history(three_versions: ModelRepository) -> None:
    repo = three_versions
    barrier = threading.Barrier(12)

    def deploy(n: int) -> None:
        barrier.wait()
        repo.deploy("exp1", 1 + n % 3, "production", f"user{n}")

    threads = [threading.Thread(target=deploy, args=(n,)) for n in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    history = repo.deployment_history("exp1", "production", limit=100).history
    assert len(history) == 12
    assert sorted(d.deployed_by for d in history) == sorted(f"user{n}" for n in range(12))
    # Each deployment names the one it replaced: the chain is unbroken.
    chain = list(reversed(history))
    assert chain[0].previous_version is None
    assert all(later.previous_version == earlier.version for earlier, later in itertools.pairwise(chain))


def test_history_pages(three_versions: ModelRepository) -> None:
    repo = three_versions
    for n in range(7):
        repo.deploy("exp1", 1 + n % 3, "staging", "carol")
    first = repo.deployment_history("exp1", "staging", limit=5)
    second = repo.deployment_history("exp1", "staging", limit=5, cursor=first.next_cursor)
    assert len(first.history) == 5 and len(second.history) == 2 and second.next_cursor is None


def test_tags_set_replace_and_remove(three_versions: ModelRepository) -> None:
    repo = three_versions
    repo.set_tag("exp1", 2, "stage", "candidate", "alice")
    repo.set_tag("exp1", 2, "stage", "approved", "bob")
    tagged = repo.set_tag("exp1", 2, "owner", "team-ml", "bob")
    assert tagged.tags == {"stage": "approved", "owner": "team-ml"}
    assert repo.get_model("exp1", 2).tags == tagged.tags
    assert repo.get_model("exp1", 1).tags == {}
    assert repo.delete_tag("exp1", 2, "stage", "carol").tags == {"owner": "team-ml"}
    with pytest.raises(NotFound, match="has no tag 'stage'"):
        repo.delete_tag("exp1", 2, "stage", "carol")
    with pytest.raises(InvalidInput, match="tag key"):
        repo.set_tag("exp1", 2, "bad key", "x", "carol")
    with pytest.raises(NotFound, match="no version 8"):
        repo.set_tag("exp1", 8, "stage", "x", "carol")


def test_concurrent_tag_writers_lose_no_tag(three_versions: ModelRepository) -> None:
    repo = three_versions
    barrier = threading.Barrier(10)

    def tag(n: int) -> None:
        barrier.wait()
        repo.set_tag("exp1", 1, f"k{n}", str(n), "alice")

    threads = [threading.Thread(target=tag, args=(n,)) for n in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert repo.get_model("exp1", 1).tags == {f"k{n}": str(n) for n in range(10)}


def test_tags_are_bounded(three_versions: ModelRepository) -> None:
    repo = three_versions
    for n in range(MAX_TAGS):
        repo.set_tag("exp1", 3, f"k{n}", "v", "alice")
    with pytest.raises(Unprocessable, match="maximum"):
        repo.set_tag("exp1", 3, "one-more", "v", "alice")
    repo.set_tag("exp1", 3, "k0", "replaced", "alice")  # replacing is fine


def test_every_change_is_audited_with_actor_and_time(three_versions: ModelRepository) -> None:
    repo = three_versions
    repo.set_tag("exp1", 1, "stage", "gold", "bob")
    repo.delete_tag("exp1", 1, "stage", "bob")
    repo.deploy("exp1", 1, "production", "carol")
    repo.deploy("exp1", 2, "production", "carol")
    repo.rollback("exp1", "production", "dave")
    trail = repo.experiment_audit("exp1", limit=100).items
    assert [(e.action, e.actor, e.subject) for e in trail] == [
        ("model.registered", "alice", "version 1"),
        ("model.registered", "alice", "version 2"),
        ("model.registered", "alice", "version 3"),
        ("model.tagged", "bob", "version 1"),
        ("model.untagged", "bob", "version 1"),
        ("model.deployed", "carol", "target production"),
        ("model.deployed", "carol", "target production"),
        ("model.deployed", "dave", "target production"),
    ]
    assert all(e.at.tzinfo is not None for e in trail)
    assert [e.at for e in trail] == sorted(e.at for e in trail)
    run_trail = repo.run_audit("run1").items
    assert [(e.action, e.actor) for e in run_trail] == [("artifact.recorded", "test-upload")]


# --- a change whose commit succeeded but whose answer was lost is applied once -------------------


@pytest.fixture
def lossy(artifacts: MemoryArtifactStore) -> tuple[ModelRepository, FaultyMetadataStore]:
    """Three versions on a store whose faults the test chooses (none until it sets one)."""
    store = FaultyMetadataStore()
    repo = ModelRepository(artifacts, store, retry=FAST_RETRY)
    artifact = record(repo, "exp1/run1/model.bin", b"weights").artifact
    assert artifact is not None
    for _ in range(3):
        repo.register_model("exp1", artifact.run_artifact_id, "alice")
    return repo, store


def actions(repo: ModelRepository) -> list[str]:
    return [entry.action for entry in repo.experiment_audit("exp1", limit=100).items]


def test_a_tag_whose_answer_was_lost_is_set_once(lossy: tuple[ModelRepository, FaultyMetadataStore]) -> None:
    repo, store = lossy
    store.fault = commit_then_lose_answer(times=1)
    tagged = repo.set_tag("exp1", 2, "stage", "candidate", "alice")
    assert tagged.tags == {"stage": "candidate"}
    assert repo.get_model("exp1", 2).tags == {"stage": "candidate"}
    assert actions(repo).count("model.tagged") == 1, "the retry recognised its own committed write"


def test_an_untag_whose_answer_was_lost_is_not_retried_into_a_404(
    lossy: tuple[ModelRepository, FaultyMetadataStore],
) -> None:
    repo, store = lossy
    repo.set_tag("exp1", 2, "stage", "candidate", "alice")
    store.fault = commit_then_lose_answer(times=2)
    untagged = repo.delete_tag("exp1", 2, "stage", "bob")
    assert untagged.tags == {}
    assert actions(repo).count("model.untagged") == 1


def test_a_deploy_and_a_rollback_whose_answers_were_lost_happen_once(
    lossy: tuple[ModelRepository, FaultyMetadataStore],
) -> None:
    repo, store = lossy
    repo.deploy("exp1", 1, "production", "carol")
    store.fault = commit_then_lose_answer(times=1)
    assert repo.deploy("exp1", 2, "production", "carol").version == 2
    store.fault = commit_then_lose_answer(times=1)
    assert repo.rollback("exp1", "production", "dave").version == 1
    history = repo.deployment_history("exp1", "production").history
    assert [d.version for d in history] == [1, 2, 1]
    assert actions(repo).count("model.deployed") == 3
