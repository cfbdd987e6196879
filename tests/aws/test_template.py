"""template.yaml, checked where cfn-lint and `sam validate` look away.

References inside environment variables and policy templates, the handlers as the template names
them, IAM auth on every route but health, least privilege, and private, recoverable storage.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import sysconfig
from typing import Any

import pytest

from modelrepo.adapters.aws import ENVIRONMENT_VARIABLES, AwsSettings
from modelrepo.api import ROUTES
from tests.aws.cfn import PUBLIC_PATHS, ROOT, api_security, load_template, translate, walk
from tests.aws.conftest import load_event
from tests.aws.lambda_worker import POWERTOOLS_ENVIRONMENT
from tests.aws.stream_mapping import filter_passes

PSEUDO_PARAMETERS = {
    "AWS::AccountId",
    "AWS::NoValue",
    "AWS::Partition",
    "AWS::Region",
    "AWS::StackId",
    "AWS::StackName",
    "AWS::URLSuffix",
}
# The Fn::GetAtt attributes of the resource types the template uses.
ATTRIBUTES = {
    "AWS::S3::Bucket": {"Arn", "DomainName", "RegionalDomainName"},
    "AWS::SQS::Queue": {"Arn", "QueueName", "QueueUrl"},
    "AWS::DynamoDB::Table": {"Arn", "StreamArn"},
    "AWS::Serverless::Function": {"Arn"},
    "AWS::Serverless::Api": {"RootResourceId"},
    "AWS::Events::EventBus": {"Arn", "Name", "Policy"},
    "AWS::Lambda::EventSourceMapping": {"Id", "EventSourceMappingArn"},
}
# What each setting must name: its environment variable must Ref a resource of this type.
SETTING_TYPES = {
    "MODELREPO_UPLOADS_BUCKET": "AWS::S3::Bucket",
    "MODELREPO_REGISTRY_BUCKET": "AWS::S3::Bucket",
    "MODELREPO_TABLE": "AWS::DynamoDB::Table",
    "MODELREPO_DEAD_LETTER_QUEUE_URL": "AWS::SQS::Queue",
    "MODELREPO_REGISTER_DEADLINE_SECONDS": "Parameter",
    "MODELREPO_EVENT_BUS": "AWS::Events::EventBus",
}


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    return load_template()


@pytest.fixture(scope="module")
def cloudformation(template: dict[str, Any], aws_environment: dict[str, str]) -> dict[str, Any]:
    return translate(load_template())


def references(node: Any) -> list[tuple[str, str | None]]:
    """Every (logical name, attribute) that Ref, GetAtt and Sub use inside `node`."""
    found: list[tuple[str, str | None]] = []
    for item in walk(node):
        if not isinstance(item, dict) or len(item) != 1:
            continue
        [(function, argument)] = item.items()
        if function == "Ref":
            found.append((argument, None))
        elif function == "Fn::GetAtt":
            found.append((argument[0], argument[1]))
        elif function == "Fn::Sub":
            text, local = (argument, {}) if isinstance(argument, str) else (argument[0], argument[1])
            for name in re.findall(r"\$\{([^!][^}]*)\}", text):
                if name not in local:
                    resource, _, attribute = name.partition(".")
                    found.append((resource, attribute or None))
    return found


def unresolved(template: dict[str, Any], node: Any) -> list[str]:
    resources, parameters = template["Resources"], template.get("Parameters", {})
    problems = []
    for name, attribute in references(node):
        if name in PSEUDO_PARAMETERS or (attribute is None and name in parameters):
            continue
        if name not in resources:
            problems.append(f"{name} is not defined")
        elif attribute is not None and attribute not in ATTRIBUTES.get(resources[name]["Type"], set()):
            problems.append(f"{resources[name]['Type']} {name} has no attribute {attribute}")
    return problems


def test_every_reference_resolves(template: dict[str, Any]) -> None:
    environment = [template["Globals"]["Function"]["Environment"]] + [
        resource["Properties"]["Environment"]
        for resource in template["Resources"].values()
        if resource["Type"] == "AWS::Serverless::Function" and "Environment" in resource["Properties"]
    ]
    policies = [
        resource["Properties"].get("Policies", [])
        for resource in template["Resources"].values()
        if resource["Type"] == "AWS::Serverless::Function"
    ]
    assert references(environment) and references(policies), "the walk must find something to check"
    assert unresolved(template, environment) == []
    assert unresolved(template, policies) == []
    assert unresolved(template, template) == []


def test_a_reference_to_nothing_is_caught(template: dict[str, Any]) -> None:
    broken = json.loads(json.dumps(template))
    broken["Globals"]["Function"]["Environment"]["Variables"]["MODELREPO_TABLE"] = {"Ref": "MetadataTabel"}
    broken["Resources"]["RecordFunction"]["Properties"]["Policies"][0]["S3ReadPolicy"]["BucketName"] = {
        "Fn::GetAtt": ["UploadsBucket", "Nmae"]
    }
    assert unresolved(broken, broken) == [
        "MetadataTabel is not defined",
        "AWS::S3::Bucket UploadsBucket has no attribute Nmae",
    ]


def test_the_environment_is_exactly_what_the_bootstrap_reads(template: dict[str, Any]) -> None:
    variables = template["Globals"]["Function"]["Environment"]["Variables"]
    sample = {
        "AWS::S3::Bucket": "bucket-name",
        "AWS::DynamoDB::Table": "table-name",
        "AWS::SQS::Queue": "https://sqs.us-east-1.amazonaws.com/123456789012/queue-name",
        "AWS::Events::EventBus": "stack-events",
        "Parameter": "10",
    }
    for name, function in _functions(template).items():
        ours = {
            variable: value
            for variable, value in {**variables, **function["Environment"]["Variables"]}.items()
            if variable.startswith("MODELREPO_")
        }
        assert set(ours) <= set(ENVIRONMENT_VARIABLES.values()), name
        for variable, value in ours.items():
            target = value["Ref"]
            kind = "Parameter" if target in template["Parameters"] else template["Resources"][target]["Type"]
            assert kind == SETTING_TYPES[variable], (name, variable)
        assert ours["MODELREPO_UPLOADS_BUCKET"] != ours["MODELREPO_REGISTRY_BUCKET"]
        environment = {variable: sample[SETTING_TYPES[variable]] for variable in ours}
        AwsSettings.from_environment(environment)  # every required setting is provided
    # Only the dispatcher knows the bus; the events of every function name the table as their source.
    buses = {name for name, f in _functions(template).items() if "MODELREPO_EVENT_BUS" in f["Environment"]["Variables"]}
    assert buses == {"DispatchFunction"}
    assert "MODELREPO_EVENT_SOURCE" not in variables
    for setting, value in POWERTOOLS_ENVIRONMENT.items():
        if setting != "POWERTOOLS_TRACE_DISABLED":
            assert variables[setting] == value


def _functions(template: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Each function's properties with the Globals merged in (environment variables included)."""
    defaults = template["Globals"]["Function"]
    functions = {}
    for name, resource in template["Resources"].items():
        if resource["Type"] == "AWS::Serverless::Function":
            variables = {
                **defaults["Environment"]["Variables"],
                **resource["Properties"].get("Environment", {}).get("Variables", {}),
            }
            functions[name] = {**defaults, **resource["Properties"], "Environment": {"Variables": variables}}
    return functions


