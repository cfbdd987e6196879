"""Scenario 7: cold starts, per handler, against the floor of importing the SDKs alone.

A cold start is a fresh python3.12 process that imports a handler and answers its first event.
Each measured process is timed from just before it is spawned until its first answer arrives.

AWS: every `AWS::Serverless::Function` of the `sam build` output (`.aws-sam/build/template.yaml`,
so functions added later are measured without changes here) runs under the official runtime
interface client `awslambdaric` (pinned in bench/requirements-coldstart.txt, its own python3.12
virtualenv), with the function's code and its layers' `python/` folders on the path and nothing
else, the template's environment, and a moto server behind it. A loopback implementation of the
Lambda Runtime API (`RuntimeApi`) hands the process one event on `GET .../invocation/next` and the
clock stops at its `POST .../response` (or `.../error`, which counts as a failure). The events are
real ones from `events/`, made to do real work: the API answers a GET that queries the table, the
record function records a fresh upload (head, stream and hash the object, one transaction), the
reconcile function sweeps a bucket. Each function gets its own bucket, table and queue names, so
that one function's runs do not change another's work.

Azure: Functions Core Tools cannot run here, so a fresh interpreter does what the worker does:
imports `function_app` (every blueprint), indexes its functions and invokes one with what the host
hands it, against Azurite: an HTTP GET of the catch-all `api` function and a blob trigger.

The floors: the same runtime with a handler that only imports boto3 (`bench/lambda_floor`), and a
fresh interpreter importing `azure.functions, azure.data.tables, azure.storage.blob`. A bare
interpreter importing boto3 is shown too. All cases run alternately, N rounds (ABC.., then ..CBA),
after one untimed warm-up run of each (page cache, bytecode, the emulators' first requests).
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import re
import signal
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import yaml

from bench.common import MODELREPO, RAW, percentile, ratio
from bench.servers import stop_group
from bench.sizes import Sizes

REPO = Path(__file__).resolve().parent.parent
BUILD = REPO / ".aws-sam" / "build"
COLD_VENV = REPO / "bench" / ".venv-cold"
PYTHON = COLD_VENV / "bin" / "python"
AZURE_SITE = COLD_VENV / "azure-app"
CHILD = REPO / "bench" / "coldstart_child.py"
FLOOR_CODE = REPO / "bench" / "lambda_floor"
MOTO_SERVER = REPO / ".venv" / "bin" / "moto_server"
AZURITE = REPO / "node_modules" / ".bin" / "azurite"
EVENTS = REPO / "events"
REGION = "us-east-1"
TARGET = 1.5  # the target: at most 1.5x the floor
RUN_SECONDS = 60.0
AZURITE_ACCOUNT = "devstoreaccount1"
# Azurite's well-known development key (public, documented, valid only on the emulator).
AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
UPLOAD_BYTES = 64 << 10
RECONCILE_OBJECTS = 5
FLOOR_AWS = "floor: runtime + handler that only imports boto3"
FLOOR_BARE = "floor: bare interpreter, import boto3"
FLOOR_AZURE = "floor: import azure.functions, azure.data.tables, azure.storage.blob"
TRIGGERS = {
    "Api": "API GET /api/experiments/bench/models",
    "SQS": "SQS message of a fresh upload",
    "Schedule": "scheduled sweep",
    "ScheduleV2": "scheduled sweep",
    "DynamoDBStream": "stream batch of one event row (published to the bus, the index follows)",
}
LAUNCH = (
    "import sys; sys.path[:0] = {path!r}; "
    "from awslambdaric.__main__ import main; main(sys.argv)"  # what Lambda's python3.12 bootstrap runs
)
BARE = "import sys; sys.path[:0] = {path!r}; import boto3; print('{{}}', flush=True)"


# --- the loopback Lambda Runtime API ------------------------------------------------------------


@dataclass
class Invocation:
    """One event handed to one process, and what came back."""

    request_id: str
    event: dict[str, Any]
    deadline_ms: int
    function_arn: str
    fetched: float | None = None  # when the runtime asked for it: the end of init
    answered: float | None = None
    body: bytes = b""
    error: bool = False
    done: threading.Event = field(default_factory=threading.Event)


class RuntimeApi(ThreadingHTTPServer):
    """GET /2018-06-01/runtime/invocation/next, POST .../{id}/response and .../{id}/error, init errors.

    It holds at most one pending invocation; a second `next` from the same process (the runtime's
    loop after the answer) waits until the process is stopped.
    """

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _RuntimeHandler)
        self.lock = threading.Lock()
        self.pending: Invocation | None = None
        self.current: Invocation | None = None
        self.closing = threading.Event()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.server_address[1]}"

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Quiet: the runtime's second `next` loses its connection when its process is stopped."""

    def offer(self, invocation: Invocation) -> None:
        with self.lock:
            self.pending = self.current = invocation


