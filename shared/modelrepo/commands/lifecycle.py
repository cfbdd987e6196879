"""A version's life after registration: approval, metadata, archive and restore, delete; and the
rules of deployment targets. Every change is one unit of work with its event and audit entry."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from modelrepo import outbox, tables
from modelrepo.commands.versions import VersionMetadata, version_subject
from modelrepo.errors import Conflict, Gone, NotFound, Unprocessable
from modelrepo.limits import check_version
from modelrepo.model import (
    Approval,
    ApprovalStatus,
    Deployment,
    RegisteredModel,
    TargetPolicy,
    Tombstone,
    check_actor,
    check_comment,
    check_experiment_id,
    check_target,
)
from modelrepo.ports import Item
from modelrepo.unit_of_work import Context, UnitOfWork, execute

WRITE_ONCE = ("metrics", "params", "signature")
SCAN = 100  # version rows read per query when looking for the newest live version


@dataclass
class Change:
    """What a command did to a version: the new record, and its event and audit entry."""

    model: RegisteredModel
    event_type: str
    action: str
    details: dict[str, Any] = field(default_factory=dict)


def change_version(
    ctx: Context,
    experiment_id: str,
    version: int,
    doing: str,
    change: Callable[[UnitOfWork, RegisteredModel], Change | None],
    *,
    by: str,
) -> RegisteredModel:
    """Read a version, let `change` decide, write the new record with its event; None: no change.

    Deleted versions refuse every change (410): their record stays as it was deleted.
    """
    check_experiment_id(experiment_id)
    check_version(version)
    check_actor(by)
    row = tables.version_row(version)

    def command(uow: UnitOfWork) -> RegisteredModel:
        item = uow.get(row)
        if item is None:
            raise NotFound(f"experiment {experiment_id!r} has no version {version}")
        model = RegisteredModel.model_validate(item.data["model"])
        if model.deleted is not None:
            raise Gone(f"version {version} of {experiment_id!r} was deleted; its record can no longer change")
        done = change(uow, model)
        if done is None:
            return model
        wire = done.model.to_json()
        sequence = uow.emit(
            done.event_type,
            version_subject(experiment_id, version),
            wire,
            actor=by,
            action=done.action,
            about=f"version {version}",
            details=done.details,
        )
        uow.save(row, {**item.data, "model": wire, "sequence": sequence})
        return done.model

    return execute(ctx, tables.experiment_partition(experiment_id), f"{doing} of {experiment_id!r}", command)


# --- approval ------------------------------------------------------------------------------------


def set_approval(
    ctx: Context, experiment_id: str, version: int, status: ApprovalStatus, by: str, comment: str | None = None
) -> RegisteredModel:
    """Approve, reject, or set back to pending; every decision is recorded, even a repeated one."""
    status = ApprovalStatus(status)
    if comment is not None:
        check_comment(comment)

    def decide(uow: UnitOfWork, model: RegisteredModel) -> Change:
        approval = Approval(status=status, by=by, at=uow.now, comment=comment)
        details = {"from": model.approval.status.value, "to": status.value}
        if comment:
            details["comment"] = comment
        return Change(
            model.model_copy(update={"approval": approval}),
            outbox.VERSION_APPROVAL_CHANGED,
            "model.approval_changed",
            details,
        )

    return change_version(ctx, experiment_id, version, f"deciding on version {version}", decide, by=by)


# --- metadata ------------------------------------------------------------------------------------


def update_metadata(
    ctx: Context, experiment_id: str, version: int, metadata: VersionMetadata, by: str
) -> RegisteredModel:
    """Description and lineage may change; metrics, params and signature only once (409 after)."""
    metadata.checked()
    given = metadata.fields()

    def update(uow: UnitOfWork, model: RegisteredModel) -> Change | None:
        for name in WRITE_ONCE:
            if name in given and getattr(model, name) and getattr(model, name) != given[name]:
                raise Conflict(
                    f"{name} of version {version} of {experiment_id!r} are already set and are write-once: "
                    "register a new version for new ones"
                )
        changed = {name: value for name, value in given.items() if getattr(model, name) != value}
        if not changed:
            return None
        return Change(
            model.model_copy(update=changed),
            outbox.VERSION_UPDATED,
            "model.updated",
            {"fields": sorted(changed)},
        )

    return change_version(ctx, experiment_id, version, f"updating version {version}", update, by=by)


# --- archive, restore, delete --------------------------------------------------------------------


def _current_targets(uow: UnitOfWork, version: int) -> list[str]:
    """Targets whose current deployment is `version` (the counter guards this read: any deploy
    meanwhile changes the counter and fails this unit of work's commit)."""
    found = [current_of(item) for item in uow.query(tables.DEPLOYMENT_PREFIX, limit=1000)]
    return [deployment.target for deployment in found if deployment is not None and deployment.version == version]


def _newest_live(uow: UnitOfWork, below: int) -> int:
    """The newest version below `below` that is neither archived nor deleted (0: none)."""
    after: str | None = tables.version_row(below)
    while True:
        items = uow.query(tables.VERSION_PREFIX, after=after, limit=SCAN)
        for item in items:
            if RegisteredModel.model_validate(item.data["model"]).live:
                return int(item.data["model"]["version"])
        if len(items) < SCAN:
            return 0
        after = items[-1].row


def _leave_latest(uow: UnitOfWork, version: int) -> None:
    """A version stops being live: if it was the newest live one, the next older live one is."""
    counter = uow.counter
    if int(counter.get("latestLive", counter.get("latest", 0))) == version:
        uow.set_counter(latestLive=_newest_live(uow, version))


def archive(ctx: Context, experiment_id: str, version: int, by: str) -> RegisteredModel:
    """Hide a version from `latest` and default listings; it can no longer be deployed."""

    def hide(uow: UnitOfWork, model: RegisteredModel) -> Change | None:
        if model.archived_at is not None:
            return None
        if targets := _current_targets(uow, version):
            raise Conflict(
                f"version {version} of {experiment_id!r} is the current deployment of {', '.join(targets)}; "
                "deploy another version there first"
            )
        _leave_latest(uow, version)
        hidden = model.model_copy(update={"archived_at": uow.now, "archived_by": by})
        return Change(hidden, outbox.VERSION_ARCHIVED, "model.archived")

    return change_version(ctx, experiment_id, version, f"archiving version {version}", hide, by=by)


def restore(ctx: Context, experiment_id: str, version: int, by: str) -> RegisteredModel:
    def show(uow: UnitOfWork, model: RegisteredModel) -> Change | None:
        if model.archived_at is None:
            return None
        counter = uow.counter
        uow.set_counter(latestLive=max(int(counter.get("latestLive", counter.get("latest", 0))), version))
        restored = model.model_copy(update={"archived_at": None, "archived_by": None})
        return Change(restored, outbox.VERSION_RESTORED, "model.restored")

    return change_version(ctx, experiment_id, version, f"restoring version {version}", show, by=by)


def delete(ctx: Context, experiment_id: str, version: int, by: str, reason: str | None = None) -> RegisteredModel:
    """Tombstone a version: its number is never reused, its record and audit stay, and its bytes are
    released (the reconcile sweep removes pinned bytes that no live version references)."""
    if reason is not None:
        check_comment(reason)

    def bury(uow: UnitOfWork, model: RegisteredModel) -> Change:
        if targets := _current_targets(uow, version):
            raise Conflict(
                f"version {version} of {experiment_id!r} is the current deployment of {', '.join(targets)}; "
                "deploy another version there first"
            )
        if model.live:
            _leave_latest(uow, version)
        counter = uow.counter
        uow.set_counter(versionCount=max(0, int(counter.get("versionCount", counter.get("latest", 0))) - 1))
        tombstone = Tombstone(at=uow.now, by=by, reason=reason)
        details = {"sha256": model.sha256, **({"reason": reason} if reason else {})}
        return Change(model.model_copy(update={"deleted": tombstone}), outbox.VERSION_DELETED, "model.deleted", details)

    return change_version(ctx, experiment_id, version, f"deleting version {version}", bury, by=by)


# --- deployment targets --------------------------------------------------------------------------


def target_policy(ctx: Context, experiment_id: str, target: str) -> TargetPolicy:
    check_experiment_id(experiment_id)
    check_target(target)
    item = ctx.metadata.get(tables.experiment_partition(experiment_id), tables.target_row(target))
    if item is None:
        return TargetPolicy(experiment_id=experiment_id, target=target)
    return TargetPolicy.model_validate(item.data["policy"])


def set_target_policy(
    ctx: Context, experiment_id: str, target: str, *, require_approval: bool, by: str
) -> TargetPolicy:
    check_experiment_id(experiment_id)
    check_target(target)
    check_actor(by)
    row = tables.target_row(target)

    def command(uow: UnitOfWork) -> TargetPolicy:
        policy = TargetPolicy(
            experiment_id=experiment_id,
            target=target,
            require_approval=require_approval,
            updated_by=by,
            updated_at=uow.now,
        )
        uow.get(row)
        uow.save(row, {"policy": policy.to_json()})
        uow.emit(
            outbox.TARGET_UPDATED,
            f"experiments/{experiment_id}/targets/{target}",
            policy.to_json(),
            actor=by,
            action="target.updated",
            about=f"target {target}",
            details={"requireApproval": require_approval},
        )
        return policy

    return execute(ctx, tables.experiment_partition(experiment_id), f"setting the rules of {target!r}", command)


def current_of(item: Item | None) -> Deployment | None:
    """A target's current deployment from its row (None: never deployed, or taken away; the row stays
    so that the target's history numbering goes on)."""
    if item is None or item.data.get("deployment") is None:
        return None
    return Deployment.model_validate(item.data["deployment"])


def check_deployable(uow: UnitOfWork, experiment_id: str, target: str, model: RegisteredModel) -> None:
    """The rules a version must meet to become a target's current deployment (deploy and rollback)."""
    name = f"version {model.version} of {experiment_id!r}"
    if model.deleted is not None:
        raise Gone(f"{name} was deleted and cannot be deployed")
    if model.archived_at is not None:
        raise Unprocessable(f"{name} is archived and cannot be deployed; restore it first")
    policy = uow.get(tables.target_row(target))
    if policy is not None and policy.data["policy"].get("requireApproval"):
        status = model.approval.status
        if status is not ApprovalStatus.APPROVED:
            raise Unprocessable(
                f"target {target!r} requires approved versions (rule requireApproval); {name} is {status.value}"
            )


def current_deployment(ctx: Context, experiment_id: str, target: str) -> Deployment:
    """What a target points at now: `@target` in a path resolves through this."""
    check_experiment_id(experiment_id)
    check_target(target)
    deployment = current_of(ctx.metadata.get(tables.experiment_partition(experiment_id), tables.deployment_row(target)))
    if deployment is None:
        raise NotFound(f"nothing of experiment {experiment_id!r} is deployed to {target!r}")
    return deployment