def test_each_handler_imports_as_the_template_names_it(template: dict[str, Any]) -> None:
    """A fresh interpreter with only CodeUri and the layers' content on its path, as in Lambda.

    The layers give the core (no editable install is visible: site is off); third-party packages
    come from the test environment here and from the layer in the `sam build` smoke test.
    """
    functions = _functions(template)
    assert set(functions) == {"RecordFunction", "ApiFunction", "ReconcileFunction", "DispatchFunction"}
    for name, function in functions.items():
        assert function["Runtime"] == "python3.12"
        code = ROOT / function["CodeUri"]
        layers = []
        for reference in function["Layers"]:
            layer = template["Resources"][reference["Ref"]]
            assert layer["Metadata"]["BuildMethod"] == function["Runtime"]
            assert (ROOT / layer["Properties"]["ContentUri"] / "requirements.txt").is_file()
            layers.append(str(ROOT / layer["Properties"]["ContentUri"]))
        module, _, attribute = function["Handler"].rpartition(".")
        probe = (
            "import importlib, json, sys\n"
            f"sys.path[:0] = {[str(code), *layers]!r}\n"
            f"sys.path.append({sysconfig.get_path('purelib')!r})\n"
            f"module = importlib.import_module({module!r})\n"
            f"assert callable(getattr(module, {attribute!r}))\n"
            "import modelrepo\n"
            "print(json.dumps([module.__file__, modelrepo.__file__]))\n"
        )
        result = subprocess.run(
            [sys.executable, "-S", "-c", probe],
            capture_output=True,
            text=True,
            timeout=60,
            env={"PATH": "/usr/bin:/bin", **POWERTOOLS_ENVIRONMENT},
            check=False,
        )
        assert result.returncode == 0, f"{name}: {result.stderr}"
        handler_file, core_file = json.loads(result.stdout.splitlines()[-1])
        assert handler_file.startswith(str(code) + "/"), name
        assert any(core_file.startswith(layer + "/") for layer in layers), name


