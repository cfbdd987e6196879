"""`modelrepo`: the command line.

Every command except `serve` and `upload` is an HTTP API call, sent either in-process to the local
root (default) or over HTTP to a running service (`--url`), so the CLI validates and answers
exactly as the API does.
"""

from __future__ import annotations

import argparse
import contextlib
import getpass
import hashlib
import json
import logging
import os
import signal
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any, BinaryIO, Protocol, cast
from urllib.parse import quote, unquote, urlencode

from modelrepo.api import Api, BodyStream, Request, Response
from modelrepo.backends import BACKENDS, open_backend
from modelrepo.dispatch import ParkedDelivery, parked_deliveries, retry_now
from modelrepo.errors import InvalidInput, ModelRepoError
from modelrepo.events import ObjectCreated
from modelrepo.limits import parse_version
from modelrepo.model import ArtifactKey
from modelrepo.ports import DeadLetter
from modelrepo.recovery import Reconciler, replay_dead_letters
from modelrepo.settings import LocalSettings

PROGRESS_THRESHOLD_BYTES = 8 * 1024 * 1024


class CommandFailed(Exception):
    """Ends the command with a one-line reason and a non-zero exit code."""


# --- transports ----------------------------------------------------------------------------------


class Transport(Protocol):
    def send(self, request: Request) -> Response: ...


class InProcess:
    def __init__(self, api: Api) -> None:
        self.api = api

    def send(self, request: Request) -> Response:
        return self.api.handle(request)


class OverHttp:
    def __init__(self, base_url: str, api_key: str | None) -> None:
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key

    def send(self, request: Request) -> Response:
        url = self.base_url + request.path
        if request.query:
            url += "?" + urlencode(request.query)
        headers = dict(request.headers)
        if request.body:
            headers["Content-Type"] = "application/json"
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        outgoing = urllib.request.Request(url, data=request.body or None, headers=headers, method=request.method)
        try:
            answer = urllib.request.urlopen(outgoing, timeout=60)
        except urllib.error.HTTPError as error:
            return Response(error.code, dict(error.headers.items()), error.read())
        except urllib.error.URLError as error:
            raise CommandFailed(f"cannot reach {self.base_url}: {error.reason}") from None
        headers_in = dict(answer.headers.items())
        if headers_in.get("Content-Type", "").startswith("application/octet-stream"):
            resources = ExitStack()
            resources.callback(answer.close)
            return Response(answer.status, headers_in, stream=BodyStream(cast(BinaryIO, answer), resources))
        with answer:
            return Response(answer.status, headers_in, answer.read())


# --- commands ------------------------------------------------------------------------------------


def _path(*segments: str | int) -> str:
    return "/api/" + "/".join(quote(str(s), safe="") for s in segments)


