"""infra/ parses (pycep) and says what the issue asks; `make test` also runs checkov on it."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import pytest
from pycep import BicepParser

from modelrepo.adapters.azure import (
    CONNECTION,
    EVENT_TOPIC_SETTING,
    EVENTS_QUEUE_SETTING,
    EVENTS_SWEEP_SCHEDULE_SETTING,
    POISON_QUEUE,
    RECONCILE_SCHEDULE_SETTING,
    AzureSettings,
)
from tests.azure.host import FUNCTIONS, REPO

INFRA = Path(__file__).resolve().parents[2] / "infra"
OWNER, CONTRIBUTOR = "8e3af657-a8ff-443c-a75c-2fe8c4bcb635", "b24988ac-6180-42a0-ab88-20f7382dd24c"


@pytest.fixture(scope="module")
def main() -> Any:
    return BicepParser().parse(file_path=INFRA / "main.bicep")


@pytest.fixture(scope="module")
def subscription_module() -> Any:
    return BicepParser().parse(file_path=INFRA / "modules" / "uploads-subscription.bicep")


def config(template: Any, resource: str) -> Any:
    return template["resources"][resource]["config"]


def variable(template: Any, name: str) -> Any:
    return template["variables"][name]["value"]


def test_every_bicep_file_parses() -> None:
    files = sorted(INFRA.rglob("*.bicep"))
    assert len(files) == 2
    for path in files:
        assert BicepParser().parse(file_path=path)["resources"], path


def test_storage_is_private_keyless_and_tls12(main: Any) -> None:
    storage = config(main, "storage")["properties"]
    assert storage["allowBlobPublicAccess"] is False
    assert storage["allowSharedKeyAccess"] is False
    assert storage["minimumTlsVersion"] == "TLS1_2"
    assert storage["supportsHttpsTrafficOnly"] is True
    assert config(main, "containers")["loop_type"]["detail"]["array_name"] == ["registryContainer", "packageContainer"]
    assert config(main, "containers")["config"]["properties"]["publicAccess"] == "None"
    assert config(main, "uploads")["properties"]["publicAccess"] == "None"
    assert config(main, "deadLetters")["properties"]["publicAccess"] == "None"
    assert variable(main, "metadataTable") == "modelrepo"
    # The blob trigger's poison queue exists before the first failure (monitoring, operator roles).
    assert variable(main, config(main, "poisonQueue")["name"]) == POISON_QUEUE


def test_the_function_app_is_flex_consumption_python_with_a_managed_identity(main: Any) -> None:
    plan = config(main, "plan")
    assert (plan["sku"]["name"], plan["sku"]["tier"]) == ("FC1", "FlexConsumption")
    app = config(main, "functionApp")
    assert app["kind"] == "functionapp,linux" and app["identity"]["type"] == "UserAssigned"
    assert app["properties"]["httpsOnly"] is True
    assert app["properties"]["functionAppConfig"]["runtime"] == {"name": "python", "version": "3.11"}
    assert app["properties"]["functionAppConfig"]["deployment"]["storage"]["authentication"]["type"] == (
        "UserAssignedIdentity"
    )
    assert config(main, "insights")["properties"]["DisableLocalAuth"] is True


def test_app_settings_are_identity_based_and_accepted_by_the_app(main: Any) -> None:
    settings = {s["name"]: s["value"] for s in config(main, "functionApp")["properties"]["siteConfig"]["appSettings"]}
    assert "AzureWebJobsStorage" not in settings and CONNECTION not in settings
    assert settings["AzureWebJobsStorage__credential"] == settings[f"{CONNECTION}__credential"] == "managedidentity"
    for service in ("blob", "queue", "table"):
        assert f"{CONNECTION}__{service}ServiceUri" in settings
    literals = [v for v in settings.values() if isinstance(v, str)]
    assert not [v for v in literals if "AccountKey" in v or "SharedAccessSignature" in v or "sig=" in v]
    # The names Bicep sets are the ones the app reads (values: stand-ins for the resolved ones).
    resolved = {name: "https://example.blob.core.windows.net/" if "Uri" in name else "x" for name in settings}
    resolved |= {
        name: variable(main, settings[name])
        for name in (
            "MODELREPO_UPLOADS_CONTAINER",
            "MODELREPO_REGISTRY_CONTAINER",
            "MODELREPO_DEADLETTER_CONTAINER",
            "MODELREPO_TABLE",
        )
    }
    resolved[RECONCILE_SCHEDULE_SETTING] = main["parameters"][settings[RECONCILE_SCHEDULE_SETTING]]["default"]
    resolved[EVENTS_SWEEP_SCHEDULE_SETTING] = main["parameters"][settings[EVENTS_SWEEP_SCHEDULE_SETTING]]["default"]
    resolved[EVENTS_QUEUE_SETTING] = variable(main, settings[EVENTS_QUEUE_SETTING])
    resolved[EVENT_TOPIC_SETTING] = "https://evgt-events-x.swedencentral-1.eventgrid.azure.net/api/events"
    parsed = AzureSettings.from_environment(resolved)
    assert parsed.uses_identity and (parsed.uploads_container, parsed.table) == ("uploads", "modelrepo")
    assert parsed.dead_letter_container == variable(main, "deadLetterContainer")
    assert parsed.reconcile_schedule == "0 */15 * * * *"
    assert parsed.events_sweep_schedule == "0 */5 * * * *" and parsed.event_topic_key is None
    assert parsed.events_queue == variable(main, config(main, "eventsQueue")["name"])


def test_every_setting_a_trigger_names_is_set_by_bicep_and_by_the_local_example(main: Any) -> None:
    """The host resolves `%NAME%` in bindings when it indexes the functions; an unset one stops it."""
    named = {
        value.strip("%")
        for function in FUNCTIONS.values()
        for binding in json.loads(function.get_function_json())["bindings"]
        for value in binding.values()
        if isinstance(value, str) and value.startswith("%") and value.endswith("%")
    }
    assert {RECONCILE_SCHEDULE_SETTING, EVENTS_QUEUE_SETTING, EVENTS_SWEEP_SCHEDULE_SETTING} <= named
    bicep = {s["name"] for s in config(main, "functionApp")["properties"]["siteConfig"]["appSettings"]}
    example = json.loads((REPO / "local.settings.json.example").read_text())["Values"]
    assert named <= bicep and named <= {name for name, value in example.items() if value}
    assert AzureSettings.from_environment(example).events_queue == example[EVENTS_QUEUE_SETTING]


def test_the_events_topic_takes_cloudevents_from_the_app_identity_only(main: Any) -> None:
    topic = config(main, "eventsTopic")
    assert main["resources"]["eventsTopic"]["type"] == "Microsoft.EventGrid/topics"
    assert topic["properties"]["inputSchema"] == "CloudEventSchemaV1_0"
    assert topic["properties"]["disableLocalAuth"] is True  # no keys: Entra ID tokens only
    assert topic["properties"]["minimumTlsVersionAllowed"] == "1.2"
    settings = {s["name"]: s["value"] for s in config(main, "functionApp")["properties"]["siteConfig"]["appSettings"]}
    endpoint = settings[EVENT_TOPIC_SETTING]["operator"]["operands"]
    assert endpoint["operand_1"] == "eventsTopic"
    assert endpoint["operand_2"]["operator"]["operands"] == {"operand_1": "properties", "operand_2": "endpoint"}
    assert not any(name.startswith("MODELREPO_EVENT_TOPIC_KEY") for name in settings)
    sender = config(main, "appEventSender")
    assert (sender["scope"], role_of(sender)) == ("eventsTopic", "eventGridDataSender")
    assert variable(main, "roles")["eventGridDataSender"] == "d5a91429-5739-47e2-a06b-3470a27159e7"
    assert {"eventsTopicName", "eventsTopicEndpoint"} <= set(main["outputs"])


def test_role_assignments_are_data_plane_roles_with_narrow_scopes(main: Any) -> None:
    roles = variable(main, "roles")
    assert OWNER not in roles.values() and CONTRIBUTOR not in roles.values()
    assignments = {
        name: resource["config"].get("config", resource["config"])  # a conditional resource nests its config
        for name, resource in main["resources"].items()
        if resource["type"] == "Microsoft.Authorization/roleAssignments"
    }
    granted = {name: (a["scope"], role_of(a)) for name, a in assignments.items()}
    assert granted == {
        "appBlobOwner": ("storage", "blobDataOwner"),
        "appQueueContributor": ("storage", "queueDataContributor"),
        "appTableContributor": ("table", "tableDataContributor"),
        "appTelemetry": ("insights", "monitoringMetricsPublisher"),
        "appEventSender": ("eventsTopic", "eventGridDataSender"),
        "topicDeadLetterWriter": ("deadLetters", "blobDataContributor"),
        # What `modelrepo reconcile|dead-letters|replay --backend azure` needs, each on one resource.
        "operatorUploadsReader": ("uploads", "blobDataReader"),
        "operatorTable": ("table", "tableDataContributor"),
        "operatorPoisonQueue": ("poisonQueue", "queueDataContributor"),
        "operatorDeadLetters": ("deadLetters", "blobDataContributor"),
    }
    for name, assignment in assignments.items():
        principal = "operatorPrincipalType" if name.startswith("operator") else "ServicePrincipal"
        assert assignment["properties"]["principalType"] == principal
        if name.startswith("operator"):  # only when an operator is named
            assert main["resources"][name]["config"]["condition"]["operator"]["type"] == "not"


def role_of(assignment: Any) -> str:
    role = assignment["properties"]["roleDefinitionId"]["function"]["parameters"]["resource_name_1"]
    assert role["operator"]["operands"]["operand_1"] == "roles"
    return str(role["operator"]["operands"]["operand_2"])


def test_event_grid_feeds_the_blob_trigger_with_bounded_retries_and_dead_letters(
    main: Any, subscription_module: Any
) -> None:
    module = main["modules"]["uploadsSubscription"]["config"]
    assert module["condition"] == "subscribeToUploads"
    params = module["config"]["params"]
    trigger = FUNCTIONS[params["functionName"]]
    assert '"source": "EventGrid"' in trigger.get_function_json()
    assert (params["uploadsContainer"], params["deadLetterContainer"]) == ("uploadsContainer", "deadLetterContainer")
    subscription = config(subscription_module, "subscription")["properties"]
    endpoint = subscription["destination"]["properties"]["endpointUrl"]
    assert subscription["destination"]["endpointType"] == "WebHook"
    assert "/runtime/webhooks/blobs?functionName=Host.Functions.${functionName}&code=" in endpoint
    assert subscription["filter"]["includedEventTypes"] == ["Microsoft.Storage.BlobCreated"]
    assert subscription["filter"]["subjectBeginsWith"] == "/blobServices/default/containers/${uploadsContainer}/blobs/"
    assert subscription["retryPolicy"] == {"maxDeliveryAttempts": 30, "eventTimeToLiveInMinutes": 1440}
    dead_letter = subscription["deadLetterWithResourceIdentity"]["deadLetterDestination"]
    assert dead_letter["properties"]["blobContainerName"] == "deadLetterContainer"


def _gate() -> Any:
    spec = importlib.util.spec_from_file_location("checkov_gate", INFRA.parent / "tools" / "checkov_gate.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _report(**summary: int) -> dict[str, Any]:
    base = {"passed": 20, "failed": 0, "skipped": 8, "parsing_errors": 0, "resource_count": 15}
    return {"check_type": "bicep", "results": {"failed_checks": []}, "summary": base | summary}


def test_the_checkov_gate_fails_on_parsing_errors_that_checkov_itself_lets_pass() -> None:
    def problems(report: Any) -> list[str]:
        found: list[str] = _gate().problems(report, "bicep")
        return found

    assert problems(_report()) == []
    # What checkov 3.3.30 printed (exit code 0) for a truncated Bicep file:
    assert problems(_report(passed=0, skipped=0, parsing_errors=1, resource_count=0)) == [
        "checkov could not parse 1 bicep file(s)",
        "checkov found no resources to check",
    ]
    failing = _report(failed=1)
    failing["results"]["failed_checks"] = [
        {"check_id": "CKV_X", "check_name": "name", "resource": "r", "file_path": "/main.bicep"}
    ]
    assert problems(failing) == ["CKV_X name: r (/main.bicep)"]
    assert problems([]) == ["checkov reported nothing"]
    assert problems({"unexpected": True})
