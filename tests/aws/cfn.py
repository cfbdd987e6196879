"""Reading template.yaml: CloudFormation's short intrinsic tags, and the SAM transform itself."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml
from samtranslator.translator.managed_policy_translator import ManagedPolicyLoader
from samtranslator.translator.transform import transform

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "template.yaml"


class CfnLoader(yaml.SafeLoader):
    """A YAML loader that reads `!Ref x` as {"Ref": "x"} and `!Sub s` as {"Fn::Sub": s}, etc."""


def _intrinsic(loader: CfnLoader, suffix: str, node: yaml.Node) -> dict[str, Any]:
    value: Any
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)  # type: ignore[arg-type]
    if suffix == "Ref":
        return {"Ref": value}
    if suffix == "GetAtt" and isinstance(value, str):
        value = value.split(".", 1)
    return {f"Fn::{suffix}": value}


CfnLoader.add_multi_constructor("!", _intrinsic)


def load_template(path: Path = TEMPLATE) -> dict[str, Any]:
    template: dict[str, Any] = yaml.load(path.read_text(encoding="utf-8"), Loader=CfnLoader)
    return template


class _NoManagedPolicies(ManagedPolicyLoader):  # type: ignore[misc]
    """The transform asks IAM for managed policy names only if the template uses them; it doesn't."""

    def __init__(self) -> None:
        pass

    def load(self) -> dict[str, str]:
        return {}


def translate(template: dict[str, Any]) -> dict[str, Any]:
    """The CloudFormation that CloudFormation's own SAM transform makes of the template.

    Local code folders are replaced by S3 locations first, as `sam package` / `sam deploy` do.
    """
    packaged = copy.deepcopy(template)
    function_defaults = packaged.get("Globals", {}).get("Function", {})
    if "CodeUri" in function_defaults:
        function_defaults["CodeUri"] = "s3://packaged/code.zip"
    for resource in packaged["Resources"].values():
        properties = resource.get("Properties", {})
        if resource["Type"] == "AWS::Serverless::Function" and "CodeUri" in properties:
            properties["CodeUri"] = "s3://packaged/code.zip"
        if resource["Type"] == "AWS::Serverless::LayerVersion":
            properties["ContentUri"] = "s3://packaged/layer.zip"
    translated: dict[str, Any] = transform(
        packaged,
        {"AWS::Region": "us-east-1", "AWS::AccountId": "123456789012", "AWS::Partition": "aws"},
        _NoManagedPolicies(),
    )
    return translated


def walk(node: Any) -> Iterator[Any]:
    yield node
    if isinstance(node, dict):
        for value in node.values():
            yield from walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from walk(value)


# GET on these paths needs no credentials (template.yaml: `Authorizer: NONE`); the rest needs SigV4.
PUBLIC_PATHS = ("/api/health", "/api/openapi.json")


def api_security(cloudformation: dict[str, Any], method: str, path: str) -> list[str] | None:
    """The authorisers API Gateway applies to a request, from the OpenAPI body SAM generates.

    API Gateway picks the most specific resource (a literal path before a greedy {proxy+}) and
    then the method (an explicit one before ANY). None: the resource has no such method, and API
    Gateway refuses the request itself (403) without calling the function.
    """
    [api] = [r for r in cloudformation["Resources"].values() if r["Type"] == "AWS::ApiGateway::RestApi"]
    paths = api["Properties"]["Body"]["paths"]
    literal = paths.get(path)
    greedy = [p for p in paths if p.endswith("/{proxy+}") and path.startswith(p.removesuffix("{proxy+}"))]
    if literal is None and not greedy:
        return None  # no resource: API Gateway answers 403 itself
    operations = literal if literal is not None else paths[max(greedy, key=len)]
    operation = operations.get(method.lower()) or operations.get("x-amazon-apigateway-any-method")
    if operation is None:
        return None
    # SAM writes `Authorizer: NONE` as a "NONE" requirement: API Gateway then authorises nothing.
    return sorted(name for requirement in operation.get("security", []) for name in requirement if name != "NONE")
