"""`modelrepo`: the command line.

Every command except `serve`, `upload` and `configure` is an API call made with `modelrepo.Client`,
either in-process on the local root (default) or over HTTP to a running service or a deployed
stack (`--url`, or `--profile` for the profiles `modelrepo configure` writes), so the CLI validates
and answers exactly as the API does, on every host.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import getpass
import json
import logging
import math
import os
import shutil
import signal
import stat
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

from pydantic import BaseModel, ValidationError

from modelrepo.backends import BACKENDS, open_backend
from modelrepo.client import ApiError, Client, NotRecorded
from modelrepo.commands.versions import ManifestEntry
from modelrepo.dispatch import ParkedDelivery, parked_deliveries, retry_now
from modelrepo.errors import InvalidInput, ModelRepoError
from modelrepo.events import ObjectCreated
from modelrepo.limits import DEFAULT_PAGE, MAX_PAGE, MAX_VERSION_FILES, parse_version
from modelrepo.model import ArtifactKey, Lineage, RegisteredModel, RunArtifact, describe_validation_error
from modelrepo.ports import DeadLetter
from modelrepo.recovery import Reconciler, replay_dead_letters
from modelrepo.settings import LocalSettings

if TYPE_CHECKING:
    from modelrepo.client.config import Profile

PROGRESS_THRESHOLD_BYTES = 8 * 1024 * 1024


class CommandFailed(Exception):
    """Ends the command with a one-line reason and a non-zero exit code."""


class BadArgument(CommandFailed):
    """An argument is wrong in itself: one line, and argparse's exit code for usage errors (2)."""


USAGE_ERROR = 2


# --- commands ------------------------------------------------------------------------------------


def _records(records: Iterable[BaseModel], limit: int) -> list[dict[str, Any]]:
    return [record.model_dump(mode="json", by_alias=True) for record in islice(records, max(0, limit))]


def _page_size(limit: int) -> int:
    return max(1, min(1000, limit))


Printer = Callable[[Any, str], None]


def run_command(args: argparse.Namespace, client: Client, show: Printer) -> None:
    """One API command through the client; its answer printed as a table or JSON."""
    command = args.command
    if command == "artifacts":
        show([a.to_json() for a in client.run_artifacts(args.run)], "artifact")
    elif command == "rejections":
        show(_records(client.rejections(page_size=_page_size(args.limit)), args.limit), "rejection")
    elif command == "register":
        metadata = _metadata_arguments(args)
        model = client.register(
            args.experiment,
            args.run_artifact_id,
            args.by,
            description=args.description,
            idempotency_key=args.idempotency_key,
            **metadata,
        )
        show(model.to_json(), "model")
    elif command == "versions":
        versions = client.models(
            args.experiment,
            page_size=_page_size(args.limit),
            status=args.status,
            tags=_pairs(args.tag, "--tag"),
            archived=args.archived,
            deleted=args.deleted,
        )
        show(_records(versions, args.limit), "model")
    elif command == "experiments":
        show(
            _records(client.experiments(prefix=args.prefix, page_size=_page_size(args.limit)), args.limit), "experiment"
        )
    elif command == "describe":
        if args.set is None:
            show(client.experiment(args.experiment).to_json(), "experiment")
        else:
            show(client.describe(args.experiment, args.set, _by(args)).to_json(), "experiment")
    elif command in ("approve", "reject"):
        decide = client.approve if command == "approve" else client.reject
        show(decide(args.experiment, args.version, args.by, args.comment).to_json(), "model")
    elif command in ("archive", "restore"):
        change = client.archive if command == "archive" else client.restore
        show(change(args.experiment, args.version, args.by).to_json(), "model")
    elif command == "delete":
        show(client.delete_version(args.experiment, args.version, args.by, args.reason).to_json(), "model")
    elif command == "update":
        updated = client.update(
            args.experiment, args.version, args.by, description=args.description, **_metadata_arguments(args)
        )
        show(updated.to_json(), "model")
    elif command == "search":
        found = client.search(tags=_pairs(args.tag, "--tag"), status=args.status, page_size=_page_size(args.limit))
        show(_records(found, args.limit), "model")
    elif command == "target":
        if args.require_approval is None:
            show(client.target_policy(args.experiment, args.target).to_json(), "target")
        else:
            policy = client.set_target_policy(
                args.experiment, args.target, require_approval=args.require_approval, by=_by(args)
            )
            show(policy.to_json(), "target")
    elif command == "show":
        show(client.model(args.experiment, args.version).to_json(), "model")
    elif command == "tag":
        show(client.set_tag(args.experiment, args.version, args.key, args.value, args.by).to_json(), "model")
    elif command == "untag":
        show(client.delete_tag(args.experiment, args.version, args.key, args.by).to_json(), "model")
    elif command == "deploy":
        version = _version_number(args.version)
        if version is None:  # @target or latest: what it names right now
            version = client.model(args.experiment, args.version).version
        deployment = client.deploy(args.experiment, version, args.target, args.by)
        show(deployment.to_json(), "deployment")
    elif command == "rollback":
        show(client.rollback(args.experiment, args.target, args.by).to_json(), "deployment")
    elif command == "deployments":
        if args.target:
            history = client.deployment_history(args.experiment, args.target, page_size=DEFAULT_PAGE)
            show(_records(history, DEFAULT_PAGE), "deployment")
        else:
            show([d.to_json() for d in client.deployments(args.experiment)], "deployment")
    elif command == "audit":
        show(_records(client.experiment_audit(args.experiment, page_size=_page_size(args.limit)), args.limit), "audit")
    elif command == "download":
        show(_download(client, args.experiment, args.version, Path(args.dest), args.force), "download")
    elif command == "events":
        _events(client, args, show)
    else:  # pragma: no cover - argparse only admits the commands above
        raise CommandFailed(f"unknown command {command}")


