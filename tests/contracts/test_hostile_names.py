"""Hostile object keys through the core, on every backend: recorded exactly, or rejected with a reason.

Never an exception, never an unsafe path, never an invalid table key (the backends would refuse one).
"""

from __future__ import annotations

import io
from datetime import UTC, datetime

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from modelrepo.adapters.memory import MemoryArtifactStore
from modelrepo.errors import InvalidInput
from modelrepo.events import ObjectCreated
from modelrepo.model import ArtifactKey
from modelrepo.ports import ArtifactStore, MetadataStore
from modelrepo.retry import RetryPolicy
from modelrepo.service import ModelRepository, Outcome

NASTY = [".", "..", "+", "%2B", "%", " ", "/", "\\", "#", "?", "~", "\x00", "\x07", "\x1f", "\x7f", "\x85",
         "\u202e", "\u2066", "\u200f", "é", "模", "🚀", "\ufeff", "a", "b", "-", "_"]  # fmt: skip
names = st.one_of(
    st.lists(st.sampled_from(NASTY), min_size=1, max_size=12).map("".join),
    st.text(min_size=1, max_size=40),
    st.integers(min_value=1000, max_value=1100).map(lambda n: "n" * n),  # around the 1,024-byte limit
    st.integers(min_value=340, max_value=345).map(lambda n: "模" * n),  # 3 bytes each
)
ids = st.one_of(st.just("exp1"), st.sampled_from(["", ".", "..", "a b", "x/y", "é", "-x", "ok.id_1"]))
RETRY = RetryPolicy(base_seconds=0.001, cap_seconds=0.01, deadline_seconds=10)
NOW = datetime(2026, 1, 1, tzinfo=UTC)


def _fits(key: str) -> bool:
    try:
        ArtifactKey.parse(key)
    except InvalidInput:
        return False
    return True


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(experiment=ids, name=names)
def test_any_key_is_recorded_or_rejected_never_an_error(
    metadata_store: MetadataStore, experiment: str, name: str
) -> None:
    repo = ModelRepository(MemoryArtifactStore(), metadata_store, retry=RETRY)
    key = f"{experiment}/run1/{name}"
    result = repo.record_artifact(ObjectCreated(key, '"etag"', 3, NOW))
    if _fits(key):
        assert result.outcome is Outcome.GONE  # a valid key; its object just is not there
    else:
        assert result.outcome is Outcome.REJECTED
        assert result.rejection is not None and result.rejection.reason
        keys = [r.key for r in repo.list_rejections(limit=1000).items]
        assert result.rejection.key in keys


valid_names = names.filter(lambda n: _fits(f"exp1/run1/{n}"))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=valid_names)
def test_valid_awkward_names_are_stored_and_recorded_exactly(artifact_store: ArtifactStore, name: str) -> None:
    from modelrepo.adapters.memory import MemoryMetadataStore

    repo = ModelRepository(artifact_store, MemoryMetadataStore(), retry=RETRY)
    key = f"exp1/run1/{name}"
    try:
        info = artifact_store.put(key, io.BytesIO(b"bytes"))
    except InvalidInput:
        # A store may refuse a name it cannot hold (a file system's 255-byte names); it must say
        # so, not write half of it.
        assert key not in [o.key for o in artifact_store.list("exp1/run1/").objects]
        return
    result = repo.record_artifact(ObjectCreated.from_object(info, "hostile-names"))
    assert result.outcome is Outcome.RECORDED, result
    assert result.artifact is not None
    assert (result.artifact.key, result.artifact.name) == (key, name)
    assert name in [a.name for a in repo.list_run_artifacts("run1")]
