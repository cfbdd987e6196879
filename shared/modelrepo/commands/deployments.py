"""Deployments: a target is a movable, audited pointer to a version, with its history."""

from __future__ import annotations

from modelrepo import outbox, tables
from modelrepo.commands.lifecycle import check_deployable, current_of
from modelrepo.errors import NotFound, Unprocessable
from modelrepo.limits import check_version
from modelrepo.model import Deployment, Record, RegisteredModel, check_actor, check_experiment_id, check_target
from modelrepo.unit_of_work import Context, UnitOfWork, execute, page, query_all


class DeploymentHistory(Record):
    current: Deployment | None
    history: list[Deployment]
    next_cursor: str | None = None


def target_subject(experiment_id: str, target: str) -> str:
    return f"experiments/{experiment_id}/targets/{target}"


def deploy(ctx: Context, experiment_id: str, version: int, target: str, deployed_by: str) -> Deployment:
    """Make `version` the current deployment of `target`, keeping the previous one in history."""
    check_experiment_id(experiment_id)
    check_version(version)
    check_target(target)
    check_actor(deployed_by)

    def command(uow: UnitOfWork) -> Deployment:
        check_deployable(uow, experiment_id, target, _version(uow, experiment_id, version))
        return _move(uow, experiment_id, target, version, deployed_by, rollback=False)

    partition = tables.experiment_partition(experiment_id)
    return execute(ctx, partition, f"deploying to {target!r} of {experiment_id!r}", command)


def rollback(ctx: Context, experiment_id: str, target: str, deployed_by: str) -> Deployment:
    """Deploy again the version that was current before the current deployment of `target`."""
    check_experiment_id(experiment_id)
    check_target(target)
    check_actor(deployed_by)

    def command(uow: UnitOfWork) -> Deployment:
        current = _current(uow, experiment_id, target)
        if current.previous_version is None:
            raise Unprocessable(f"target {target!r} of {experiment_id!r} has no earlier deployment to roll back to")
        previous = _version(uow, experiment_id, current.previous_version)
        check_deployable(uow, experiment_id, target, previous)
        return _move(uow, experiment_id, target, previous.version, deployed_by, rollback=True)

    partition = tables.experiment_partition(experiment_id)
    return execute(ctx, partition, f"rolling back {target!r} of {experiment_id!r}", command)


def _version(uow: UnitOfWork, experiment_id: str, version: int) -> RegisteredModel:
    item = uow.get(tables.version_row(version))
    if item is None:
        raise NotFound(f"experiment {experiment_id!r} has no version {version}")
    return RegisteredModel.model_validate(item.data["model"])


def _current(uow: UnitOfWork, experiment_id: str, target: str) -> Deployment:
    current = current_of(uow.get(tables.deployment_row(target)))
    if current is None:
        raise NotFound(f"nothing of experiment {experiment_id!r} is deployed to {target!r}")
    return current


def remove_deployment(ctx: Context, experiment_id: str, target: str, removed_by: str) -> Deployment:
    """Take a target's current deployment away (an MLflow alias deleted); its history stays."""
    check_experiment_id(experiment_id)
    check_target(target)
    check_actor(removed_by)
    row = tables.deployment_row(target)

    def command(uow: UnitOfWork) -> Deployment:
        current = _current(uow, experiment_id, target)
        item = uow.get(row)
        assert item is not None
        uow.save(row, {**item.data, "deployment": None})
        uow.emit(
            outbox.DEPLOYMENT_REMOVED,
            target_subject(experiment_id, target),
            current.to_json(),
            actor=removed_by,
            action="model.undeployed",
            about=f"target {target}",
            details={"version": current.version},
        )
        return current

    partition = tables.experiment_partition(experiment_id)
    return execute(ctx, partition, f"removing the deployment of {target!r} of {experiment_id!r}", command)


def _move(
    uow: UnitOfWork, experiment_id: str, target: str, version: int, deployed_by: str, *, rollback: bool
) -> Deployment:
    row = tables.deployment_row(target)
    current = uow.get(row)
    sequence = (current.data["sequence"] if current else 0) + 1
    deployment = Deployment(
        experiment_id=experiment_id,
        target=target,
        version=version,
        deployed_by=deployed_by,
        deployed_at=uow.now,
        previous_version=previous.version if (previous := current_of(current)) else None,
    )
    document = {"deployment": deployment.to_json()}
    uow.save(row, {**document, "sequence": sequence})
    uow.create(tables.history_row(target, sequence), document)
    details: dict[str, object] = {"version": version}
    if rollback:
        details["rollback"] = True
    uow.emit(
        outbox.DEPLOYMENT_CREATED,
        target_subject(experiment_id, target),
        deployment.to_json(),
        actor=deployed_by,
        action="model.deployed",
        about=f"target {target}",
        details=details,
    )
    return deployment


def list_deployments(ctx: Context, experiment_id: str) -> list[Deployment]:
    """The current deployment of every target."""
    check_experiment_id(experiment_id)
    items = query_all(ctx.metadata, tables.experiment_partition(experiment_id), tables.DEPLOYMENT_PREFIX)
    return [deployment for item in items if (deployment := current_of(item)) is not None]


def deployment_history(
    ctx: Context, experiment_id: str, target: str, *, limit: int, cursor: str | None = None
) -> DeploymentHistory:
    """The current deployment of a target and its deployments newest first."""
    check_experiment_id(experiment_id)
    check_target(target)
    partition = tables.experiment_partition(experiment_id)
    items, next_cursor = page(ctx.metadata, partition, tables.history_prefix(target), limit, cursor)
    current = ctx.metadata.get(partition, tables.deployment_row(target))
    if current is None and not items:
        raise NotFound(f"nothing of experiment {experiment_id!r} was ever deployed to {target!r}")
    return DeploymentHistory(
        current=current_of(current),
        history=[Deployment.model_validate(i.data["deployment"]) for i in items],
        next_cursor=next_cursor,
    )