def _events(client: Client, args: argparse.Namespace, show: Printer) -> None:
    """An experiment's (or a run's) events after a sequence; with --follow, keep polling for new ones."""
    after = args.after

    def since(position: int) -> list[dict[str, Any]]:
        found = (
            client.run_events(args.run, after=position) if args.run else client.events(args.experiment, after=position)
        )
        return [event.to_json() for event in found]

    if not args.follow:
        show(since(after), "event")
        return
    while True:
        events = since(after)
        if events:
            after = events[-1]["sequence"]
            if args.json:
                for event in events:
                    print(json.dumps(event, ensure_ascii=False), flush=True)
            else:
                show(events, "event")
        time.sleep(args.poll)


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
        raise BadArgument(f"{error.detail}, `latest` or @<target>") from None


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
    """Version metadata from the command line (register and update), as the client's keywords."""
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
    if args.source_commit or args.dataset or args.notes:
        try:
            body["lineage"] = Lineage(source_commit=args.source_commit, datasets=args.dataset or [], notes=args.notes)
        except ValidationError as error:
            raise CommandFailed(describe_validation_error(error)) from None
    return body


def _download(client: Client, experiment: str, version: str, dest: Path, force: bool) -> dict[str, Any]:
    model = client.model(experiment, version)  # also resolves latest and @target
    if model.files is not None:
        return _download_folder(client, model, dest, force)
    with client.download(experiment, model.version) as download:
        name = download.filename or f"{experiment}-v{version}.bin"
        target = dest / name if dest.is_dir() else dest
        _check_replaceable(target, force)
        try:
            # O_EXCL|O_NOFOLLOW at an unpredictable name: nothing planted beside DEST redirects the write.
            fd, temp_name = tempfile.mkstemp(prefix=".modelrepo-download-", dir=target.parent)
        except OSError as error:
            raise CommandFailed(f"cannot write {target}: {error.strerror}") from None
        temp = Path(temp_name)
        size = 0
        try:
            with os.fdopen(fd, "wb") as out:
                os.fchmod(out.fileno(), 0o666 & ~_umask())  # mkstemp's 0600, as any new file would be
                for chunk in download:  # the client checks the sha256 before the loop ends
                    out.write(chunk)
                    size += len(chunk)
                out.flush()
                os.fsync(out.fileno())
            _check_replaceable(target, force)
            _move_into_place(temp, target, force)
        except OSError as error:
            raise CommandFailed(f"cannot write {target}: {error.strerror}") from None
        finally:
            temp.unlink(missing_ok=True)
    return {"path": str(target), "size": size, "sha256": download.sha256}


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _check_replaceable(target: Path, force: bool) -> None:
    """Only a regular file is ever replaced, and only with --force."""
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