class _RuntimeHandler(BaseHTTPRequestHandler):
    server: RuntimeApi
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        return

    def _answer(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        if self.path != "/2018-06-01/runtime/invocation/next":
            self._answer(404)
            return
        with self.server.lock:
            invocation, self.server.pending = self.server.pending, None
        if invocation is None:
            self.server.closing.wait(RUN_SECONDS)  # the runtime's next poll: the process is stopped meanwhile
            self._answer(500)
            return
        invocation.fetched = time.perf_counter()
        body = json.dumps(invocation.event).encode()
        self._answer(
            200,
            body,
            {
                "Content-Type": "application/json",
                "Lambda-Runtime-Aws-Request-Id": invocation.request_id,
                "Lambda-Runtime-Deadline-Ms": str(invocation.deadline_ms),
                "Lambda-Runtime-Invoked-Function-Arn": invocation.function_arn,
                "Lambda-Runtime-Trace-Id": f"Root=1-{int(time.time()):08x}-{uuid.uuid4().hex[:24]};"
                f"Parent={uuid.uuid4().hex[:16]};Sampled=1",
            },
        )

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        answered = time.perf_counter()  # the clock stops when the answer has arrived
        match = re.fullmatch(r"/2018-06-01/runtime/(?:invocation/([^/]+)/(response|error)|init/(error))", self.path)
        invocation = self.server.current
        if match is None or invocation is None:
            self._answer(404)
            return
        if match.group(1) is not None and match.group(1) != invocation.request_id:
            self._answer(400)
            return
        self._answer(202, b'{"status":"OK"}', {"Content-Type": "application/json"})
        invocation.answered = answered
        invocation.body = body
        invocation.error = match.group(2) != "response"
        invocation.done.set()


@contextlib.contextmanager
def runtime_api() -> Iterator[RuntimeApi]:
    api = RuntimeApi()
    serving = threading.Thread(target=api.serve_forever, name="runtime-api", daemon=True)
    serving.start()
    try:
        yield api
    finally:
        api.closing.set()
        api.shutdown()
        api.server_close()


# --- the functions of the template --------------------------------------------------------------


@dataclass(frozen=True)
class Function:
    name: str
    handler: str
    paths: list[str]
    environment: dict[str, Any]  # values still as in the template (strings or intrinsics)
    trigger: str  # Api, SQS, Schedule, ... (the first event source)
    tracing: bool
    memory: int
    timeout: int


def _reads_a_table_stream(function: str, template: dict[str, Any]) -> bool:
    """An event source mapping, written out in the template (not a SAM event), feeds it a table's stream."""
    return any(
        resource["Type"] == "AWS::Lambda::EventSourceMapping"
        and resource["Properties"].get("FunctionName") == {"Ref": function}
        and str(resource["Properties"].get("EventSourceArn", {}).get("Fn::GetAtt", [""])[-1]).endswith("StreamArn")
        for resource in template["Resources"].values()
    )


def template_functions(build: Path) -> tuple[list[Function], dict[str, Any]]:
    """Every function of the built template, with its code and layer folders and its environment."""
    template: dict[str, Any] = yaml.safe_load((build / "template.yaml").read_text(encoding="utf-8"))
    defaults = template.get("Globals", {}).get("Function", {})
    functions = []
    for name, resource in template["Resources"].items():
        if resource["Type"] != "AWS::Serverless::Function":
            continue
        properties = {**defaults, **resource["Properties"]}
        paths = [str(build / properties["CodeUri"])]
        for layer in properties.get("Layers", []):
            paths.append(str(build / template["Resources"][layer["Ref"]]["Properties"]["ContentUri"] / "python"))
        environment = {
            **defaults.get("Environment", {}).get("Variables", {}),
            **resource["Properties"].get("Environment", {}).get("Variables", {}),
        }
        events = list((properties.get("Events") or {}).values())
        if not events and _reads_a_table_stream(name, template):
            events = [{"Type": "DynamoDBStream"}]
        functions.append(
            Function(
                name=name,
                handler=properties["Handler"],
                paths=paths,
                environment=environment,
                trigger=events[0]["Type"] if events else "none",
                tracing=properties.get("Tracing") == "Active",
                memory=int(properties.get("MemorySize", 128)),
                timeout=int(properties.get("Timeout", 3)),
            )
        )
    return sorted(functions, key=lambda f: f.name), template


def _physical_name(function: str, logical: str) -> str:
    return f"bench-{function}-{logical}".lower()[:63]


@dataclass
class AwsWorld:
    """The moto resources of every function, and the uploads its runs will be told about."""

    endpoint: str
    environments: dict[str, dict[str, str]]
    uploads: dict[str, list[dict[str, Any]]]


def _resolve(value: Any, function: str, template: dict[str, Any], queues: dict[str, str]) -> str | None:
    """A template value for this bench's stack: parameters take their defaults, resources their bench names."""
    if isinstance(value, str | int | float):
        return str(value)
    if isinstance(value, dict) and set(value) == {"Ref"}:
        logical = value["Ref"]
        if logical in template.get("Parameters", {}):
            return str(template["Parameters"][logical].get("Default", ""))
        kind = template["Resources"].get(logical, {}).get("Type", "")
        name = _physical_name(function, logical)
        return queues.get(name, name) if kind == "AWS::SQS::Queue" else name
    return None  # another intrinsic: the variable is left out, and the row says so


def seed_aws(functions: list[Function], template: dict[str, Any], endpoint: str, rounds: int) -> AwsWorld:
    buckets, tables, queues, buses, uploads = [], [], [], [], []
    for function in functions:
        for logical, resource in template["Resources"].items():
            name = _physical_name(function.name, logical)
            if resource["Type"] == "AWS::S3::Bucket":
                buckets.append(name)
            elif resource["Type"] == "AWS::DynamoDB::Table":
                properties = resource["Properties"]
                tables.append(
                    {"name": name, "attributes": properties["AttributeDefinitions"], "keys": properties["KeySchema"]}
                )
            elif resource["Type"] == "AWS::SQS::Queue":
                queues.append(name)
            elif resource["Type"] == "AWS::Events::EventBus":
                buses.append(name)
    environments: dict[str, dict[str, str]] = {}
    for function in functions:
        environments[function.name] = {}
        bucket = _resolve(function.environment.get("MODELREPO_UPLOADS_BUCKET"), function.name, template, {})
        if bucket is None:
            continue
        count = {"SQS": rounds + 1, "Schedule": RECONCILE_OBJECTS}.get(function.trigger, 0)
        for index in range(count):
            key = f"bench/run-{index:04d}/model.bin"
            uploads.append({"function": function.name, "bucket": bucket, "key": key, "size": UPLOAD_BYTES})
    seeded = _child(
        "seed-aws",
        {
            "path": [functions[0].paths[-1]],  # boto3 of the built layer
            "region": REGION,
            "endpoint": endpoint,
            "buckets": buckets,
            "tables": tables,
            "queues": queues,
            "buses": buses,
            "uploads": uploads,
        },
        _aws_credentials(),
    )
    by_function: dict[str, list[dict[str, Any]]] = {}
    for upload in seeded["uploads"]:
        by_function.setdefault(upload["function"], []).append(upload)
    for function in functions:
        for variable, value in function.environment.items():
            resolved = _resolve(value, function.name, template, seeded["queues"])
            if resolved is not None:
                environments[function.name][variable] = resolved
    return AwsWorld(endpoint, environments, by_function)


def _aws_credentials() -> dict[str, str]:
    return {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_REGION": REGION,
        "AWS_DEFAULT_REGION": REGION,
    }


def lambda_environment(function: Function, world: AwsWorld, api: RuntimeApi) -> dict[str, str]:
    """What Lambda sets for a python3.12 function, the template's variables, and the emulator."""
    environment = {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "LANG": "en_US.UTF-8",
        "TZ": ":UTC",
        "AWS_LAMBDA_RUNTIME_API": api.address,
        "AWS_EXECUTION_ENV": "AWS_Lambda_python3.12",
        "AWS_LAMBDA_FUNCTION_NAME": function.name,
        "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(function.memory),
        "AWS_LAMBDA_INITIALIZATION_TYPE": "on-demand",
        "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{function.name}",
        "AWS_LAMBDA_LOG_STREAM_NAME": "bench",
        "LAMBDA_TASK_ROOT": function.paths[0],
        "_HANDLER": function.handler,
        "AWS_ENDPOINT_URL": world.endpoint,
        **_aws_credentials(),
        **world.environments.get(function.name, {}),
    }
    if function.tracing:
        # Lambda points the X-Ray SDK at its daemon; here a loopback port nobody listens on (UDP).
        environment |= {
            "AWS_XRAY_DAEMON_ADDRESS": "127.0.0.1:2000",
            "_AWS_XRAY_DAEMON_ADDRESS": "127.0.0.1",
            "_AWS_XRAY_DAEMON_PORT": "2000",
            "AWS_XRAY_CONTEXT_MISSING": "LOG_ERROR",
        }
    return environment


def _event(name: str) -> dict[str, Any]:
    event: dict[str, Any] = json.loads((EVENTS / name).read_text(encoding="utf-8"))
    return event


def lambda_event(function: Function, world: AwsWorld, round_number: int) -> tuple[dict[str, Any], str]:
    """A real event for the function's trigger, doing real work, and what it must answer."""
    if function.trigger == "Api":
        event = _event("apigateway-health.json")
        path = "/api/experiments/bench/models"
        event |= {"path": path, "resource": "/api/{proxy+}", "pathParameters": {"proxy": path.removeprefix("/api/")}}
        event["requestContext"] |= {"path": f"/prod{path}", "resourcePath": "/api/{proxy+}"}
        event["requestContext"]["identity"]["userArn"] = "arn:aws:iam::123456789012:user/bench"
        return event, "api"
    if function.trigger == "SQS":
        upload = world.uploads[function.name][round_number]
        event = _event("sqs-s3-put.json")
        record = event["Records"][0]
        body = json.loads(record["body"])
        s3 = body["Records"][0]["s3"]
        s3["bucket"] |= {"name": upload["bucket"], "arn": f"arn:aws:s3:::{upload['bucket']}"}
        s3["object"] |= {"key": upload["key"], "size": upload["size"], "eTag": upload["etag"]}
        s3["object"]["sequencer"] = f"{round_number + 1:016X}"
        record |= {"body": json.dumps(body), "messageId": str(uuid.uuid4())}
        return event, "sqs"
    if function.trigger in ("Schedule", "ScheduleV2"):
        return _event("eventbridge-schedule.json"), "schedule"
    if function.trigger == "DynamoDBStream":
        event = _event("dynamodb-stream-insert.json")
        record = event["Records"][0]
        record["eventID"] = uuid.uuid4().hex
        record["dynamodb"]["SequenceNumber"] = str(10**20 + round_number)
        return event, "stream"
    return {"Records": []}, "empty"  # a stream or queue trigger without a sample event here: an empty batch


def _check(kind: str, invocation: Invocation) -> str | None:
    """Why the answer is not the expected one (None: it is)."""
    if invocation.error or invocation.answered is None:
        return f"error: {invocation.body[:500]!r}"
    answer = json.loads(invocation.body or b"null")
    if kind == "api" and (not isinstance(answer, dict) or answer.get("statusCode") != 200):
        return f"the API answered {str(answer)[:300]}"
    if kind in ("sqs", "stream") and answer != {"batchItemFailures": []}:
        return f"the {kind} batch reported failures: {str(answer)[:300]}"
    if kind == "schedule" and isinstance(answer, dict) and "complete" in answer and not answer["complete"]:
        return f"the sweep did not complete: {answer}"
    return None


# --- running processes --------------------------------------------------------------------------


@dataclass
class Sample:
    seconds: float | None  # None: failed
    init_seconds: float | None = None
    cpu_seconds: float | None = None  # the process's user + system time: less sensitive to a busy machine
    error: str | None = None


def _stop(process: subprocess.Popen[bytes]) -> float:
    """Kill the process (and anything it started); its CPU time (user + system), in seconds."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    try:
        _, status, usage = os.wait4(process.pid, 0)
    except ChildProcessError:  # already reaped
        process.wait()
        return float("nan")
    process.returncode = os.waitstatus_to_exitcode(status)
    return usage.ru_utime + usage.ru_stime


def run_lambda(function: Function, world: AwsWorld, round_number: int, logs: Path) -> Sample:
    """One cold start: a fresh Runtime API (so that no late poll of an earlier process can take this
    process's event), a fresh process, one event."""
    event, kind = lambda_event(function, world, round_number)
    invocation = Invocation(
        request_id=str(uuid.uuid4()),
        event=event,
        deadline_ms=int(time.time() * 1000) + function.timeout * 1000,
        function_arn=f"arn:aws:lambda:{REGION}:123456789012:function:{function.name}",
    )
    log = logs / f"{function.name}-{round_number}.log"
    with runtime_api() as api, log.open("wb") as output:
        api.offer(invocation)
        began = time.perf_counter()
        process = subprocess.Popen(
            [str(PYTHON), "-I", "-S", "-c", LAUNCH.format(path=[*function.paths, _ric_site()]), function.handler],
            env=lambda_environment(function, world, api),
            cwd=function.paths[0],
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            answered = invocation.done.wait(RUN_SECONDS)
        finally:
            cpu = _stop(process)
    if not answered:
        return Sample(None, error=f"no answer within {RUN_SECONDS:.0f} s: {log.read_text(errors='replace')[-800:]}")
    if problem := _check(kind, invocation):
        return Sample(None, error=f"{problem}; log: {log.read_text(errors='replace')[-800:]}")
    assert invocation.answered is not None and invocation.fetched is not None
    return Sample(invocation.answered - began, invocation.fetched - began, cpu)


def run_child(command: list[str], environment: dict[str, str], cwd: Path) -> Sample:
    """A fresh interpreter; the clock stops at its first line on stdout (one JSON object)."""
    began = time.perf_counter()
    process = subprocess.Popen(
        command, env=environment, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True
    )
    assert process.stdout is not None and process.stderr is not None
    try:
        line = process.stdout.readline()
        ended = time.perf_counter()
    finally:
        cpu = _stop(process)
    if not line:
        return Sample(None, error=process.stderr.read().decode(errors="replace")[-1500:])
    answer = json.loads(line)
    if isinstance(answer, dict) and answer.get("status") not in (None, 200, "recorded"):
        return Sample(None, error=f"answered {answer}")
    return Sample(ended - began, cpu_seconds=cpu)


def _child(command: str, spec: dict[str, Any], environment: dict[str, str]) -> dict[str, Any]:
    """Run a child command to completion (seeding) and return its JSON answer."""
    done = subprocess.run(
        [str(PYTHON), "-I", "-S", str(CHILD), command, json.dumps(spec)],
        env={"PATH": "/usr/bin:/bin", **environment},
        cwd=REPO,
        capture_output=True,
        check=False,
        timeout=300,
    )
    if done.returncode != 0:
        raise RuntimeError(f"{command} failed: {done.stderr.decode(errors='replace')[-2000:]}")
    answer: dict[str, Any] = json.loads(done.stdout.splitlines()[-1])
    return answer


def _ric_site() -> str:
    [site] = (COLD_VENV / "lib").glob("python3.*/site-packages")
    return str(site)


# --- emulators ----------------------------------------------------------------------------------


def _die_with_parent() -> None:
    """Linux: the emulator is sent SIGTERM when the benchmark dies, even by SIGKILL (a test's timeout)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextlib.contextmanager
def moto_server(work: Path) -> Iterator[str]:
    if not MOTO_SERVER.exists():
        raise RuntimeError(f"{MOTO_SERVER} is missing: run `make setup`")
    port = _free_port()
    with (work / "moto.log").open("wb") as log:
        process = subprocess.Popen(
            [str(MOTO_SERVER), "-H", "127.0.0.1", "-p", str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_die_with_parent,  # noqa: PLW1509 - started before any thread of the benchmark
        )
        try:
            deadline = time.monotonic() + 60
            while True:
                with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"moto_server did not start: {(work / 'moto.log').read_text()[-1000:]}")
                time.sleep(0.1)
            yield f"http://127.0.0.1:{port}"
        finally:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                _stop(process)


@contextlib.contextmanager
def azurite(work: Path) -> Iterator[str]:
    """Azurite on free ports; yields its connection string."""
    if not AZURITE.exists():
        raise RuntimeError(f"{AZURITE} is missing: run `make setup` (npm ci installs the pinned Azurite)")
    ports = {"blob": _free_port(), "queue": _free_port(), "table": _free_port()}
    folder = work / "azurite"
    folder.mkdir(exist_ok=True)
    with (work / "azurite.log").open("wb") as log:
        process = subprocess.Popen(
            [
                str(AZURITE),
                *("--blobHost", "127.0.0.1", "--blobPort", str(ports["blob"])),
                *("--queueHost", "127.0.0.1", "--queuePort", str(ports["queue"])),
                *("--tableHost", "127.0.0.1", "--tablePort", str(ports["table"])),
                "--inMemoryPersistence",
                "--disableTelemetry",
                "--skipApiVersionCheck",
                "--silent",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=folder,
            start_new_session=True,
            preexec_fn=_die_with_parent,  # noqa: PLW1509 - started before any thread of the benchmark
        )
        try:
            deadline = time.monotonic() + 60
            for port in ports.values():
                while True:
                    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
                        break
                    if process.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError(f"Azurite did not start: {(work / 'azurite.log').read_text()[-1000:]}")
                    time.sleep(0.1)
            endpoints = {name: f"http://127.0.0.1:{port}/{AZURITE_ACCOUNT}" for name, port in ports.items()}
            yield (
                f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};AccountKey={AZURITE_KEY};"
                f"BlobEndpoint={endpoints['blob']};QueueEndpoint={endpoints['queue']};"
                f"TableEndpoint={endpoints['table']};"
            )
        finally:
            stop_group(process, grace=10)


# --- Azure --------------------------------------------------------------------------------------


@dataclass
class AzureCase:
    name: str
    spec: dict[str, Any] | None  # None: the floor
    label: str = "Azure floor"


def azure_cases(connection: str, rounds: int) -> tuple[list[AzureCase], dict[str, str], list[str]]:
    """The app settings (from local.settings.json.example, pointed at Azurite) and one case per trigger."""
    values: dict[str, str] = json.loads((REPO / "local.settings.json.example").read_text(encoding="utf-8"))["Values"]
    settings = {name: connection if "UseDevelopmentStorage" in value else value for name, value in values.items()}
    container = settings["MODELREPO_UPLOADS_CONTAINER"]
    containers = [settings[name] for name in settings if name.endswith("_CONTAINER")]
    seeded = _child(
        "seed-azure",
        {
            "path": [str(AZURE_SITE)],
            "connection": connection,
            "containers": containers,
            "table": settings["MODELREPO_TABLE"],
            "uploads": [
                {"container": container, "name": f"bench/run-{i:04d}/model.bin", "size": UPLOAD_BYTES}
                for i in range(rounds + 1)
            ],
        },
        {},
    )
    path = [str(REPO), str(REPO / "shared"), str(AZURE_SITE)]
    get = {
        "function": "api",
        "path": path,
        "request": {
            "method": "GET",
            "url": "http://localhost:7071/api/experiments/bench/models",
            "route_params": {"path": "experiments/bench/models"},
        },
    }
    record = {"function": "record_upload", "path": path}  # the blob: a fresh upload each round
    cases = [
        AzureCase(FLOOR_AZURE, None),
        AzureCase("function app: HTTP GET /api/experiments/bench/models", get, "Azure app (HTTP GET)"),
        AzureCase("function app: blob trigger record_upload (a fresh upload)", record, "Azure app (blob trigger)"),
    ]
    return cases, settings, [json.dumps(blob) for blob in seeded["uploads"]]


def run_azure(case: AzureCase, settings: dict[str, str], round_number: int, blobs: list[str]) -> Sample:
    environment = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "en_US.UTF-8", **settings}
    if case.spec is None:
        spec: dict[str, Any] = {"path": [str(AZURE_SITE)]}
        command = "azure-floor"
    else:
        spec = dict(case.spec)
        if spec["function"] == "record_upload":
            spec["blob"] = json.loads(blobs[round_number])
        command = "azure-app"
    return run_child([str(PYTHON), "-I", "-S", str(CHILD), command, json.dumps(spec)], environment, REPO)


# --- the scenario -------------------------------------------------------------------------------


def _summary(case: str, system: str, samples: list[Sample], **extra: Any) -> dict[str, Any]:
    times = [s.seconds for s in samples if s.seconds is not None]
    inits = [s.init_seconds for s in samples if s.init_seconds is not None]
    found: dict[str, Any] = {
        "case": case,
        "system": system,
        "runs": len(samples),
        "failures": len(samples) - len(times),
        "p50_ms": round(percentile(times, 0.5) * 1000, 1),
        "p95_ms": round(percentile(times, 0.95) * 1000, 1),
        "max_ms": round(max(times, default=float("nan")) * 1000, 1),
        "errors": [s.error for s in samples if s.error][:3],
        **extra,
    }
    if inits:
        found["init_p50_ms"] = round(percentile(inits, 0.5) * 1000, 1)
    cpus = [s.cpu_seconds for s in samples if s.seconds is not None and s.cpu_seconds is not None]
    found["cpu_p50_ms"] = round(percentile(cpus, 0.5) * 1000, 1)
    return found


def _requirements() -> None:
    missing = []
    if not PYTHON.exists() or not AZURE_SITE.exists():
        missing.append(f"{COLD_VENV} (run `make bench-cold-setup`)")
    if not (BUILD / "template.yaml").exists():
        missing.append(f"{BUILD} (run `make aws-build`)")
    if missing:
        raise RuntimeError("the cold-start scenario needs " + " and ".join(missing))


def run(sizes: Sizes, work: Path) -> dict[str, Any]:
    _requirements()
    rounds = sizes.coldstart_rounds
    functions, template = template_functions(BUILD)
    floor = Function(
        name=FLOOR_AWS,
        handler="floor_function.handler",
        paths=[str(FLOOR_CODE), *functions[0].paths[1:]],
        environment=functions[0].environment,
        trigger="Schedule",
        tracing=functions[0].tracing,
        memory=functions[0].memory,
        timeout=functions[0].timeout,
    )
    logs = work / "coldstart-logs"
    logs.mkdir(parents=True, exist_ok=True)
    samples: dict[str, list[Sample]] = {}
    with moto_server(work) as endpoint, azurite(work) as connection:
        world = seed_aws(functions, template, endpoint, rounds)
        azure, settings, blobs = azure_cases(connection, rounds)
        bare = [str(PYTHON), "-I", "-S", "-c", BARE.format(path=functions[0].paths[1:])]

        def one(case: str, round_number: int) -> Sample:
            if case == FLOOR_BARE:
                return run_child(bare, {"PATH": "/usr/bin:/bin"}, REPO)
            for candidate in (floor, *functions):
                if candidate.name == case:
                    return run_lambda(candidate, world, round_number, logs)
            [found] = [c for c in azure if c.name == case]
            return run_azure(found, settings, round_number, blobs)

        cases = [FLOOR_AWS, FLOOR_BARE, *(f.name for f in functions), *(c.name for c in azure)]
        for case in cases:  # warm-up, untimed: page cache, bytecode, the emulators' first requests
            warm = one(case, rounds)
            if warm.seconds is None:
                raise RuntimeError(f"{case} failed its warm-up run: {warm.error}")
        for round_number in range(rounds):
            order = cases if round_number % 2 == 0 else list(reversed(cases))
            for case in order:
                samples.setdefault(case, []).append(one(case, round_number))

    floors = {
        "aws": _summary(FLOOR_AWS, RAW, samples[FLOOR_AWS], cloud="aws"),
        "bare": _summary(FLOOR_BARE, RAW, samples[FLOOR_BARE], cloud="aws"),
        "azure": _summary(FLOOR_AZURE, RAW, samples[FLOOR_AZURE], cloud="azure"),
    }
    rows = [floors["aws"], floors["bare"]]
    for function in functions:
        kind = TRIGGERS.get(function.trigger, f"{function.trigger} trigger, an empty batch")
        found = _summary(
            f"{function.name} ({function.handler}): {kind}",
            MODELREPO,
            samples[function.name],
            cloud="aws",
            function=function.name,
        )
        rows.append(_with_ratios(found, floors["aws"], floors["bare"]))
    rows.append(floors["azure"])
    for azure_case in azure[1:]:
        name = azure_case.name
        found = _summary(name, MODELREPO, samples[name], cloud="azure", function=azure_case.label)
        rows.append(_with_ratios(found, floors["azure"], None))
    return {
        "title": f"7. Cold start: import + first invocation in a fresh python3.12 process ({rounds} runs each)",
        "unit": "ms",
        "table": "coldstart",
        "rows": rows,
        "note": (
            "From spawning the process to its first answer (AWS: the runtime's POST .../response to the loopback "
            "Runtime API; Azure: the function's return), p50/p95 nearest-rank over the runs, every case alternated "
            "round by round in the same run. init = until the runtime asked for its event (imports and module "
            f"code). Target: p50 at most {TARGET}x the floor of the same cloud, in wall and in CPU time (AWS: "
            "the same runtime with a handler that only imports boto3; Azure: the three SDK imports in a fresh "
            "interpreter)."
        ),
    }


def _with_ratios(found: dict[str, Any], floor: dict[str, Any], bare: dict[str, Any] | None) -> dict[str, Any]:
    found["x_floor"] = ratio(found["p50_ms"], floor["p50_ms"])
    found["x_floor_p95"] = ratio(found["p95_ms"], floor["p95_ms"])
    found["x_floor_cpu"] = ratio(found["cpu_p50_ms"], floor["cpu_p50_ms"])
    if bare is not None:
        found["x_bare"] = ratio(found["p50_ms"], bare["p50_ms"])
    # Judged on wall time (what a caller waits) and on CPU time (what the process did): on a shared
    # machine a wall-time ratio alone can pass or fail by the luck of what else ran meanwhile.
    found["met"] = (
        found["failures"] == 0
        and found["x_floor"] is not None
        and found["x_floor"] <= TARGET
        and found["x_floor_cpu"] is not None
        and found["x_floor_cpu"] <= TARGET
    )
    return found
