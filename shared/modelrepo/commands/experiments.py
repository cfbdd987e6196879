"""Experiments are the models: a description and tags of their own, and a summary of their versions.

The experiment's own record is its partition's counter row (kept by every change in the same atomic
write: latest live version, count, times, description, tags), so `get_experiment` is exact. The
listing of every experiment reads the `experiments` index partition, a projection of those rows
kept by the index subscriber (`modelrepo.projections`) from the outbox: one bounded query a page.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from modelrepo import outbox, tables
from modelrepo.errors import NotFound, Unprocessable
from modelrepo.limits import MAX_TAGS
from modelrepo.model import (
    Experiment,
    Page,
    check_actor,
    check_description,
    check_experiment_id,
    check_tag_key,
    check_tag_value,
)
from modelrepo.unit_of_work import Context, UnitOfWork, execute, page


def summary(experiment_id: str, counter: Mapping[str, Any]) -> Experiment:
    """An experiment as its counter row describes it."""
    latest = int(counter.get("latest", 0))
    live = int(counter.get("latestLive", latest))
    return Experiment(
        experiment_id=experiment_id,
        description=counter.get("description"),
        tags=dict(counter.get("tags", {})),
        latest_version=live or None,
        version_count=int(counter.get("versionCount", latest)),
        created_at=counter.get("createdAt"),
        updated_at=counter.get("updatedAt"),
    )


def get_experiment(ctx: Context, experiment_id: str) -> Experiment:
    check_experiment_id(experiment_id)
    counter = ctx.metadata.get(tables.experiment_partition(experiment_id), tables.COUNTER_ROW)
    if counter is not None:
        return summary(experiment_id, counter.data)
    indexed = ctx.metadata.get(tables.EXPERIMENTS_PARTITION, tables.experiment_index_row(experiment_id))
    if indexed is not None and "experiment" in indexed.data:  # artifacts recorded, nothing registered yet
        return Experiment.model_validate(indexed.data["experiment"])
    raise NotFound(f"experiment {experiment_id!r} has no recorded artifacts and no versions")


Decision = tuple[dict[str, Any], str, dict[str, Any]]  # fields of the record, audit action, details


def _update(
    ctx: Context, experiment_id: str, by: str, doing: str, decide: Callable[[Mapping[str, Any]], Decision]
) -> Experiment:
    """Change the experiment's own record as `decide` says, with its event; creates it if new (an
    MLflow client creates a registered model before any version)."""
    check_experiment_id(experiment_id)
    check_actor(by)

    def command(uow: UnitOfWork) -> Experiment:
        fields, action, details = decide(uow.counter)
        uow.set_counter(**fields)
        uow.emit(
            outbox.EXPERIMENT_UPDATED,
            f"experiments/{experiment_id}",
            {},
            actor=by,
            action=action,
            about=f"experiment {experiment_id}",
            details=details,
        )
        described = summary(experiment_id, uow.counter)
        uow.replace_event_data(described.to_json())
        return described

    return execute(ctx, tables.experiment_partition(experiment_id), f"{doing} {experiment_id!r}", command)


def describe(ctx: Context, experiment_id: str, description: str, by: str) -> Experiment:
    check_description(description)
    return _update(
        ctx,
        experiment_id,
        by,
        "describing",
        lambda _counter: ({"description": description}, "experiment.described", {"description": description}),
    )


def set_tag(ctx: Context, experiment_id: str, key: str, value: str, by: str) -> Experiment:
    check_tag_key(key)
    check_tag_value(value)

    def decide(counter: Mapping[str, Any]) -> Decision:
        tags = dict(counter.get("tags", {}))
        if key not in tags and len(tags) >= MAX_TAGS:
            raise Unprocessable(f"experiment {experiment_id!r} already has the maximum of {MAX_TAGS} tags")
        return {"tags": {**tags, key: value}}, "experiment.tagged", {"key": key, "value": value}

    return _update(ctx, experiment_id, by, "tagging", decide)


def delete_tag(ctx: Context, experiment_id: str, key: str, by: str) -> Experiment:
    check_tag_key(key)

    def decide(counter: Mapping[str, Any]) -> Decision:
        tags = dict(counter.get("tags", {}))
        if key not in tags:
            raise NotFound(f"experiment {experiment_id!r} has no tag {key!r}")
        del tags[key]
        return {"tags": tags}, "experiment.untagged", {"key": key}

    return _update(ctx, experiment_id, by, "untagging", decide)


def list_experiments(ctx: Context, *, limit: int, cursor: str | None = None, prefix: str = "") -> Page[Experiment]:
    """Every experiment with a recorded artifact or a version, by id; one bounded query a page."""
    if prefix:
        check_experiment_id(prefix)  # a prefix of an id is itself a valid id, or a mistake
    items, next_cursor = page(
        ctx.metadata, tables.EXPERIMENTS_PARTITION, tables.experiment_index_row(prefix), limit, cursor
    )
    return Page[Experiment](
        items=[
            Experiment.model_validate(item.data["experiment"])
            if "experiment" in item.data
            else Experiment(experiment_id=item.data["experimentId"])
            for item in items
        ],
        next_cursor=next_cursor,
    )
