"""HTTP servers for the local runtime, compared on scenario 1's HTTP register (issue 9, item 6).

Every candidate serves the same `modelrepo.api.Api` over the same repository in its own process,
without the drop-folder watcher, and is driven by the same client as scenario 1 (`JsonClient`, one
keep-alive connection per writer): N registrations of one artifact at 1, 8 and 32 writers, versions
checked to be exactly 1..N afterwards, candidates in alternating order round by round.

- `http.server`: the stdlib `ThreadingHTTPServer` the local runtime used before (a reference
  only: its framing is what the issue broke; no checks but the ones it had).
- `h11 threads`: `modelrepo.local.server.ApiServer`, h11 on one thread per connection (what runs now).
- `uvicorn`: uvicorn with its h11 protocol and a thin ASGI adapter that runs `Api.handle` on a
  thread pool (the event loop cannot block on it, and the core's group commit needs concurrent threads).
- `waitress`: waitress with a thin WSGI adapter, 32 worker threads (its default of 4 would cap the
  group commit's batches at 4).

    bench/.venv/bin/python -m bench.http_candidates [--versions 2000] [--rounds 2] [--out FILE]

uvicorn and waitress are not modelrepo dependencies: the bench's virtualenv has uvicorn through
MLflow and waitress from bench/requirements.txt.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote_to_bytes, urlsplit

from bench import embedded
from bench.common import Measured, alternate, machine, run_concurrently
from bench.servers import BIN, JsonClient, free_port, group_cpu_seconds, server
from modelrepo.api import Api, Request, Response, problem
from modelrepo.local.bootstrap import build_api
from modelrepo.settings import LocalSettings

CANDIDATES = ("http.server", "h11 threads", "uvicorn", "waitress")
WAITRESS_THREADS = 32
POOL_THREADS = 64


# --- the candidates, each serving one Api until the process is stopped ------------------------------


def serve(candidate: str, root: Path, port: int) -> None:
    api = build_api(LocalSettings(root=root, port=port))
    if candidate == "http.server":
        _StdlibServer(("127.0.0.1", port), api).serve_forever()
    elif candidate == "h11 threads":
        from modelrepo.local.server import ApiServer

        ApiServer(("127.0.0.1", port), api, None).serve_forever()
    elif candidate == "uvicorn":
        _serve_uvicorn(api, port)
    elif candidate == "waitress":
        import waitress  # type: ignore[import-untyped,import-not-found,unused-ignore]

        waitress.serve(_wsgi_app(api), host="127.0.0.1", port=port, threads=WAITRESS_THREADS, _quiet=True)
    else:
        raise SystemExit(f"unknown candidate {candidate!r}: one of {', '.join(CANDIDATES)}")


class _StdlibServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], api: Api) -> None:
        super().__init__(address, _StdlibHandler)
        self.api = api


class _StdlibHandler(BaseHTTPRequestHandler):
    """The request path of the server before h11 (commit 8d060da), without the API key (the bench
    runs without one)."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    timeout = 60
    server: _StdlibServer

    def do_GET(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def _dispatch(self) -> None:
        url = urlsplit(self.path)
        raw = self.headers.get("Content-Length", "0") or "0"
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower() or not raw.isdigit():
            self.close_connection = True
            self._send(problem(400, "bad framing"))
            return
        body = self.rfile.read(int(raw))
        request = Request(
            method=self.command,
            path=url.path,
            query=dict(parse_qsl(url.query, keep_blank_values=True)),
            headers={k.lower(): v for k, v in self.headers.items()},
            body=body,
        )
        self._send(self.server.api.handle(request))

    def _send(self, response: Response) -> None:
        self.send_response(response.status)
        for name, value in response.headers.items():
            self.send_header(name, value)
        if response.stream is None:
            self.send_header("Content-Length", str(len(response.body)))
        self.end_headers()
        if response.stream is None:
            self.wfile.write(response.body)
        else:
            for chunk in response.stream:
                self.wfile.write(chunk)
            response.stream.close()

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib signature
        pass


def _serve_uvicorn(api: Api, port: int) -> None:
    import uvicorn  # type: ignore[import-not-found,unused-ignore]

    pool = ThreadPoolExecutor(POOL_THREADS, thread_name_prefix="api")

    async def app(scope: dict[str, Any], receive: Callable[[], Any], send: Callable[[Any], Any]) -> None:
        assert scope["type"] == "http"
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if len(body) > api.max_body_bytes:
                await _asgi_answer(send, problem(413, "too large"))
                return
            if not message.get("more_body"):
                break
        request = Request(
            scope["method"],
            scope["raw_path"].decode("ascii") if scope.get("raw_path") else scope["path"],
            dict(parse_qsl(scope["query_string"].decode("latin-1"), keep_blank_values=True)),
            {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]},
            body,
        )
        response = await asyncio.get_running_loop().run_in_executor(pool, api.handle, request)
        await _asgi_answer(send, response)

    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, http="h11", lifespan="off", access_log=False, log_level="warning"
    )
    uvicorn.Server(config).run()


