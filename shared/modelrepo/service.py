"""The model repository: the one object hosts hold, wiring the commands to their context.

Every rule lives in `modelrepo.commands` (one module per area) over the unit of work
(`modelrepo.unit_of_work`); this facade only binds them to one set of stores, so that hosts, the
CLI and the tests call `repository.register_model(...)` without knowing the modules.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from datetime import datetime, timedelta
from typing import BinaryIO

from modelrepo import projections
from modelrepo.commands import changes, deployments, experiments, lifecycle, tags, uploads, versions
from modelrepo.commands.deployments import DeploymentHistory
from modelrepo.commands.uploads import Outcome, RecordResult
from modelrepo.commands.versions import Manifest, ManifestEntry, VersionFilter, VersionMetadata
from modelrepo.events import ObjectCreated
from modelrepo.limits import DEFAULT_PAGE
from modelrepo.model import (
    ApprovalStatus,
    AuditEntry,
    Deployment,
    Experiment,
    Page,
    RegisteredModel,
    Rejection,
    RunArtifact,
    TargetPolicy,
)
from modelrepo.outbox import CloudEvent
from modelrepo.ports import ArtifactStore, MetadataStore
from modelrepo.retry import RetryPolicy
from modelrepo.unit_of_work import DEFAULT_SOURCE, Context, utc_now

__all__ = ["DeploymentHistory", "ModelRepository", "Outcome", "RecordResult", "VersionFilter", "VersionMetadata"]


class ModelRepository:
    """Record uploads, register versions, pin bytes, tag, deploy; every change audited and evented."""

    def __init__(
        self,
        artifacts: ArtifactStore,
        metadata: MetadataStore,
        *,
        retry: RetryPolicy | None = None,
        now: Callable[[], datetime] = utc_now,
        source: str = DEFAULT_SOURCE,
        default_approval: ApprovalStatus = ApprovalStatus.PENDING,
    ) -> None:
        self.context = Context(
            artifacts, metadata, retry or RetryPolicy(), now, source, default_approval=ApprovalStatus(default_approval)
        )
        self._registrations = versions.Registrations(self.context)

    @property
    def artifacts(self) -> ArtifactStore:
        return self.context.artifacts

    @property
    def metadata(self) -> MetadataStore:
        return self.context.metadata

    @property
    def retry_policy(self) -> RetryPolicy:
        return self.context.retry

    def close(self) -> None:
        """Release both stores' connections and files (the folder store's ledger, SQLite's pool)."""
        try:
            self.metadata.close()
        finally:
            self.artifacts.close()

    def on_commit(self, listener: Callable[[str], None]) -> None:
        """Call `listener(partition)` after every commit that appended events to a partition."""
        self.context.committed.append(listener)

    # --- uploads ---

    def record_artifact(self, event: ObjectCreated) -> RecordResult:
        return uploads.record_artifact(self.context, event)

    def record_rejection(self, event: ObjectCreated, reason: str) -> RecordResult:
        return uploads.record_rejection(self.context, event, reason)

    def flag_vanished_objects(self, run_id: str, *, actor: str) -> int:
        return uploads.flag_vanished_objects(self.context, run_id, actor=actor)

    def list_run_artifacts(self, run_id: str) -> list[RunArtifact]:
        return uploads.list_run_artifacts(self.context, run_id)

    def get_artifact(self, run_artifact_id: str) -> RunArtifact:
        return uploads.get_artifact(self.context, run_artifact_id)

    def list_rejections(self, *, limit: int = DEFAULT_PAGE, cursor: str | None = None) -> Page[Rejection]:
        return uploads.list_rejections(self.context, limit=limit, cursor=cursor)

    # --- versions ---

    def register_model(
        self,
        experiment_id: str,
        run_artifact_id: str,
        registered_by: str,
        description: str | None = None,
        idempotency_key: str | None = None,
        metadata: VersionMetadata | None = None,
        idempotency_window: timedelta | None = None,
    ) -> RegisteredModel:
        return self._registrations.register(
            experiment_id, run_artifact_id, registered_by, description, idempotency_key, metadata, idempotency_window
        )

    def register_folder(
        self,
        experiment_id: str,
        run_id: str,
        prefix: str,
        registered_by: str,
        idempotency_key: str | None = None,
        metadata: VersionMetadata | None = None,
        idempotency_window: timedelta | None = None,
    ) -> RegisteredModel:
        return self._registrations.register_folder(
            experiment_id, run_id, prefix, registered_by, idempotency_key, metadata, idempotency_window
        )

    def manifest(self, model: RegisteredModel) -> Manifest:
        return versions.manifest_of(self.context, model)

    def file_of(self, experiment_id: str, version: int, path: str) -> tuple[RegisteredModel, ManifestEntry]:
        return versions.file_of(self.context, experiment_id, version, path)

    def list_models(
        self,
        experiment_id: str,
        *,
        limit: int = DEFAULT_PAGE,
        cursor: str | None = None,
        where: VersionFilter | None = None,
    ) -> Page[RegisteredModel]:
        return versions.list_models(self.context, experiment_id, limit=limit, cursor=cursor, where=where)

    def get_model(self, experiment_id: str, version: int) -> RegisteredModel:
        return versions.get_model(self.context, experiment_id, version)

    def latest_model(self, experiment_id: str) -> RegisteredModel:
        return versions.latest_model(self.context, experiment_id)

    def open_model(self, experiment_id: str, version: int) -> AbstractContextManager[tuple[RegisteredModel, BinaryIO]]:
        return versions.open_model(self.context, experiment_id, version)

    def download_link(
        self, experiment_id: str, version: int, *, expires_seconds: int = 900
    ) -> tuple[RegisteredModel, str | None]:
        return versions.download_link(self.context, experiment_id, version, expires_seconds=expires_seconds)

    # --- tags ---

    def set_tag(self, experiment_id: str, version: int, key: str, value: str, by: str) -> RegisteredModel:
        return tags.set_tag(self.context, experiment_id, version, key, value, by)

    def delete_tag(self, experiment_id: str, version: int, key: str, by: str) -> RegisteredModel:
        return tags.delete_tag(self.context, experiment_id, version, key, by)

    # --- the lifecycle ---

    def set_approval(
        self, experiment_id: str, version: int, status: ApprovalStatus, by: str, comment: str | None = None
    ) -> RegisteredModel:
        return lifecycle.set_approval(self.context, experiment_id, version, status, by, comment)

    def update_metadata(self, experiment_id: str, version: int, metadata: VersionMetadata, by: str) -> RegisteredModel:
        return lifecycle.update_metadata(self.context, experiment_id, version, metadata, by)

    def archive(self, experiment_id: str, version: int, by: str) -> RegisteredModel:
        return lifecycle.archive(self.context, experiment_id, version, by)

    def restore(self, experiment_id: str, version: int, by: str) -> RegisteredModel:
        return lifecycle.restore(self.context, experiment_id, version, by)

    def delete_version(self, experiment_id: str, version: int, by: str, reason: str | None = None) -> RegisteredModel:
        return lifecycle.delete(self.context, experiment_id, version, by, reason)

    def target_policy(self, experiment_id: str, target: str) -> TargetPolicy:
        return lifecycle.target_policy(self.context, experiment_id, target)

    def set_target_policy(self, experiment_id: str, target: str, *, require_approval: bool, by: str) -> TargetPolicy:
        return lifecycle.set_target_policy(
            self.context, experiment_id, target, require_approval=require_approval, by=by
        )

    def current_deployment(self, experiment_id: str, target: str) -> Deployment:
        return lifecycle.current_deployment(self.context, experiment_id, target)

    # --- experiments ---

    def get_experiment(self, experiment_id: str) -> Experiment:
        return experiments.get_experiment(self.context, experiment_id)

    def describe_experiment(self, experiment_id: str, description: str, by: str) -> Experiment:
        return experiments.describe(self.context, experiment_id, description, by)

    def set_experiment_tag(self, experiment_id: str, key: str, value: str, by: str) -> Experiment:
        return experiments.set_tag(self.context, experiment_id, key, value, by)

    def delete_experiment_tag(self, experiment_id: str, key: str, by: str) -> Experiment:
        return experiments.delete_tag(self.context, experiment_id, key, by)

    def list_experiments(
        self, *, limit: int = DEFAULT_PAGE, cursor: str | None = None, prefix: str = ""
    ) -> Page[Experiment]:
        return experiments.list_experiments(self.context, limit=limit, cursor=cursor, prefix=prefix)

    def search_models(
        self,
        *,
        tags: tuple[tuple[str, str], ...] = (),
        status: ApprovalStatus | None = None,
        limit: int = DEFAULT_PAGE,
        cursor: str | None = None,
    ) -> Page[RegisteredModel]:
        return projections.search_models(self.context, tags=tags, status=status, limit=limit, cursor=cursor)

    # --- deployments ---

    def deploy(self, experiment_id: str, version: int, target: str, deployed_by: str) -> Deployment:
        return deployments.deploy(self.context, experiment_id, version, target, deployed_by)

    def remove_deployment(self, experiment_id: str, target: str, removed_by: str) -> Deployment:
        return deployments.remove_deployment(self.context, experiment_id, target, removed_by)

    def rollback(self, experiment_id: str, target: str, deployed_by: str) -> Deployment:
        return deployments.rollback(self.context, experiment_id, target, deployed_by)

    def list_deployments(self, experiment_id: str) -> list[Deployment]:
        return deployments.list_deployments(self.context, experiment_id)

    def deployment_history(
        self, experiment_id: str, target: str, *, limit: int = DEFAULT_PAGE, cursor: str | None = None
    ) -> DeploymentHistory:
        return deployments.deployment_history(self.context, experiment_id, target, limit=limit, cursor=cursor)

    # --- what changed ---

    def experiment_audit(
        self, experiment_id: str, *, limit: int = DEFAULT_PAGE, cursor: str | None = None
    ) -> Page[AuditEntry]:
        return changes.experiment_audit(self.context, experiment_id, limit=limit, cursor=cursor)

    def run_audit(self, run_id: str, *, limit: int = DEFAULT_PAGE, cursor: str | None = None) -> Page[AuditEntry]:
        return changes.run_audit(self.context, run_id, limit=limit, cursor=cursor)

    def experiment_events(self, experiment_id: str, *, after: int = 0, limit: int = DEFAULT_PAGE) -> Page[CloudEvent]:
        return changes.experiment_events(self.context, experiment_id, after=after, limit=limit)

    def run_events(self, run_id: str, *, after: int = 0, limit: int = DEFAULT_PAGE) -> Page[CloudEvent]:
        return changes.run_events(self.context, run_id, after=after, limit=limit)