def _call(
    transport: Transport,
    method: str,
    path: str,
    body: dict[str, Any] | None = None,
    query: dict[str, str] | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    payload = json.dumps(body).encode() if body is not None else b""
    response = transport.send(Request(method, path, query or {}, headers or {}, payload))
    if response.status >= 400:
        if response.stream is not None:
            response.stream.close()
        try:
            detail = json.loads(response.body).get("detail", "")
        except (ValueError, AttributeError):
            detail = response.body.decode("utf-8", "replace")[:200]
        raise CommandFailed(f"{detail} (HTTP {response.status})")
    return response


def _all_pages(
    transport: Transport, path: str, limit: int, filters: dict[str, str] | None = None
) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    cursor: str | None = None
    while len(items) < limit:
        query = {**(filters or {}), "limit": str(min(1000, limit - len(items)))}
        if cursor:
            query["cursor"] = cursor
        page = _call(transport, "GET", path, query=query).json()
        items.extend(page["items"])
        cursor = page.get("nextCursor")
        if not cursor:
            break
    return items


Printer = Callable[[Any, str], None]


def run_command(args: argparse.Namespace, transport: Transport, show: Printer) -> None:
    command = args.command
    if command == "artifacts":
        show(_call(transport, "GET", _path("runs", args.run, "artifacts")).json()["items"], "artifact")
    elif command == "rejections":
        show(_all_pages(transport, _path("rejections"), args.limit), "rejection")
    elif command == "register":
        body: dict[str, Any] = {
            "experimentId": args.experiment,
            "runArtifactId": args.run_artifact_id,
            "registeredBy": args.by,
        }
        if args.description is not None:
            body["description"] = args.description
        body.update(_metadata_arguments(args))
        headers = {"idempotency-key": args.idempotency_key} if args.idempotency_key else {}
        show(_call(transport, "POST", _path("register"), body, headers=headers).json(), "model")
    elif command == "versions":
        filters = _pairs(args.tag, "--tag", prefix="tag.")
        if args.status:
            filters["status"] = args.status
        filters.update({flag: "true" for flag in ("archived", "deleted") if getattr(args, flag)})
        show(_all_pages(transport, _path("experiments", args.experiment, "models"), args.limit, filters), "model")
    elif command == "experiments":
        filters = {"prefix": args.prefix} if args.prefix else {}
        show(_all_pages(transport, _path("experiments"), args.limit, filters), "experiment")
    elif command == "describe":
        path = _path("experiments", args.experiment)
        if args.set is None:
            show(_call(transport, "GET", path).json(), "experiment")
        else:
            show(_call(transport, "PATCH", path, {"description": args.set, "by": _by(args)}).json(), "experiment")
    elif command in ("approve", "reject"):
        body = {"status": "approved" if command == "approve" else "rejected", "by": args.by}
        if args.comment is not None:
            body["comment"] = args.comment
        path = _path("experiments", args.experiment, "models", args.version, "approval")
        show(_call(transport, "POST", path, body).json(), "model")
    elif command in ("archive", "restore"):
        path = _path("experiments", args.experiment, "models", args.version, command)
        show(_call(transport, "POST", path, {"by": args.by}).json(), "model")
    elif command == "delete":
        query = {"by": args.by, **({"reason": args.reason} if args.reason else {})}
        path = _path("experiments", args.experiment, "models", args.version)
        show(_call(transport, "DELETE", path, query=query).json(), "model")
    elif command == "update":
        body = {**_metadata_arguments(args), "by": args.by}
        if args.description is not None:
            body["description"] = args.description
        path = _path("experiments", args.experiment, "models", args.version)
        show(_call(transport, "PATCH", path, body).json(), "model")
    elif command == "search":
        filters = _pairs(args.tag, "--tag", prefix="tag.")
        if args.status:
            filters["status"] = args.status
        show(_all_pages(transport, _path("search", "models"), args.limit, filters), "model")
    elif command == "target":
        path = _path("experiments", args.experiment, "targets", args.target)
        if args.require_approval is None:
            show(_call(transport, "GET", path).json(), "target")
        else:
            body = {"requireApproval": args.require_approval, "by": _by(args)}
            show(_call(transport, "PUT", path, body).json(), "target")
    elif command == "show":
        show(_call(transport, "GET", _path("experiments", args.experiment, "models", args.version)).json(), "model")
    elif command == "tag":
        body = {"value": args.value, "by": args.by}
        path = _path("experiments", args.experiment, "models", args.version, "tags", args.key)
        show(_call(transport, "PUT", path, body).json(), "model")
    elif command == "untag":
        path = _path("experiments", args.experiment, "models", args.version, "tags", args.key)
        show(_call(transport, "DELETE", path, query={"by": args.by}).json(), "model")
    elif command == "deploy":
        version = _version_number(args.version)
        if version is None:  # @target or latest: what it names right now
            version = _call(transport, "GET", _path("experiments", args.experiment, "models", args.version)).json()[
                "version"
            ]
        body = {"version": version, "target": args.target, "deployedBy": args.by}
        show(_call(transport, "POST", _path("experiments", args.experiment, "deployments"), body).json(), "deployment")
    elif command == "rollback":
        path = _path("experiments", args.experiment, "deployments", args.target, "rollback")
        show(_call(transport, "POST", path, {"deployedBy": args.by}).json(), "deployment")
    elif command == "deployments":
        if args.target:
            history = _call(transport, "GET", _path("experiments", args.experiment, "deployments", args.target)).json()
            show(history["history"], "deployment")
        else:
            show(
                _call(transport, "GET", _path("experiments", args.experiment, "deployments")).json()["items"],
                "deployment",
            )
    elif command == "audit":
        show(_all_pages(transport, _path("experiments", args.experiment, "audit"), args.limit), "audit")
    elif command == "download":
        show(_download(transport, args.experiment, args.version, Path(args.dest), args.force), "download")
    elif command == "events":
        _events(transport, args, show)
    else:  # pragma: no cover - argparse only admits the commands above
        raise CommandFailed(f"unknown command {command}")


def _events(transport: Transport, args: argparse.Namespace, show: Printer) -> None:
    """Page through an experiment's (or a run's) events; with --follow, keep polling for new ones."""
    path = _path("runs", args.run, "events") if args.run else _path("experiments", args.experiment, "events")
    if args.after < 0:
        raise CommandFailed("--after must be 0 or a sequence number")
    after, seen = args.after, []
    while True:
        page = _call(transport, "GET", path, query={"after": str(after), "limit": "1000"}).json()
        if page["items"]:
            after = page["items"][-1]["sequence"]
            if not args.follow:
                seen.extend(page["items"])
            elif args.json:
                for event in page["items"]:
                    print(json.dumps(event, ensure_ascii=False), flush=True)
            else:
                show(page["items"], "event")
        if page.get("nextCursor"):
            continue
        if not args.follow:
            show(seen, "event")
            return
        time.sleep(args.poll)


OPERATOR_COMMANDS = ("reconcile", "dead-letters", "replay")


def run_operator_command(
    args: argparse.Namespace, settings: LocalSettings, environ: Mapping[str, str], show: Printer
) -> None:
    """Commands that work on the storage itself, locally or in a cloud, never through the API."""
    if settings.url:
        raise CommandFailed(f"{args.command} works on the storage directly: choose it with --backend, not --url")
    if args.command != "reconcile" and not 1 <= args.limit <= 1000:
        raise CommandFailed("--limit must be from 1 to 1000")
    backend = open_backend(args.backend, environ, settings)
    try:
        if args.command == "reconcile":
            if args.budget is not None and args.budget <= 0:
                raise CommandFailed("--budget must be a positive number of seconds")
            show(Reconciler(backend.repository).run(budget_seconds=args.budget).to_json(), "sweep")
        elif args.command == "dead-letters":
            letters = [_letter_row(letter) for letter in backend.dead_letters.peek(args.limit)]
            waiting = parked_deliveries(backend.repository.metadata)[: max(0, args.limit - len(letters))]
            show(letters + [_parked_row(p) for p in waiting], "letter")
        else:
            outcomes = [
                o.to_json() for o in replay_dead_letters(backend.repository, backend.dead_letters, limit=args.limit)
            ]
            for parked in parked_deliveries(backend.repository.metadata)[: max(0, args.limit - len(outcomes))]:
                retry_now(backend.repository.metadata, parked, backend.repository.context.now())
                outcomes.append({**_parked_row(parked), "outcomes": ["retry now"], "replayed": True, "error": None})
            show(outcomes, "replay")
    finally:
        backend.close()


def _parked_row(parked: ParkedDelivery) -> dict[str, Any]:
    """An event delivery that is parked, shown beside the upload dead letters (its dispatcher retries it
    on its own with growing pauses; `replay` makes it try at once)."""
    return {
        "handle": f"{parked.subscriber}/{parked.partition}",
        "source": "delivery",
        "keys": [f"{parked.partition} from event {parked.sequence}"],
        "failedAt": parked.failed_at.isoformat(),
        "detail": f"{parked.error} ({parked.attempts} attempts)",
    }


def _letter_row(letter: DeadLetter) -> dict[str, Any]:
    return {
        "handle": letter.handle,
        "source": letter.source,
        "keys": [event.key for event in letter.events],
        "failedAt": letter.failed_at.isoformat() if letter.failed_at else None,
        "detail": letter.detail,
    }


def _version_number(raw: str) -> int | None:
    """A version number, or None for `latest` and `@<target>`, which the service resolves."""
    if raw == "latest" or raw.startswith("@"):
        return None
    try:
        return parse_version(raw)
    except InvalidInput as error:
        raise CommandFailed(f"{error.detail}, `latest` or @<target>") from None


def _by(args: argparse.Namespace) -> str:
    if not args.by:
        raise CommandFailed("say who makes the change with --by")
    return str(args.by)


def _pairs(values: Sequence[str] | None, option: str, *, prefix: str = "") -> dict[str, str]:
    """NAME=VALUE arguments (repeatable options) as a dict."""
    pairs: dict[str, str] = {}
    for value in values or ():
        name, sep, rest = value.partition("=")
        if not sep or not name:
            raise CommandFailed(f"{option} {value!r} must be NAME=VALUE")
        pairs[prefix + name] = rest
    return pairs


def _metadata_arguments(args: argparse.Namespace) -> dict[str, Any]:
    """Version metadata from the command line (register and update)."""
    body: dict[str, Any] = {}
    metrics = _pairs(args.metric, "--metric")
    if metrics:
        try:
            body["metrics"] = {name: float(value) for name, value in metrics.items()}
        except ValueError:
            raise CommandFailed("--metric values must be numbers, e.g. --metric auc=0.91") from None
    if params := _pairs(args.param, "--param"):
        body["params"] = params
    if args.signature is not None:
        try:
            body["signature"] = json.loads(Path(args.signature).read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            raise CommandFailed(f"--signature {args.signature}: cannot read a JSON object ({error})") from None
    lineage = {
        key: value
        for key, value in (("sourceCommit", args.source_commit), ("datasets", args.dataset), ("notes", args.notes))
        if value
    }
    if lineage:
        body["lineage"] = lineage
    return body


def _download(transport: Transport, experiment: str, version: str, dest: Path, force: bool) -> dict[str, Any]:
    response = _call(transport, "GET", _path("experiments", experiment, "models", version, "download"))
    assert response.stream is not None
    with ExitStack() as cleanup:
        cleanup.callback(response.stream.close)
        headers = {k.lower(): v for k, v in response.headers.items()}
        expected = headers.get("etag", "").strip('"')
        name = _filename(headers.get("content-disposition", "")) or f"{experiment}-v{version}.bin"
        target = dest / name if dest.is_dir() else dest
        if target.exists() and not force:
            raise CommandFailed(f"{target} exists; pass --force to replace it")
        temp = target.with_name(f".{target.name}.download-{os.getpid()}")
        digest = hashlib.sha256()
        size = 0
        try:
            with temp.open("wb") as out:
                for chunk in response.stream:
                    out.write(chunk)
                    digest.update(chunk)
                    size += len(chunk)
            if expected and digest.hexdigest() != expected:
                raise CommandFailed(f"downloaded bytes have sha256 {digest.hexdigest()}, expected {expected}")
            os.replace(temp, target)
        except OSError as error:
            raise CommandFailed(f"cannot write {target}: {error.strerror}") from None
        finally:
            temp.unlink(missing_ok=True)
    return {"path": str(target), "size": size, "sha256": digest.hexdigest()}


def _filename(disposition: str) -> str | None:
    marker = "filename*=UTF-8''"
    if marker not in disposition:
        return None
    name = unquote(disposition.split(marker, 1)[1].split(";", maxsplit=1)[0])
    return name if name and "/" not in name and name not in (".", "..") else None


def upload(
    settings: LocalSettings, experiment: str, run: str, source: Path, name: str | None, show: Printer, quiet: bool
) -> None:
    """Put a file into the drop folder atomically and record it right away."""
    from modelrepo.local.bootstrap import build_repository

    if settings.url:
        raise CommandFailed("upload writes into the bucket directly: run it where the root is, without --url")
    where = ArtifactKey(experiment, run, name or source.name)
    try:
        ArtifactKey.parse(where.key)
    except InvalidInput as error:
        raise CommandFailed(error.detail) from None
    if not source.is_file():
        raise CommandFailed(f"{source} is not a readable file")
    repository = build_repository(settings, project_inline=True)
    try:
        with source.open("rb") as data:
            size = source.stat().st_size
            if size >= PROGRESS_THRESHOLD_BYTES and not quiet and sys.stderr.isatty():
                from rich.progress import Progress

                with Progress(transient=True) as progress:
                    task = progress.add_task(f"uploading {source.name}", total=size)
                    info = repository.artifacts.put(where.key, data, progress=lambda n: progress.advance(task, n))
            else:
                info = repository.artifacts.put(where.key, data)
        result = repository.record_artifact(ObjectCreated.from_object(info, f"cli:{getpass.getuser()}"))
    finally:
        repository.metadata.close()
    if result.artifact is None:
        raise CommandFailed(f"{where.key} was not recorded: {result.outcome}")
    show(result.artifact.to_json(), "artifact")


# --- output --------------------------------------------------------------------------------------

VIEWS: dict[str, tuple[tuple[str, str], ...]] = {
    "artifact": (
        ("runArtifactId", "artifact id"),
        ("name", "name"),
        ("size", "size"),
        ("sha256", "sha256"),
        ("uploadedAt", "uploaded"),
    ),
    "rejection": (("key", "key"), ("reason", "reason"), ("recordedAt", "recorded")),
    "model": (
        ("version", "version"),
        ("artifactName", "artifact"),
        ("registeredBy", "by"),
        ("registeredAt", "registered"),
        ("sha256", "sha256"),
        ("approval", "approval"),
        ("tags", "tags"),
        ("description", "description"),
    ),
    "deployment": (
        ("target", "target"),
        ("version", "version"),
        ("previousVersion", "previous"),
        ("deployedBy", "by"),
        ("deployedAt", "deployed"),
    ),
    "audit": (("at", "at"), ("actor", "actor"), ("action", "action"), ("subject", "subject")),
    "download": (("path", "path"), ("size", "size"), ("sha256", "sha256")),
    "experiment": (
        ("experimentId", "experiment"),
        ("latestVersion", "latest"),
        ("versionCount", "versions"),
        ("description", "description"),
        ("tags", "tags"),
        ("updatedAt", "updated"),
    ),
    "target": (("target", "target"), ("requireApproval", "approval required"), ("updatedBy", "by")),
    "event": (("sequence", "seq"), ("type", "type"), ("subject", "subject"), ("actor", "actor"), ("time", "time")),
    "sweep": (
        ("objectsScanned", "objects"),
        ("recorded", "recorded"),
        ("rejected", "rejected"),
        ("runsChecked", "runs"),
        ("vanished", "vanished"),
        ("indexed", "indexed"),
        ("released", "released"),
        ("complete", "complete"),
    ),
    "letter": (
        ("handle", "dead letter"),
        ("source", "source"),
        ("keys", "keys"),
        ("failedAt", "failed"),
        ("detail", "detail"),
    ),
    "replay": (
        ("handle", "dead letter"),
        ("keys", "keys"),
        ("outcomes", "outcomes"),
        ("replayed", "replayed"),
        ("error", "error"),
    ),
}


def _cell(key: str, value: Any) -> str:
    if value is None:
        return ""
    if key == "sha256":
        return str(value)[:12]
    if isinstance(value, dict):
        return ", ".join(f"{k}={v}" for k, v in value.items())
    if isinstance(value, list):
        return ", ".join(str(v) for v in value)
    return str(value)


def print_table(payload: Any, view: str) -> None:
    from rich.console import Console
    from rich.table import Table

    rows = payload if isinstance(payload, list) else [payload]
    console = Console()
    if not rows:
        console.print("(none)")
        return
    columns = VIEWS[view]
    table = Table(*[title for _, title in columns])
    for row in rows:
        table.add_row(*[_cell(key, row.get(key)) for key, _ in columns])
    console.print(table)


def print_json(payload: Any, view: str) -> None:
    print(json.dumps(payload, indent=2, ensure_ascii=False))


# --- argument parsing ----------------------------------------------------------------------------


STATUSES = ("pending", "approved", "rejected")


def _metadata_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--metric", action="append", metavar="NAME=NUMBER", help="repeatable")
    parser.add_argument("--param", action="append", metavar="NAME=VALUE", help="repeatable")
    parser.add_argument("--signature", metavar="FILE", help="a JSON file (e.g. MLflow's input/output schema)")
    parser.add_argument("--source-commit")
    parser.add_argument("--dataset", action="append", metavar="URI", help="repeatable")
    parser.add_argument("--notes")


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--root", help="local repository folder (default: $MODELREPO_ROOT or ~/.mlops/model-repository)"
    )
    common.add_argument("--url", help="talk to a running service instead (default: $MODELREPO_URL)")
    common.add_argument("--json", action="store_true", help="print JSON for scripts")
    parser = argparse.ArgumentParser(prog="modelrepo", description="A versioned model repository.", parents=[common])
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help_text: str) -> argparse.ArgumentParser:
        return commands.add_parser(name, help=help_text, description=help_text, parents=[common])

    serve = command("serve", "run the local runtime: drop-folder watcher + HTTP API")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=7071)
    serve.add_argument("--verbose", action="store_true")
    serve.add_argument(
        "--webhook",
        action="append",
        default=[],
        metavar="URL",
        help="POST every event to URL (Standard Webhooks, signed with $MODELREPO_WEBHOOK_SECRET); repeatable",
    )

    up = command("upload", "put a file into the bucket and record it")
    up.add_argument("experiment")
    up.add_argument("run")
    up.add_argument("path", type=Path)
    up.add_argument("--name", help="artifact name, may contain '/' (default: the file's name)")

    command("artifacts", "list a run's artifacts").add_argument("run")
    command("rejections", "list uploads that could not be recorded").add_argument("--limit", type=int, default=100)

    reg = command("register", "register a run artifact as the experiment's next version")
    reg.add_argument("experiment")
    reg.add_argument("run_artifact_id")
    reg.add_argument("--by", required=True)
    reg.add_argument("--description")
    reg.add_argument("--idempotency-key")
    _metadata_options(reg)

    versions = command("versions", "list an experiment's versions, newest first")
    versions.add_argument("experiment")
    versions.add_argument("--limit", type=int, default=50)
    versions.add_argument("--status", choices=STATUSES, help="only versions with this approval")
    versions.add_argument("--tag", action="append", metavar="KEY=VALUE", help="only versions with this tag")
    versions.add_argument("--archived", action="store_true", help="show archived versions too")
    versions.add_argument("--deleted", action="store_true", help="show deleted versions too")

    experiments = command("experiments", "list the experiments (models)")
    experiments.add_argument("--prefix", help="only ids starting with this")
    experiments.add_argument("--limit", type=int, default=100)

    describe = command("describe", "show an experiment, or set its description with --set")
    describe.add_argument("experiment")
    describe.add_argument("--set", metavar="DESCRIPTION")
    describe.add_argument("--by")

    for name, what in (("approve", "approve a version"), ("reject", "reject a version")):
        decide = command(name, what)
        decide.add_argument("experiment")
        decide.add_argument("version", help="a number, latest, or @target")
        decide.add_argument("--by", required=True)
        decide.add_argument("--comment")

    for name, what in (
        ("archive", "archive a version (it leaves latest and listings)"),
        ("restore", "restore an archived version"),
    ):
        lifecycle = command(name, what)
        lifecycle.add_argument("experiment")
        lifecycle.add_argument("version", help="a number, latest, or @target")
        lifecycle.add_argument("--by", required=True)

    delete = command("delete", "delete a version (a tombstone; its bytes are released)")
    delete.add_argument("experiment")
    delete.add_argument("version", help="a number, latest, or @target")
    delete.add_argument("--by", required=True)
    delete.add_argument("--reason")

    update = command("update", "update a version's metadata (metrics, params, signature: once)")
    update.add_argument("experiment")
    update.add_argument("version", help="a number, latest, or @target")
    update.add_argument("--by", required=True)
    update.add_argument("--description")
    _metadata_options(update)

    search = command("search", "versions of every experiment by tag and approval")
    search.add_argument("--tag", action="append", metavar="KEY=VALUE")
    search.add_argument("--status", choices=STATUSES)
    search.add_argument("--limit", type=int, default=100)

    target = command("target", "show a target's rules, or require approval there")
    target.add_argument("experiment")
    target.add_argument("target")
    rule = target.add_mutually_exclusive_group()
    rule.add_argument("--require-approval", dest="require_approval", action="store_true", default=None)
    rule.add_argument("--no-require-approval", dest="require_approval", action="store_false")
    target.add_argument("--by")

    show = command("show", "show one version (a number, latest, or @target)")
    show.add_argument("experiment")
    show.add_argument("version")

    tag = command("tag", "set a tag on a version")
    tag.add_argument("experiment")
    tag.add_argument("version")
    tag.add_argument("key")
    tag.add_argument("value")
    tag.add_argument("--by", required=True)

    untag = command("untag", "remove a tag from a version")
    untag.add_argument("experiment")
    untag.add_argument("version")
    untag.add_argument("key")
    untag.add_argument("--by", required=True)

    deploy = command("deploy", "deploy a version to a target")
    deploy.add_argument("experiment")
    deploy.add_argument("version")
    deploy.add_argument("target")
    deploy.add_argument("--by", required=True)

    rollback = command("rollback", "deploy again the version before the current one")
    rollback.add_argument("experiment")
    rollback.add_argument("target")
    rollback.add_argument("--by", required=True)

    deployments = command("deployments", "current deployment per target, or one target's history")
    deployments.add_argument("experiment")
    deployments.add_argument("target", nargs="?")

    audit = command("audit", "an experiment's audit trail")
    audit.add_argument("experiment")
    audit.add_argument("--limit", type=int, default=100)

    reconcile = command("reconcile", "record objects the events missed; flag records whose object vanished")
    reconcile.add_argument("--backend", default="local", choices=BACKENDS)
    reconcile.add_argument("--budget", type=float, help="stop after this many seconds; the next run resumes")

    letters = command("dead-letters", "list upload notifications that were given up on")
    letters.add_argument("--backend", default="local", choices=BACKENDS)
    letters.add_argument("--limit", type=int, default=100)

    replay = command("replay", "record the uploads of dead letters again, removing those that succeed")
    replay.add_argument("--backend", default="local", choices=BACKENDS)
    replay.add_argument("--limit", type=int, default=100)

    events = command("events", "an experiment's events (CloudEvents), oldest first")
    events.add_argument("experiment", nargs="?", help="the experiment (or give --run)")
    events.add_argument("--run", help="a run's upload events instead")
    events.add_argument("--after", type=int, default=0, help="start after this sequence number")
    events.add_argument("--follow", action="store_true", help="keep waiting for new events (Ctrl-C stops)")
    events.add_argument("--poll", type=float, default=1.0, help=argparse.SUPPRESS)

    download = command("download", "download a version's pinned bytes")
    download.add_argument("experiment")
    download.add_argument("version")
    download.add_argument("dest", help="a file, or a folder to save under the artifact's name")
    download.add_argument("--force", action="store_true", help="replace an existing file")
    return parser