def _download_folder(client: Client, model: RegisteredModel, dest: Path, force: bool) -> dict[str, Any]:
    """A folder version written as a folder: every file fetched (in parallel) and checked against its
    digest into a temporary folder beside the target, which then takes the target's place whole."""
    entries = client.files(model.experiment_id, model.version)
    for entry in entries:
        _check_relative(entry.path)
    target = dest / f"{model.experiment_id}-v{model.version}" if dest.is_dir() else dest
    if target.exists() and not force:
        raise CommandFailed(f"{target} exists; pass --force to replace it")
    try:
        temp = Path(tempfile.mkdtemp(prefix=".modelrepo-download-", dir=target.parent))
    except OSError as error:
        raise CommandFailed(f"cannot write {target}: {error.strerror}") from None

    def fetch(entry: ManifestEntry, advance: Callable[[int], None]) -> None:
        path = temp.joinpath(*entry.path.split("/"))
        path.parent.mkdir(parents=True, exist_ok=True)
        with client.download_file(model.experiment_id, model.version, entry.path) as download, path.open("wb") as out:
            for chunk in download:  # the client checks the sha256 before the loop ends
                out.write(chunk)
                advance(len(chunk))
        if download.sha256 != entry.sha256 or path.stat().st_size != entry.size:
            raise CommandFailed(f"{entry.path} does not match the version's manifest (sha256 and size)")

    try:
        with _progress(f"downloading {model.experiment_id} v{model.version}", model.size, quiet=False) as advance:
            _in_parallel(lambda entry: fetch(entry, advance), entries)
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        elif target.exists() or target.is_symlink():
            target.unlink()
        os.replace(temp, target)
    except OSError as error:
        raise CommandFailed(f"cannot write {target}: {error.strerror or error}") from None
    finally:
        shutil.rmtree(temp, ignore_errors=True)
    return {"path": str(target), "size": model.size, "sha256": model.sha256, "files": len(entries)}


def _check_relative(path: str) -> None:
    """A manifest path may only name a place inside the folder being written."""
    segments = path.split("/")
    if not path or path.startswith("/") or "\\" in path or any(s in ("", ".", "..") for s in segments):
        raise CommandFailed(f"the version lists a file {path!r} that would land outside the folder; not written")


T = TypeVar("T")
R = TypeVar("R")
PARALLEL_TRANSFERS = 4


def _in_parallel(work: Callable[[T], R], items: Sequence[T]) -> list[R]:
    """`work` on every item, a few at a time; the first failure is raised once all have stopped."""
    with ThreadPoolExecutor(max_workers=PARALLEL_TRANSFERS) as pool:
        return list(pool.map(work, items))


@contextlib.contextmanager
def _progress(what: str, total: int, *, quiet: bool) -> Iterator[Callable[[int], None]]:
    """A rich progress bar on a terminal for large transfers; elsewhere a callback that does nothing."""
    if total < PROGRESS_THRESHOLD_BYTES or quiet or not sys.stderr.isatty():
        yield lambda _n: None
        return
    from rich.progress import Progress

    with Progress(transient=True) as progress:
        task = progress.add_task(what, total=total)
        yield lambda n: progress.advance(task, n)  # rich's advance is safe from the transfer threads