async def _asgi_answer(send: Callable[[Any], Any], response: Response) -> None:
    headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in response.headers.items()]
    headers.append((b"content-length", str(len(response.body)).encode()))
    await send({"type": "http.response.start", "status": response.status, "headers": headers})
    await send({"type": "http.response.body", "body": response.body})


def _wsgi_app(api: Api) -> Callable[..., Iterable[bytes]]:
    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length) if length else b""
        headers = {k[5:].replace("_", "-").lower(): v for k, v in environ.items() if k.startswith("HTTP_")}
        if environ.get("CONTENT_TYPE"):
            headers["content-type"] = environ["CONTENT_TYPE"]
        path = unquote_to_bytes(environ["PATH_INFO"]).decode("latin-1")  # WSGI hands the path decoded
        query = dict(parse_qsl(environ.get("QUERY_STRING", ""), keep_blank_values=True))
        response = api.handle(Request(environ["REQUEST_METHOD"], path, query, headers, body))
        start_response(
            f"{response.status} {response.status}",
            [*response.headers.items(), ("Content-Length", str(len(response.body)))],
        )
        return [response.body]

    return app


# --- the measurement ---------------------------------------------------------------------------------


def _candidate_server(candidate: str, root: Path, port: int, log: Path) -> Any:
    command = [str(BIN / "python"), "-m", "bench.http_candidates", "--serve", candidate, str(root), str(port)]
    return server(command, port, "/api/health", log)


def measure(candidate: str, root: Path, count: int, writers: int) -> tuple[Measured, float]:
    """The registrations as the client saw them, and the CPU seconds the server process spent on them
    (which a busy shared machine disturbs far less than wall time)."""
    repo, _ = embedded.repository(root)
    artifact_id = embedded.seed_artifact(repo)
    repo.metadata.close()
    port = free_port()
    with _candidate_server(candidate, root, port, root.parent / f"{root.name}.log") as group:
        client = JsonClient(port)
        body = {"experimentId": embedded.EXPERIMENT, "runArtifactId": artifact_id, "registeredBy": "bench"}
        before = group_cpu_seconds(group)
        measured = run_concurrently(lambda i: client.call("POST", "/api/register", body), count, writers)
        cpu = group_cpu_seconds(group) - before
        found = embedded.http_versions(JsonClient(port))
    if not embedded.gapless(found, count - measured.failures) or measured.failures:
        raise RuntimeError(f"{candidate}: {measured.failures} failures, versions not 1..N: {measured.errors[:3]}")
    return measured, cpu


def run(
    count: int, rounds: int, writer_counts: Iterable[int], work: Path, candidates: Iterable[str] = CANDIDATES
) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for writers in writer_counts:
        pooled = {candidate: Measured() for candidate in candidates}
        cpu = dict.fromkeys(candidates, 0.0)
        for round_number, candidate in alternate(rounds, list(candidates)):
            root = work / f"{candidate.replace(' ', '-')}-{writers}-{round_number}"
            measured, seconds = measure(candidate, root, count, writers)
            pooled[candidate].add(measured)
            cpu[candidate] += seconds
            print(f"  {writers:>2} writers, round {round_number}: {candidate} done", file=sys.stderr, flush=True)
        for candidate, measured in pooled.items():
            per_request = round(cpu[candidate] / measured.operations * 1e6) if measured.operations else None
            row = {"writers": writers, "candidate": candidate, "server_cpu_us": per_request}
            rows.append({**row, **measured.summary()})
    return rows


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| writers | candidate | versions/s | p50 ms | p99 ms | server CPU per request |",
        "|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['writers']} | {r['candidate']} | {r['throughput']:,.0f} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} "
        f"| {r['server_cpu_us']} us |"
        for r in rows
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.http_candidates", description=__doc__)
    parser.add_argument("--serve", nargs=3, metavar=("CANDIDATE", "ROOT", "PORT"), help=argparse.SUPPRESS)
    parser.add_argument("--versions", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--writers", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--candidates", nargs="+", choices=CANDIDATES, default=list(CANDIDATES))
    parser.add_argument("--out", type=Path, help="also write the rows as JSON here")
    args = parser.parse_args(argv)
    if args.serve:
        candidate, root, port = args.serve
        serve(candidate, Path(root), int(port))
        return 0
    with tempfile.TemporaryDirectory(prefix="modelrepo-http-") as work:
        rows = run(args.versions, args.rounds, args.writers, Path(work), args.candidates)
    if args.out:
        args.out.write_text(json.dumps({"machine": machine(), "rows": rows}, indent=2) + "\n", encoding="utf-8")
    print(markdown(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
