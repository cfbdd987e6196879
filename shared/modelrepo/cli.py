"""`modelrepo`: the command line.

Every command except `serve` and `upload` is an HTTP API call, sent either in-process to the local
root (default) or over HTTP to a running service (`--url`), so the CLI validates and answers
exactly as the API does.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import getpass
import hashlib
import json
import logging
import math
import os
import signal
import stat
import sys
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any, BinaryIO, NoReturn, Protocol, cast
from urllib.parse import quote, unquote, urlencode

from pydantic import TypeAdapter, ValidationError

from modelrepo.api import Api, BodyStream, Request, Response
from modelrepo.backends import BACKENDS, open_backend
from modelrepo.errors import InvalidInput, ModelRepoError
from modelrepo.events import ObjectCreated
from modelrepo.model import ArtifactKey, Version
from modelrepo.ports import DeadLetter
from modelrepo.recovery import Reconciler, replay_dead_letters
from modelrepo.service import MAX_PAGE, ModelRepository
from modelrepo.settings import LocalSettings

PROGRESS_THRESHOLD_BYTES = 8 * 1024 * 1024


class CommandFailed(Exception):
    """Ends the command with a one-line reason and a non-zero exit code."""


class BadArgument(CommandFailed):
    """An argument is wrong in itself: one line, and argparse's exit code for usage errors (2)."""


USAGE_ERROR = 2


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
        failure = BadArgument if response.status == 400 else CommandFailed
        raise failure(f"{detail} (HTTP {response.status})")
    return response


def _all_pages(transport: Transport, path: str, limit: int) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    cursor: str | None = None
    while len(items) < limit:
        query = {"limit": str(min(1000, limit - len(items)))}
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
        headers = {"idempotency-key": args.idempotency_key} if args.idempotency_key else {}
        show(_call(transport, "POST", _path("register"), body, headers=headers).json(), "model")
    elif command == "versions":
        show(_all_pages(transport, _path("experiments", args.experiment, "models"), args.limit), "model")
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
        body = {"version": int(args.version), "target": args.target, "deployedBy": args.by}
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
    else:  # pragma: no cover - argparse only admits the commands above
        raise CommandFailed(f"unknown command {command}")


OPERATOR_COMMANDS = ("reconcile", "dead-letters", "replay")


def run_operator_command(
    args: argparse.Namespace, settings: LocalSettings, environ: Mapping[str, str], show: Printer
) -> None:
    """Commands that work on the storage itself, locally or in a cloud, never through the API."""
    if settings.url:
        raise CommandFailed(f"{args.command} works on the storage directly: choose it with --backend, not --url")
    backend = open_backend(args.backend, environ, settings)
    try:
        if args.command == "reconcile":
            show(Reconciler(backend.repository).run(budget_seconds=args.budget).to_json(), "sweep")
        elif args.command == "dead-letters":
            letters = backend.dead_letters.peek(args.limit)
            show([_letter_row(letter) for letter in letters], "letter")
        else:
            outcomes = replay_dead_letters(backend.repository, backend.dead_letters, limit=args.limit)
            show([outcome.to_json() for outcome in outcomes], "replay")
    finally:
        backend.close()
        _close_artifacts(backend.repository)


def _close_artifacts(repository: ModelRepository) -> None:
    """The folder store keeps its ledger open; a cloud store has nothing to close."""
    close = getattr(repository.artifacts, "close", None)
    if callable(close):
        close()


def _letter_row(letter: DeadLetter) -> dict[str, Any]:
    return {
        "handle": letter.handle,
        "source": letter.source,
        "keys": [event.key for event in letter.events],
        "failedAt": letter.failed_at.isoformat() if letter.failed_at else None,
        "detail": letter.detail,
    }


def _download(transport: Transport, experiment: str, version: str, dest: Path, force: bool) -> dict[str, Any]:
    """Save a version's bytes at DEST (a regular file, or a folder to save under the artifact's
    name): into a temporary file created beside it with O_EXCL|O_NOFOLLOW (`tempfile.mkstemp`,
    so nothing planted at a predictable name can redirect the write), checked against the digest,
    then renamed into place. Only a regular file is ever replaced, and only with --force."""
    response = _call(transport, "GET", _path("experiments", experiment, "models", version, "download"))
    assert response.stream is not None
    with ExitStack() as cleanup:
        cleanup.callback(response.stream.close)
        headers = {k.lower(): v for k, v in response.headers.items()}
        expected = headers.get("etag", "").strip('"')
        name = _filename(headers.get("content-disposition", "")) or f"{experiment}-v{version}.bin"
        target = dest / name if dest.is_dir() else dest
        _check_replaceable(target, force)
        try:
            fd, temp_name = tempfile.mkstemp(prefix=".modelrepo-download-", dir=target.parent)
        except OSError as error:
            raise CommandFailed(f"cannot write {target}: {error.strerror}") from None
        temp = Path(temp_name)
        cleanup.callback(temp.unlink, missing_ok=True)
        digest = hashlib.sha256()
        size = 0
        try:
            with os.fdopen(fd, "wb") as out:
                os.fchmod(out.fileno(), 0o666 & ~_umask())  # mkstemp's 0600, as any new file would be
                for chunk in response.stream:
                    out.write(chunk)
                    digest.update(chunk)
                    size += len(chunk)
                out.flush()
                os.fsync(out.fileno())
            if expected and digest.hexdigest() != expected:
                raise CommandFailed(f"downloaded bytes have sha256 {digest.hexdigest()}, expected {expected}")
            _check_replaceable(target, force)
            _move_into_place(temp, target, force)
        except OSError as error:
            raise CommandFailed(f"cannot write {target}: {error.strerror}") from None
    return {"path": str(target), "size": size, "sha256": digest.hexdigest()}


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _check_replaceable(target: Path, force: bool) -> None:
    try:
        found = os.lstat(target)
    except FileNotFoundError:
        return
    if stat.S_ISLNK(found.st_mode):
        raise BadArgument(f"{target} is a symbolic link; DEST must be a regular file or a folder")
    if not stat.S_ISREG(found.st_mode):
        raise BadArgument(
            f"{target} is not a regular file (a FIFO, device or socket?); DEST must be a regular file or a folder"
        )
    if not force:
        raise CommandFailed(f"{target} exists; pass --force to replace it")