def _folder_files(experiment: str, run: str, folder: Path, name: str | None) -> list[tuple[Path, str]]:
    """Every file under `folder` and the key it goes to, `<experiment>/<run>/<name>/<relative path>`;
    all checked before anything is written."""
    files: list[tuple[Path, str]] = []
    base = name or folder.resolve().name
    for directory, folders, names in os.walk(folder):  # symbolic links to folders are not followed
        folders.sort()
        for file_name in sorted(names):
            path = Path(directory) / file_name
            if not path.is_file():
                continue
            relative = path.relative_to(folder).as_posix()
            where = ArtifactKey(experiment, run, f"{base}/{relative}")
            try:
                ArtifactKey.parse(where.key)
            except InvalidInput as error:
                raise CommandFailed(f"{path}: {error.detail}; nothing was uploaded") from None
            files.append((path, where.key))
    if not files:
        raise CommandFailed(f"{folder} holds no files")
    if len(files) > MAX_VERSION_FILES:
        raise CommandFailed(f"{folder} holds {len(files)} files; a version holds at most {MAX_VERSION_FILES}")
    return files


def upload(
    settings: LocalSettings, experiment: str, run: str, source: Path, name: str | None, show: Printer, quiet: bool
) -> None:
    """Put a file into the drop folder atomically and record it right away; a folder, file by file."""
    from modelrepo.local.bootstrap import build_repository

    if settings.url:
        raise CommandFailed("upload writes into the bucket directly: run it where the root is, without --url")
    if source.is_dir():
        _upload_folder(settings, _folder_files(experiment, run, source, name), show, quiet)
        return
    where = ArtifactKey(experiment, run, name or source.name)
    try:
        ArtifactKey.parse(where.key)
    except InvalidInput as error:
        raise BadArgument(error.detail) from None
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
        repository.close()
    if result.artifact is None:
        raise CommandFailed(f"{where.key} was not recorded: {result.outcome}")
    show(result.artifact.to_json(), "artifact")


def _upload_folder(settings: LocalSettings, files: list[tuple[Path, str]], show: Printer, quiet: bool) -> None:
    """Each file into the drop folder atomically (written beside, renamed into place) and recorded,
    a few at a time; the run's artifacts are printed once all are recorded."""
    from modelrepo.local.bootstrap import build_repository

    repository = build_repository(settings, project_inline=True)
    actor = f"cli:{getpass.getuser()}"

    def put(item: tuple[Path, str], advance: Callable[[int], None]) -> RunArtifact:
        path, key = item
        try:
            with path.open("rb") as data:
                info = repository.artifacts.put(key, data, progress=advance)
        except OSError as error:
            raise CommandFailed(f"cannot read {path}: {error.strerror}") from None
        result = repository.record_artifact(ObjectCreated.from_object(info, actor))
        if result.artifact is None:
            raise CommandFailed(f"{key} was not recorded: {result.outcome}")
        return result.artifact

    total = sum(path.stat().st_size for path, _ in files)
    try:
        with _progress(f"uploading {len(files)} files", total, quiet=quiet) as advance:
            artifacts = _in_parallel(lambda item: put(item, advance), files)
    finally:
        repository.close()
    show([artifact.to_json() for artifact in artifacts], "artifact")


