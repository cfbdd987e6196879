"""Tags on versions: set and remove, each change audited and evented."""

from __future__ import annotations

from modelrepo import outbox, tables
from modelrepo.commands.versions import version_subject
from modelrepo.errors import NotFound, Unprocessable
from modelrepo.limits import MAX_TAGS, check_version
from modelrepo.model import RegisteredModel, check_actor, check_experiment_id, check_tag_key, check_tag_value
from modelrepo.unit_of_work import Context, UnitOfWork, execute


def set_tag(ctx: Context, experiment_id: str, version: int, key: str, value: str, by: str) -> RegisteredModel:
    check_tag_key(key)
    check_tag_value(value)
    return _change_tags(ctx, experiment_id, version, key, value, by)


def delete_tag(ctx: Context, experiment_id: str, version: int, key: str, by: str) -> RegisteredModel:
    check_tag_key(key)
    return _change_tags(ctx, experiment_id, version, key, None, by)


def _change_tags(
    ctx: Context, experiment_id: str, version: int, key: str, value: str | None, by: str
) -> RegisteredModel:
    check_experiment_id(experiment_id)
    check_version(version)
    check_actor(by)
    row = tables.version_row(version)

    def command(uow: UnitOfWork) -> RegisteredModel:
        item = uow.get(row)
        if item is None:
            raise NotFound(f"experiment {experiment_id!r} has no version {version}")
        model = RegisteredModel.model_validate(item.data["model"])
        tags = dict(model.tags)
        if value is None:
            if key not in tags:
                raise NotFound(f"version {version} of {experiment_id!r} has no tag {key!r}")
            del tags[key]
        else:
            if key not in tags and len(tags) >= MAX_TAGS:
                raise Unprocessable(f"version {version} already has the maximum of {MAX_TAGS} tags")
            tags[key] = value
        changed = model.model_copy(update={"tags": tags})
        uow.save(row, {**item.data, "model": changed.to_json()})
        uow.emit(
            outbox.VERSION_UNTAGGED if value is None else outbox.VERSION_TAGGED,
            version_subject(experiment_id, version),
            changed.to_json(),
            actor=by,
            action="model.untagged" if value is None else "model.tagged",
            about=f"version {version}",
            details={"key": key} if value is None else {"key": key, "value": value},
        )
        return changed

    return execute(
        ctx, tables.experiment_partition(experiment_id), f"tagging version {version} of {experiment_id!r}", command
    )