def _move_into_place(temp: Path, target: Path, force: bool) -> None:
    """Without --force, never replace what appeared at `target` meanwhile (link fails if it exists)."""
    if force:
        os.replace(temp, target)
        return
    try:
        os.link(temp, target)
    except FileExistsError:
        raise CommandFailed(f"{target} exists; pass --force to replace it") from None
    except OSError as error:
        if error.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK):
            raise
        os.replace(temp, target)  # a file system without hard links: the check above has to do


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
        raise BadArgument(error.detail) from None
    if not source.is_file():
        raise CommandFailed(f"{source} is not a readable file")
    repository = build_repository(settings)
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
        _close_artifacts(repository)
    if result.artifact is None:
        raise CommandFailed(f"{where.key} was not recorded: {result.outcome}")
    show(result.artifact.to_json(), "artifact")


def check(settings: LocalSettings) -> dict[str, Any]:
    """`modelrepo check`: the metadata database's integrity check and every pinned file's digest.

    Read-only, and usable on a broken root (that is when it is needed): nothing is created."""
    from modelrepo.adapters.folder import stale_temp_files, verify_pinned
    from modelrepo.adapters.sqlite import SqliteMetadataStore

    if settings.url:
        raise CommandFailed("check reads the repository's files: run it where the root is, without --url")
    if not settings.root.is_dir():
        raise CommandFailed(f"{settings.root} is not a modelrepo root (no such folder)")
    database = SqliteMetadataStore.integrity(settings.database)
    checked, problems = 0, []
    for path, problem in verify_pinned(settings.registry):
        checked += 1
        if problem is not None:
            problems.append(f"{path}: {problem}")
    return {
        "database": "; ".join(database) if database else "ok",
        "pinnedFiles": checked,
        "pinnedBad": len(problems),
        "problems": [f"{settings.database}: {p}" for p in database] + problems,
        "staleTempFiles": len(stale_temp_files(settings.registry)),
        "ok": not database and not problems,
    }


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
    "sweep": (
        ("objectsScanned", "objects"),
        ("recorded", "recorded"),
        ("rejected", "rejected"),
        ("runsChecked", "runs"),
        ("vanished", "vanished"),
        ("complete", "complete"),
    ),
    "problem": (("problem", "problem"),),
    "check": (
        ("database", "database"),
        ("pinnedFiles", "pinned files"),
        ("pinnedBad", "bad"),
        ("staleTempFiles", "stale temp files"),
        ("ok", "ok"),
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


class _Parser(argparse.ArgumentParser):
    """argparse, with its usage errors on one line: `modelrepo: error: …`, exit code 2 (its own)."""

    def error(self, message: str) -> NoReturn:
        self.exit(USAGE_ERROR, f"modelrepo: error: {message} (see '{self.prog} --help')\n")


_VERSION = TypeAdapter(Version)


def _version(raw: str) -> str:
    """A version number as the API's routes take it: digits only, 1 or more, no leading zero."""
    try:
        if not (raw.isascii() and raw.isdigit()) or raw.startswith("0"):
            raise ValueError
        _VERSION.validate_python(int(raw))
    except (ValueError, ValidationError):
        raise argparse.ArgumentTypeError(f"version {raw!r} must be a positive integer") from None
    return raw


def _version_or_latest(raw: str) -> str:
    return raw if raw == "latest" else _version(raw)


def _limit(raw: str) -> int:
    if not (raw.isascii() and raw.isdigit()) or not 1 <= int(raw) <= MAX_PAGE:
        raise argparse.ArgumentTypeError(f"{raw!r} is not a number from 1 to {MAX_PAGE}")
    return int(raw)


def _port(raw: str) -> int:
    if not (raw.isascii() and raw.isdigit()) or not 0 <= int(raw) <= 65535:
        raise argparse.ArgumentTypeError(f"{raw!r} is not a port number (0-65535)")
    return int(raw)


def _seconds(raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"{raw!r} is not a positive number of seconds")
    return value


def build_parser() -> argparse.ArgumentParser:
    common = _Parser(add_help=False)
    common.add_argument(
        "--root", help="local repository folder (default: $MODELREPO_ROOT or ~/.mlops/model-repository)"
    )
    common.add_argument("--url", help="talk to a running service instead (default: $MODELREPO_URL)")
    common.add_argument("--json", action="store_true", help="print JSON for scripts")
    common.add_argument(
        "--init",
        action="store_true",
        help="create a new, empty metadata database even though registry/ holds pinned bytes "
        "(after metadata.sqlite3 was lost for good; versions start again at 1)",
    )
    parser = _Parser(prog="modelrepo", description="A versioned model repository.", parents=[common])
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help_text: str) -> argparse.ArgumentParser:
        return commands.add_parser(name, help=help_text, description=help_text, parents=[common])

    serve = command("serve", "run the local runtime: drop-folder watcher + HTTP API")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=_port, default=7071)
    serve.add_argument("--verbose", action="store_true")

    up = command("upload", "put a file into the bucket and record it")
    up.add_argument("experiment")
    up.add_argument("run")
    up.add_argument("path", type=Path)
    up.add_argument("--name", help="artifact name, may contain '/' (default: the file's name)")

    command("artifacts", "list a run's artifacts").add_argument("run")
    command("rejections", "list uploads that could not be recorded").add_argument("--limit", type=_limit, default=100)

    reg = command("register", "register a run artifact as the experiment's next version")
    reg.add_argument("experiment")
    reg.add_argument("run_artifact_id")
    reg.add_argument("--by", required=True)
    reg.add_argument("--description")
    reg.add_argument("--idempotency-key")

    versions = command("versions", "list an experiment's versions, newest first")
    versions.add_argument("experiment")
    versions.add_argument("--limit", type=_limit, default=50)

    show = command("show", "show one version ('latest' for the newest)")
    show.add_argument("experiment")
    show.add_argument("version", type=_version_or_latest)

    tag = command("tag", "set a tag on a version")
    tag.add_argument("experiment")
    tag.add_argument("version", type=_version)
    tag.add_argument("key")
    tag.add_argument("value")
    tag.add_argument("--by", required=True)

    untag = command("untag", "remove a tag from a version")
    untag.add_argument("experiment")
    untag.add_argument("version", type=_version)
    untag.add_argument("key")
    untag.add_argument("--by", required=True)

    deploy = command("deploy", "deploy a version to a target")
    deploy.add_argument("experiment")
    deploy.add_argument("version", type=_version)
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
    audit.add_argument("--limit", type=_limit, default=100)

    reconcile = command("reconcile", "record objects the events missed; flag records whose object vanished")
    reconcile.add_argument("--backend", default="local", choices=BACKENDS)
    reconcile.add_argument("--budget", type=_seconds, help="stop after this many seconds; the next run resumes")

    letters = command("dead-letters", "list upload notifications that were given up on")
    letters.add_argument("--backend", default="local", choices=BACKENDS)
    letters.add_argument("--limit", type=_limit, default=100)

    replay = command("replay", "record the uploads of dead letters again, removing those that succeed")
    replay.add_argument("--backend", default="local", choices=BACKENDS)
    replay.add_argument("--limit", type=_limit, default=100)

    command("check", "check the metadata database's integrity and every pinned file's digest")

    download = command("download", "download a version's pinned bytes")
    download.add_argument("experiment")
    download.add_argument("version", type=_version)
    download.add_argument("dest", help="a regular file, or a folder to save under the artifact's name")
    download.add_argument("--force", action="store_true", help="replace an existing regular file")
    return parser


def main(argv: Sequence[str] | None = None, environ: dict[str, str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as stop:  # usage errors (one line, 2) and --help (0): an exit code, like the rest
        return stop.code if isinstance(stop.code, int) else USAGE_ERROR
    show: Printer = print_json if args.json else print_table
    try:
        settings = LocalSettings.from_environment(
            os.environ if environ is None else environ,
            root=args.root,
            url=args.url,
            host=getattr(args, "host", None),
            port=getattr(args, "port", None),
            init_database=args.init or None,
        )
        if args.command == "serve":
            return _serve(settings, args.verbose)
        if args.command == "upload":
            upload(settings, args.experiment, args.run, args.path, args.name, show, args.json)
            return 0
        if args.command == "check":
            report = check(settings)
            show(report, "check")
            if report["problems"] and not args.json:
                show([{"problem": problem} for problem in report["problems"]], "problem")
            return 0 if report["ok"] else 1
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
                _close_artifacts(api.repository)
        return 0
    except (CommandFailed, ModelRepoError) as error:
        detail = error.detail if isinstance(error, ModelRepoError) else str(error)
        print(f"modelrepo: error: {detail}", file=sys.stderr)
        return USAGE_ERROR if isinstance(error, BadArgument) else 1
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