def main(argv: Sequence[str] | None = None, environ: dict[str, str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    show: Printer = print_json if args.json else print_table
    try:
        settings = LocalSettings.from_environment(
            os.environ if environ is None else environ,
            root=args.root,
            url=args.url,
            host=getattr(args, "host", None),
            port=getattr(args, "port", None),
            webhooks=tuple(getattr(args, "webhook", ())) or None,
        )
        if args.command == "serve":
            return _serve(settings, args.verbose)
        if args.command == "upload":
            upload(settings, args.experiment, args.run, args.path, args.name, show, args.json)
            return 0
        if args.command == "events" and not (args.experiment or args.run):
            raise CommandFailed("name an experiment, or a run with --run")
        if args.command in OPERATOR_COMMANDS:
            run_operator_command(args, settings, os.environ if environ is None else environ, show)
            return 0
        if settings.url:
            key = settings.api_key.get_secret_value() if settings.api_key else None
            run_command(args, OverHttp(settings.url, key), show)
        else:
            from modelrepo.local.bootstrap import build_api

            api = build_api(settings)
            try:
                run_command(args, InProcess(api), show)
            finally:
                api.repository.metadata.close()
        return 0
    except (CommandFailed, ModelRepoError) as error:
        detail = error.detail if isinstance(error, ModelRepoError) else str(error)
        print(f"modelrepo: error: {detail}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _serve(settings: LocalSettings, verbose: bool) -> int:
    from modelrepo.local.runtime import LocalRuntime

    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    runtime = LocalRuntime(settings)
    signal.signal(signal.SIGTERM, _interrupt)
    print(f"modelrepo: serving {settings.root} on {runtime.url}/api (Ctrl-C stops)", file=sys.stderr)
    with contextlib.suppress(KeyboardInterrupt):
        runtime.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
