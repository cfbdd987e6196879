"""The python3.12 side of the cold-start scenario: seeding the emulators, the Azure invocations, the floors.

`bench/coldstart.py` runs this file as `python3.12 -I -S bench/coldstart_child.py COMMAND SPEC`
(isolated, no site-packages): the folders to import from come in SPEC, so that each process sees
exactly the code a deployment would have (the `sam build` output, the Functions app's packages).
What a measured process prints on stdout is one JSON line when its work is done; the parent
timestamps that line, so nothing here reads a clock.

Commands:
- `seed-aws`: buckets, tables and queues of template.yaml on the moto server, plus the uploads the
  record runs will be told about (with boto3 from the built layer).
- `seed-azure`: containers, table and uploads on Azurite (with the Functions app's packages).
- `azure-app`: a fresh Functions worker's work: import `function_app`, index its functions, invoke
  one with what the host would hand it (an `HttpRequest`, or a blob trigger's `InputStream`).
- `azure-floor`, `aws-floor`: import the SDKs alone.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sys
from typing import Any


def _report(result: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()


def seed_aws(spec: dict[str, Any]) -> dict[str, Any]:
    """Create every bucket, table, queue and event bus named in the spec; upload the record runs' objects."""
    import boto3

    session = boto3.session.Session(region_name=spec["region"])
    s3 = session.client("s3", endpoint_url=spec["endpoint"])
    dynamodb = session.client("dynamodb", endpoint_url=spec["endpoint"])
    sqs = session.client("sqs", endpoint_url=spec["endpoint"])
    events = session.client("events", endpoint_url=spec["endpoint"])
    names: dict[str, str] = {}
    for bucket in spec["buckets"]:
        s3.create_bucket(Bucket=bucket)
    for table in spec["tables"]:
        dynamodb.create_table(
            TableName=table["name"],
            BillingMode="PAY_PER_REQUEST",
            AttributeDefinitions=table["attributes"],
            KeySchema=table["keys"],
        )
    for queue in spec["queues"]:
        names[queue] = sqs.create_queue(QueueName=queue)["QueueUrl"]
    for bus in spec.get("buses", []):
        events.create_event_bus(Name=bus)
    uploads = []
    for upload in spec["uploads"]:
        body = hashlib.sha256(upload["key"].encode()).digest() * (upload["size"] // 32)
        done = s3.put_object(Bucket=upload["bucket"], Key=upload["key"], Body=body)
        uploads.append({**upload, "etag": done["ETag"].strip('"'), "size": len(body)})
    return {"queues": names, "uploads": uploads}


def seed_azure(spec: dict[str, Any]) -> dict[str, Any]:
    from azure.core.exceptions import ResourceExistsError
    from azure.data.tables import TableServiceClient
    from azure.storage.blob import BlobServiceClient

    blobs = BlobServiceClient.from_connection_string(spec["connection"])
    for container in spec["containers"]:
        with contextlib.suppress(ResourceExistsError):
            blobs.create_container(container)
    TableServiceClient.from_connection_string(spec["connection"]).create_table_if_not_exists(spec["table"])
    uploads = []
    for upload in spec["uploads"]:
        body = hashlib.sha256(upload["name"].encode()).digest() * (upload["size"] // 32)
        client = blobs.get_blob_client(upload["container"], upload["name"])
        client.upload_blob(body, overwrite=True)
        properties = client.get_blob_properties()
        uploads.append(
            {
                **upload,
                "url": client.url,
                "etag": properties.etag,
                "last_modified": properties.last_modified.isoformat(),
                "size": properties.size,
            }
        )
    return {"uploads": uploads}


def azure_app(spec: dict[str, Any]) -> dict[str, Any]:
    """What a fresh Functions worker does before and for its first invocation, the host's part simulated."""
    import azure.functions as func
    from azure.functions.blob import BlobConverter
    from azure.functions.meta import Datum

    import function_app

    functions = {f.get_function_name(): f for f in function_app.app.get_functions()}
    call = functions[spec["function"]].get_user_function()
    if "request" in spec:
        request = spec["request"]
        answer = call(
            func.HttpRequest(
                method=request["method"],
                url=request["url"],
                headers=request.get("headers", {}),
                params=request.get("params", {}),
                route_params=request.get("route_params", {}),
                body=b"",
            )
        )
        return {"status": answer.status_code, "body": answer.get_body().decode("utf-8", "replace")[:500]}
    blob = spec["blob"]
    metadata = {
        "BlobTrigger": Datum(f"{blob['container']}/{blob['name']}", "string"),
        "Uri": Datum(blob["url"], "string"),
        "Properties": Datum(
            json.dumps({"ETag": blob["etag"], "LastModified": blob["last_modified"], "ContentLength": blob["size"]}),
            "json",
        ),
    }
    stream = BlobConverter.decode(Datum(b"", "bytes"), trigger_metadata=metadata)
    call(stream)
    return {"status": "recorded"}


def main(argv: list[str]) -> int:
    command, spec = argv[1], json.loads(argv[2])
    sys.path[:0] = spec.get("path", [])
    os.chdir(spec.get("cwd", os.getcwd()))
    if command == "aws-floor":
        import boto3  # noqa: F401  # the floor: the SDK import alone

        _report({"imported": "boto3"})
    elif command == "azure-floor":
        import azure.data.tables
        import azure.functions
        import azure.storage.blob  # noqa: F401  # the floor: the SDK imports alone

        _report({"imported": ["azure.functions", "azure.data.tables", "azure.storage.blob"]})
    elif command == "seed-aws":
        _report(seed_aws(spec))
    elif command == "seed-azure":
        _report(seed_azure(spec))
    elif command == "azure-app":
        _report(azure_app(spec))
    else:
        raise SystemExit(f"unknown command {command!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
