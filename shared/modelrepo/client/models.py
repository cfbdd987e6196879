"""The records the client returns: the core's own record types, read leniently.

The core's records forbid unknown fields, which is right for what it stores. A client may talk to
a newer service, though, whose answers carry fields this version does not know; these subclasses
keep such fields (they survive `to_json()`) instead of refusing the whole answer. Each is an
instance of the core class it extends, so callers annotate with `modelrepo.model` types.
"""

from __future__ import annotations

from pydantic import ConfigDict

from modelrepo import api, model, outbox
from modelrepo.commands import versions
from modelrepo.service import DeploymentHistory as CoreDeploymentHistory

LENIENT = ConfigDict(extra="allow")


class RunArtifact(model.RunArtifact):
    model_config = LENIENT


class Rejection(model.Rejection):
    model_config = LENIENT


class RegisteredModel(model.RegisteredModel):
    model_config = LENIENT


class Deployment(model.Deployment):
    model_config = LENIENT


class AuditEntry(model.AuditEntry):
    model_config = LENIENT


class DeploymentHistory(CoreDeploymentHistory):
    """One page of a target's deployments: the current one and the history, newest first."""

    model_config = LENIENT

    current: Deployment | None
    history: list[Deployment]  # type: ignore[assignment]  # the lenient subclass of the same record


class Experiment(model.Experiment):
    model_config = LENIENT


class TargetPolicy(model.TargetPolicy):
    model_config = LENIENT


class ManifestEntry(versions.ManifestEntry):
    model_config = LENIENT


class DeadLetter(api.DeadLetterView):
    model_config = LENIENT


class CloudEvent(outbox.CloudEvent):
    model_config = ConfigDict(frozen=True, extra="allow")
