"""Tags on versions: set and remove, each change audited and evented."""

from __future__ import annotations

from modelrepo import outbox
from modelrepo.commands.lifecycle import Change, change_version
from modelrepo.errors import NotFound, Unprocessable
from modelrepo.limits import MAX_TAGS
from modelrepo.model import RegisteredModel, check_tag_key, check_tag_value
from modelrepo.unit_of_work import Context, UnitOfWork


def set_tag(ctx: Context, experiment_id: str, version: int, key: str, value: str, by: str) -> RegisteredModel:
    check_tag_key(key)
    check_tag_value(value)

    def tag(uow: UnitOfWork, model: RegisteredModel) -> Change:
        if key not in model.tags and len(model.tags) >= MAX_TAGS:
            raise Unprocessable(f"version {version} already has the maximum of {MAX_TAGS} tags")
        changed = model.model_copy(update={"tags": {**model.tags, key: value}})
        return Change(changed, outbox.VERSION_TAGGED, "model.tagged", {"key": key, "value": value})

    return change_version(ctx, experiment_id, version, f"tagging version {version}", tag, by=by)


def delete_tag(ctx: Context, experiment_id: str, version: int, key: str, by: str) -> RegisteredModel:
    check_tag_key(key)

    def untag(uow: UnitOfWork, model: RegisteredModel) -> Change:
        if key not in model.tags:
            raise NotFound(f"version {version} of {experiment_id!r} has no tag {key!r}")
        changed = model.model_copy(update={"tags": {k: v for k, v in model.tags.items() if k != key}})
        return Change(changed, outbox.VERSION_UNTAGGED, "model.untagged", {"key": key})

    return change_version(ctx, experiment_id, version, f"untagging version {version}", untag, by=by)