def upload_to_cloud(profile: Profile, args: argparse.Namespace, environ: Mapping[str, str], show: Printer) -> None:
    """Put a file into the profile's bucket (S3 or Blob Storage), then wait until it is recorded."""
    from modelrepo.client.uploads import upload_file

    source: Path = args.path
    if source.is_dir():
        files = _folder_files(args.experiment, args.run, source, args.name)
    else:
        where = ArtifactKey(args.experiment, args.run, args.name or source.name)
        try:
            ArtifactKey.parse(where.key)
        except InvalidInput as error:
            raise CommandFailed(error.detail) from None
        if not source.is_file():
            raise CommandFailed(f"{source} is not a readable file")
        files = [(source, where.key)]
    if not args.timeout > 0:
        raise CommandFailed("--timeout must be a positive number of seconds")
    total = sum(path.stat().st_size for path, _ in files)
    with _progress(f"uploading {source.name}", total, quiet=args.json) as advance:
        uploads = _in_parallel(
            lambda item: upload_file(profile, item[0], item[1], environ=environ, progress=advance), files
        )
    if args.no_wait:
        show(uploads[0].to_json() if not source.is_dir() else [u.to_json() for u in uploads], "uploaded")
        return
    from modelrepo.client.config import connect

    artifacts: list[RunArtifact] = []
    with connect(profile) as client:
        for uploaded in uploads:
            try:
                artifacts.append(client.wait_for_artifact(uploaded.key, uploaded.etag, timeout=args.timeout))
            except NotRecorded as error:
                raise CommandFailed(
                    f"{error.detail}; its upload event may be delayed or dead-lettered: "
                    f"see `modelrepo dead-letters --backend {profile.cloud}`"
                ) from None
    show(artifacts[0].to_json() if not source.is_dir() else [a.to_json() for a in artifacts], "artifact")


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


def configure(args: argparse.Namespace, settings: LocalSettings, environ: Mapping[str, str], show: Printer) -> None:
    """Write a profile: where a deployment is and how to authenticate to it."""
    from modelrepo.client import config

    name = args.profile or args.kind
    values: dict[str, Any]
    if args.kind == "local":
        if not settings.url:
            raise CommandFailed("configure local needs the service's --url (for example http://127.0.0.1:7071)")
        key = _secret(args.key_stdin, environ, "MODELREPO_API_KEY")
        values = {"url": settings.url, "auth": "bearer" if key else "none", "api_key": key}
    elif args.kind == "aws":
        aws = config._cloud_module("aws")
        outputs, region = aws.stack_outputs(args.stack, region=args.region, aws_profile=args.aws_profile)
        values = config.from_stack_outputs(outputs)
        values.update(auth="sigv4", stack=args.stack, aws_profile=args.aws_profile)
        values["region"] = aws.region_from_url(values["url"]) or region
    else:
        if args.outputs == "-" and args.key_stdin:
            raise CommandFailed("--outputs - and --key-stdin both read standard input: give the outputs as a file")
        values = config.from_bicep_outputs(_read_json(args.outputs))
        key = _secret(args.key_stdin, environ, "MODELREPO_FUNCTION_KEY")
        if args.entra_app_id or args.scope:
            values.update(auth="entra", app_id=args.entra_app_id, scope=args.scope, function_key=key)
        elif key:
            values.update(auth="function-key", function_key=key)
        else:
            raise CommandFailed(
                "give the function key on stdin (--key-stdin) or in MODELREPO_FUNCTION_KEY "
                "(az functionapp keys list -g GROUP -n APP), or use --entra-app-id"
            )
    profile = config.make_profile({k: v for k, v in values.items() if v is not None}, f"profile {name!r}")
    path = config.save_profile(name, profile, environ)
    show({"profile": name, "path": str(path), **profile.shown()}, "profile")


def _secret(from_stdin: bool, environ: Mapping[str, str], variable: str) -> str | None:
    if from_stdin:
        secret = sys.stdin.readline().strip()
        if not secret:
            raise CommandFailed("--key-stdin: standard input held no key")
        return secret
    return environ.get(variable) or None


def _read_json(source: str) -> Any:
    """JSON from a file, or from standard input for '-'."""
    try:
        if source == "-":
            return json.load(sys.stdin)
        with open(source, encoding="utf-8") as document:
            return json.load(document)
    except OSError as error:
        raise CommandFailed(f"cannot read {source}: {error.strerror}") from None
    except ValueError as error:
        raise CommandFailed(f"{'standard input' if source == '-' else source} is not JSON: {error}") from None


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
    "uploaded": (("key", "key"), ("size", "size"), ("etag", "etag"), ("where", "where")),
    "profile": (("profile", "profile"), ("url", "url"), ("auth", "auth"), ("path", "file")),
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
    if key == "approval" and isinstance(value, dict):
        return str(value.get("status", ""))
    if isinstance(value, str) and (key.endswith("At") or key in ("at", "time")) and len(value) >= 19:
        return value[:19].replace("T", " ")  # to the second: the JSON view keeps the rest
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