def test_every_route_but_health_and_the_api_document_requires_iam_auth(cloudformation: dict[str, Any]) -> None:
    [api] = [r for r in cloudformation["Resources"].values() if r["Type"] == "AWS::ApiGateway::RestApi"]
    schemes = api["Properties"]["Body"]["securityDefinitions"]
    assert schemes["AWS_IAM"]["x-amazon-apigateway-authtype"] == "awsSigv4"
    assert api_security(cloudformation, "POST", "/api/register") == ["AWS_IAM"]
    for route in ROUTES:
        path = re.sub(r"\{\w+\}", "x", route.template)
        if not path.startswith("/api/"):
            assert api_security(cloudformation, route.method, path) is None, path  # `/` is modelrepo serve's
            continue
        # The web page's files too: a browser cannot sign SigV4 (functions_aws/README.md says what works).
        expected = [] if path in PUBLIC_PATHS else ["AWS_IAM"]
        assert api_security(cloudformation, route.method, path) == expected, route.template
    # Only GET is public on those paths; API Gateway refuses any other method there itself.
    for path in PUBLIC_PATHS:
        assert api_security(cloudformation, "POST", path) is None, path


def _statements(cloudformation: dict[str, Any], function: str) -> list[dict[str, Any]]:
    role = cloudformation["Resources"][f"{function}Role"]
    return [s for p in role["Properties"].get("Policies", []) for s in p["PolicyDocument"]["Statement"]]


def _grants(cloudformation: dict[str, Any], function: str) -> dict[str, set[str]]:
    """The actions a function may take on each resource of the template."""
    grants: dict[str, set[str]] = {}
    for statement in _statements(cloudformation, function):
        assert statement["Effect"] == "Allow"
        actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
        assert all("*" not in action for action in actions), statement
        targets = {name for name, _ in references(statement["Resource"])} - PSEUDO_PARAMETERS
        assert targets, f"{function} has a statement on no resource of the template: {statement}"
        for target in targets:
            grants.setdefault(target, set()).update(actions)
    return grants


def test_functions_get_least_privilege(cloudformation: dict[str, Any]) -> None:
    record = _grants(cloudformation, "RecordFunction")
    assert set(record) == {"UploadsBucket", "MetadataTable"}
    assert not any(a.startswith("s3:Put") or a.startswith("s3:Delete") for a in record["UploadsBucket"])
    api = _grants(cloudformation, "ApiFunction")
    assert set(api) == {"UploadsBucket", "RegistryBucket", "MetadataTable"}
    assert not any(a.startswith("s3:Put") or a.startswith("s3:Delete") for a in api["UploadsBucket"])
    assert {"s3:GetObject", "s3:PutObject"} <= api["RegistryBucket"]
    reconcile = _grants(cloudformation, "ReconcileFunction")
    assert set(reconcile) == {"UploadsBucket", "MetadataTable"}
    assert {"s3:ListBucket", "s3:GetObject"} <= reconcile["UploadsBucket"]
    assert not any(a.startswith("s3:Put") or a.startswith("s3:Delete") for a in reconcile["UploadsBucket"])
    for grants in (record, api, reconcile):
        assert "dynamodb:DeleteTable" not in grants["MetadataTable"]
        assert {"dynamodb:GetItem", "dynamodb:Query", "dynamodb:PutItem"} <= grants["MetadataTable"]
    # The dispatcher reads the table's stream, puts events on the stack's bus, and describes the
    # batches it gives up on; it reads and writes no item and no object.
    dispatch = _grants(cloudformation, "DispatchFunction")
    assert dispatch == {
        "MetadataTable": {
            "dynamodb:DescribeStream",
            "dynamodb:GetRecords",
            "dynamodb:GetShardIterator",
            "dynamodb:ListStreams",
        },
        "EventBus": {"events:PutEvents"},
        "DispatchFailuresQueue": {"sqs:SendMessage"},
    }
    stream_statements = [
        s for s in _statements(cloudformation, "DispatchFunction") if "dynamodb:GetRecords" in s["Action"]
    ]
    assert [s["Resource"] for s in stream_statements] == [{"Fn::GetAtt": ["MetadataTable", "StreamArn"]}]
    [bus_statement] = [s for s in _statements(cloudformation, "DispatchFunction") if s["Action"] == "events:PutEvents"]
    assert bus_statement["Resource"] == {"Fn::GetAtt": ["EventBus", "Arn"]}
    # No managed policy that reads every stream of the account (SAM's DynamoDB event would add one).
    for function in ("RecordFunction", "ApiFunction", "ReconcileFunction", "DispatchFunction"):
        managed = cloudformation["Resources"][f"{function}Role"]["Properties"].get("ManagedPolicyArns", [])
        assert not any("DynamoDB" in arn or "FullAccess" in arn for arn in managed), (function, managed)
        if function != "DispatchFunction":
            assert "EventBus" not in _grants(cloudformation, function), function