class _Parser(argparse.ArgumentParser):
    """argparse, with its usage errors on one line: `modelrepo: error: …`, exit code 2 (its own)."""

    def error(self, message: str) -> NoReturn:
        self.exit(USAGE_ERROR, f"modelrepo: error: {message} (see '{self.prog} --help')\n")


def _version_arg(raw: str) -> str:
    """A version as the API's routes take it: a number (ASCII digits, no leading zero), latest or @target."""
    try:
        _version_number(raw)
    except BadArgument as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return raw


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


def _sequence(raw: str) -> int:
    if not (raw.isascii() and raw.isdigit()):
        raise argparse.ArgumentTypeError(f"{raw!r} is not 0 or a sequence number")
    return int(raw)


def _metadata_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--metric", action="append", metavar="NAME=NUMBER", help="repeatable")
    parser.add_argument("--param", action="append", metavar="NAME=VALUE", help="repeatable")
    parser.add_argument("--signature", metavar="FILE", help="a JSON file (e.g. MLflow's input/output schema)")
    parser.add_argument("--source-commit")
    parser.add_argument("--dataset", action="append", metavar="URI", help="repeatable")
    parser.add_argument("--notes")


def build_parser() -> argparse.ArgumentParser:
    common = _Parser(add_help=False)
    common.add_argument(
        "--root", help="local repository folder (default: $MODELREPO_ROOT or ~/.mlops/model-repository)"
    )
    common.add_argument("--url", help="talk to a running service instead (default: $MODELREPO_URL)")
    common.add_argument(
        "--profile", help="talk to a configured deployment (see `modelrepo configure`; default: $MODELREPO_PROFILE)"
    )
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
    serve.add_argument(
        "--webhook",
        action="append",
        default=[],
        metavar="URL",
        help="POST every event to URL (Standard Webhooks, signed with $MODELREPO_WEBHOOK_SECRET); repeatable",
    )

    up = command("upload", "put a file, or a folder's files, into the bucket and record them")
    up.add_argument("experiment")
    up.add_argument("run")
    up.add_argument("path", type=Path, help="a file, or a folder (its files go under <name>/)")
    up.add_argument("--name", help="artifact name, may contain '/' (default: the file's or folder's name)")
    up.add_argument("--no-wait", action="store_true", help="with --profile: do not wait until the upload is recorded")
    up.add_argument(
        "--timeout", type=_seconds, default=120.0, help="with --profile: seconds to wait until it is recorded (120)"
    )

    command("artifacts", "list a run's artifacts").add_argument("run")
    command("rejections", "list uploads that could not be recorded").add_argument("--limit", type=_limit, default=100)

    reg = command("register", "register a run artifact as the experiment's next version")
    reg.add_argument("experiment")
    reg.add_argument("run_artifact_id")
    reg.add_argument("--by", required=True)
    reg.add_argument("--description")
    reg.add_argument("--idempotency-key")
    _metadata_options(reg)

    versions = command("versions", "list an experiment's versions, newest first")
    versions.add_argument("experiment")
    versions.add_argument("--limit", type=_limit, default=50)
    versions.add_argument("--status", choices=STATUSES, help="only versions with this approval")
    versions.add_argument("--tag", action="append", metavar="KEY=VALUE", help="only versions with this tag")
    versions.add_argument("--archived", action="store_true", help="show archived versions too")
    versions.add_argument("--deleted", action="store_true", help="show deleted versions too")

    experiments = command("experiments", "list the experiments (models)")
    experiments.add_argument("--prefix", help="only ids starting with this")
    experiments.add_argument("--limit", type=_limit, default=100)

    describe = command("describe", "show an experiment, or set its description with --set")
    describe.add_argument("experiment")
    describe.add_argument("--set", metavar="DESCRIPTION")
    describe.add_argument("--by")

    for name, what in (("approve", "approve a version"), ("reject", "reject a version")):
        decide = command(name, what)
        decide.add_argument("experiment")
        decide.add_argument("version", type=_version_arg, help="a number, latest, or @target")
        decide.add_argument("--by", required=True)
        decide.add_argument("--comment")

    for name, what in (
        ("archive", "archive a version (it leaves latest and listings)"),
        ("restore", "restore an archived version"),
    ):
        lifecycle = command(name, what)
        lifecycle.add_argument("experiment")
        lifecycle.add_argument("version", type=_version_arg, help="a number, latest, or @target")
        lifecycle.add_argument("--by", required=True)

    delete = command("delete", "delete a version (a tombstone; its bytes are released)")
    delete.add_argument("experiment")
    delete.add_argument("version", type=_version_arg, help="a number, latest, or @target")
    delete.add_argument("--by", required=True)
    delete.add_argument("--reason")

    update = command("update", "update a version's metadata (metrics, params, signature: once)")
    update.add_argument("experiment")
    update.add_argument("version", type=_version_arg, help="a number, latest, or @target")
    update.add_argument("--by", required=True)
    update.add_argument("--description")
    _metadata_options(update)

    search = command("search", "versions of every experiment by tag and approval")
    search.add_argument("--tag", action="append", metavar="KEY=VALUE")
    search.add_argument("--status", choices=STATUSES)
    search.add_argument("--limit", type=_limit, default=100)

    target = command("target", "show a target's rules, or require approval there")
    target.add_argument("experiment")
    target.add_argument("target")
    rule = target.add_mutually_exclusive_group()
    rule.add_argument("--require-approval", dest="require_approval", action="store_true", default=None)
    rule.add_argument("--no-require-approval", dest="require_approval", action="store_false")
    target.add_argument("--by")

    show = command("show", "show one version (a number, latest, or @target)")
    show.add_argument("experiment")
    show.add_argument("version", type=_version_arg)

    tag = command("tag", "set a tag on a version")
    tag.add_argument("experiment")
    tag.add_argument("version", type=_version_arg)
    tag.add_argument("key")
    tag.add_argument("value")
    tag.add_argument("--by", required=True)

    untag = command("untag", "remove a tag from a version")
    untag.add_argument("experiment")
    untag.add_argument("version", type=_version_arg)
    untag.add_argument("key")
    untag.add_argument("--by", required=True)

    deploy = command("deploy", "deploy a version to a target")
    deploy.add_argument("experiment")
    deploy.add_argument("version", type=_version_arg)
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

    events = command("events", "an experiment's events (CloudEvents), oldest first")
    events.add_argument("experiment", nargs="?", help="the experiment (or give --run)")
    events.add_argument("--run", help="a run's upload events instead")
    events.add_argument("--after", type=_sequence, default=0, help="start after this sequence number")
    events.add_argument("--follow", action="store_true", help="keep waiting for new events (Ctrl-C stops)")
    events.add_argument("--poll", type=_seconds, default=1.0, help=argparse.SUPPRESS)
    configure_ = command("configure", "write a profile for a service or a deployed stack (--profile NAME)")
    kinds = configure_.add_subparsers(dest="kind", required=True, metavar="KIND")
    local = kinds.add_parser(
        "local", parents=[common], help="a running `modelrepo serve`: --url, API key from $MODELREPO_API_KEY"
    )
    local.add_argument("--key-stdin", action="store_true", help="read the API key from standard input")
    aws = kinds.add_parser("aws", parents=[common], help="a stack deployed from template.yaml")
    aws.add_argument("--stack", required=True, help="the CloudFormation stack's name")
    aws.add_argument("--region", help="the stack's region (default: the AWS profile's)")
    aws.add_argument("--aws-profile", help="the AWS CLI profile whose credentials to use (default: botocore's chain)")
    azure = kinds.add_parser("azure", parents=[common], help="a deployment of infra/main.bicep")
    azure.add_argument(
        "--outputs",
        required=True,
        help="a file (or - for stdin) with the JSON of `az deployment group show -g GROUP -n NAME "
        "--query properties.outputs`",
    )
    azure.add_argument("--key-stdin", action="store_true", help="read the function key from standard input")
    azure.add_argument("--entra-app-id", help="authenticate with Entra tokens for this app registration")
    azure.add_argument("--scope", help="the token scope (default: api://<entra-app-id>/.default)")

    command("check", "check the metadata database's integrity and every pinned file's digest")

    download = command("download", "download a version's pinned bytes (a folder version as a folder)")
    download.add_argument("experiment")
    download.add_argument("version", type=_version_arg)
    download.add_argument(
        "dest", help="a file (a folder for a folder version), or an existing folder to save it in under its name"
    )
    download.add_argument("--force", action="store_true", help="replace an existing regular file (or folder)")
    return parser


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as stop:  # usage errors (one line, 2) and --help (0): an exit code, like the rest
        return stop.code if isinstance(stop.code, int) else USAGE_ERROR
    show: Printer = print_json if args.json else print_table
    env = os.environ if environ is None else environ
    try:
        settings = LocalSettings.from_environment(
            env,
            root=args.root,
            url=args.url,
            host=getattr(args, "host", None),
            port=getattr(args, "port", None),
            webhooks=tuple(getattr(args, "webhook", ())) or None,
            init_database=args.init or None,
        )
        if args.command == "serve":
            return _serve(settings, args.verbose)
        if args.command == "configure":
            configure(args, settings, env, show)
            return 0
        if args.command == "events" and not (args.experiment or args.run):
            raise BadArgument("name an experiment, or a run with --run")
        if args.command == "check":
            report = check(settings)
            show(report, "check")
            if report["problems"] and not args.json:
                show([{"problem": problem} for problem in report["problems"]], "problem")
            return 0 if report["ok"] else 1
        if args.command in OPERATOR_COMMANDS:
            if args.profile:
                raise CommandFailed(f"{args.command} works on the storage directly: choose it with --backend")
            run_operator_command(args, settings, env, show)
            return 0
        connection = _connection(args, settings, env)
        if args.command == "upload":
            if connection is not None and (args.profile or env.get("MODELREPO_PROFILE")):
                upload_to_cloud(connection, args, env, show)
            else:
                upload(settings, args.experiment, args.run, args.path, args.name, show, args.json)
            return 0
        if connection is not None:
            from modelrepo.client.config import connect

            with connect(connection) as client:
                run_command(args, client, show)
        else:
            from modelrepo.local.bootstrap import build_api

            api = build_api(settings)
            try:
                run_command(args, Client.in_process(api), show)
            finally:
                api.repository.close()
        return 0
    except (CommandFailed, ModelRepoError) as error:
        detail = error.detail if isinstance(error, ModelRepoError) else str(error)
        if isinstance(error, ApiError):
            detail = f"{detail} (HTTP {error.status})"
        print(f"modelrepo: error: {detail}", file=sys.stderr)
        usage = isinstance(error, BadArgument) or (isinstance(error, ApiError) and error.status == 400)
        return USAGE_ERROR if usage else 1
    except KeyboardInterrupt:
        return 130


def _connection(args: argparse.Namespace, settings: LocalSettings, environ: Mapping[str, str]) -> Profile | None:
    """The service or deployment to talk to; None for the local root, in-process."""
    from modelrepo.client.config import resolve

    key = settings.api_key.get_secret_value() if settings.api_key else None
    return resolve(environ, profile=args.profile, url=settings.url, api_key=key)


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