def test_storage_is_private_encrypted_and_recoverable(template: dict[str, Any]) -> None:
    resources = template["Resources"]
    for name in ("UploadsBucket", "RegistryBucket"):
        bucket = resources[name]["Properties"]
        assert (
            all(bucket["PublicAccessBlockConfiguration"].values())
            and len(bucket["PublicAccessBlockConfiguration"]) == 4
        )
        rule = bucket["BucketEncryption"]["ServerSideEncryptionConfiguration"][0]
        assert rule["ServerSideEncryptionByDefault"]["SSEAlgorithm"] in ("AES256", "aws:kms")
        assert resources[name]["DeletionPolicy"] == "Retain"
    for name in ("UploadsBucket", "RegistryBucket"):
        bucket = resources[name]["Properties"]
        assert bucket["VersioningConfiguration"]["Status"] == "Enabled"
        [rule] = [r for r in bucket["LifecycleConfiguration"]["Rules"] if "NoncurrentVersionExpiration" in r]
        assert rule["Status"] == "Enabled"  # old versions are kept for a while, not forever
        assert bucket["LoggingConfiguration"]["DestinationBucketName"] == {"Ref": "AccessLogsBucket"}
    logs = resources["AccessLogsBucket"]["Properties"]
    assert all(logs["PublicAccessBlockConfiguration"].values())
    assert logs["BucketEncryption"]["ServerSideEncryptionConfiguration"][0]["ServerSideEncryptionByDefault"]
    [delivery, tls] = resources["AccessLogsBucketPolicy"]["Properties"]["PolicyDocument"]["Statement"]
    assert delivery["Principal"] == {"Service": "logging.s3.amazonaws.com"} and delivery["Action"] == "s3:PutObject"
    assert tls["Effect"] == "Deny" and tls["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
    assert "NotificationConfiguration" not in resources["RegistryBucket"]["Properties"]
    table = resources["MetadataTable"]["Properties"]
    assert table["BillingMode"] == "PAY_PER_REQUEST"
    assert table["PointInTimeRecoverySpecification"]["PointInTimeRecoveryEnabled"] is True
    assert [k["AttributeName"] for k in table["KeySchema"]] == ["pk", "rk"]


def test_upload_events_reach_the_record_function_with_bounded_retries(template: dict[str, Any]) -> None:
    resources = template["Resources"]
    [notification] = resources["UploadsBucket"]["Properties"]["NotificationConfiguration"]["QueueConfigurations"]
    assert notification["Event"] == "s3:ObjectCreated:*"
    assert notification["Queue"] == {"Fn::GetAtt": ["UploadsQueue", "Arn"]}
    queue = resources["UploadsQueue"]["Properties"]
    assert queue["RedrivePolicy"]["deadLetterTargetArn"] == {"Fn::GetAtt": ["UploadsDeadLetterQueue", "Arn"]}
    assert queue["RedrivePolicy"]["maxReceiveCount"] == {"Ref": "MaxReceiveCount"}
    assert template["Parameters"]["MaxReceiveCount"]["MaxValue"] <= 20
    record = resources["RecordFunction"]["Properties"]
    [event] = record["Events"].values()
    assert event["Type"] == "SQS" and event["Properties"]["Queue"] == {"Fn::GetAtt": ["UploadsQueue", "Arn"]}
    assert event["Properties"]["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert 2 <= event["Properties"]["ScalingConfig"]["MaximumConcurrency"] <= 100
    assert queue["VisibilityTimeout"] >= 6 * record["Timeout"]
    # The queue accepts messages from the uploads bucket only.
    policy = resources["UploadsQueuePolicy"]["Properties"]["PolicyDocument"]["Statement"][0]
    assert policy["Principal"] == {"Service": "s3.amazonaws.com"}
    source = policy["Condition"]["ArnEquals"]["aws:SourceArn"]["Fn::Sub"]
    assert (
        source[0].removeprefix("arn:${AWS::Partition}:s3:::")
        == resources["UploadsBucket"]["Properties"]["BucketName"]["Fn::Sub"][0]
    )


def test_the_reconcile_sweep_runs_on_a_schedule(template: dict[str, Any], cloudformation: dict[str, Any]) -> None:
    function = template["Resources"]["ReconcileFunction"]["Properties"]
    [event] = function["Events"].values()
    assert event["Type"] == "Schedule" and event["Properties"]["Schedule"] == {"Ref": "ReconcileSchedule"}
    assert re.fullmatch(template["Parameters"]["ReconcileSchedule"]["AllowedPattern"], "rate(1 hour)")
    assert template["Parameters"]["ReconcileSchedule"]["Default"] == "rate(1 hour)"
    assert function["Timeout"] <= 15 * 60 < 3600, "a run ends before the next one starts"
    # The transform makes an EventBridge rule that targets the function, and lets it invoke it.
    rules = [r for r in cloudformation["Resources"].values() if r["Type"] == "AWS::Events::Rule"]
    [rule] = rules
    assert rule["Properties"]["ScheduleExpression"] == {"Ref": "ReconcileSchedule"}
    [target] = rule["Properties"]["Targets"]
    assert target["Arn"] == {"Fn::GetAtt": ["ReconcileFunction", "Arn"]}
    permissions = [r for r in cloudformation["Resources"].values() if r["Type"] == "AWS::Lambda::Permission"]
    assert any(p["Properties"]["Principal"] == "events.amazonaws.com" for p in permissions)


def stream_filter(template: dict[str, Any]) -> str:
    """The event source mapping's filter pattern (one: Lambda passes a record if any filter does)."""
    [rule] = template["Resources"]["DispatchStream"]["Properties"]["FilterCriteria"]["Filters"]
    pattern: str = rule["Pattern"]
    return pattern


def test_the_outbox_streams_to_the_dispatcher_in_order_with_bounded_retries(template: dict[str, Any]) -> None:
    resources = template["Resources"]
    assert resources["MetadataTable"]["Properties"]["StreamSpecification"] == {"StreamViewType": "NEW_IMAGE"}
    mapping = resources["DispatchStream"]["Properties"]
    assert mapping["EventSourceArn"] == {"Fn::GetAtt": ["MetadataTable", "StreamArn"]}
    assert mapping["FunctionName"] == {"Ref": "DispatchFunction"}
    assert mapping["StartingPosition"] == "TRIM_HORIZON"
    assert mapping["ParallelizationFactor"] == 1
    assert mapping["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert mapping["BisectBatchOnFunctionError"] is True
    assert 0 <= mapping["MaximumRetryAttempts"] <= 20  # never -1 (retry until the record expires)
    assert mapping["DestinationConfig"]["OnFailure"]["Destination"] == {"Fn::GetAtt": ["DispatchFailuresQueue", "Arn"]}
    assert resources["DispatchFailuresQueue"]["Properties"]["SqsManagedSseEnabled"] is True
    alarm = resources["DispatchFailuresAlarm"]["Properties"]
    assert alarm["Dimensions"] == [
        {"Name": "QueueName", "Value": {"Fn::GetAtt": ["DispatchFailuresQueue", "QueueName"]}}
    ]
    dispatch = resources["DispatchFunction"]["Properties"]
    assert dispatch["Environment"]["Variables"]["MODELREPO_EVENT_BUS"] == {"Ref": "EventBus"}
    assert "Events" not in dispatch  # the mapping is written out (least privilege, see the template)
    assert template["Outputs"]["EventBusName"]["Value"] == {"Ref": "EventBus"}
    assert resources["EventBus"]["Type"] == "AWS::Events::EventBus"

    # Only an event row's insert passes the filter.
    [insert] = load_event("dynamodb-stream-insert.json")["Records"]
    pattern = stream_filter(template)
    assert filter_passes(pattern, insert)
    for row in ("counter", "ver~8999999999", "idem~abc", "dep~production", "exp~churn"):
        other = json.loads(json.dumps(insert))
        other["dynamodb"]["Keys"]["rk"]["S"] = other["dynamodb"]["NewImage"]["rk"]["S"] = row
        assert not filter_passes(pattern, other), row
    for change in ("MODIFY", "REMOVE"):
        assert not filter_passes(pattern, {**insert, "eventName": change}), change
