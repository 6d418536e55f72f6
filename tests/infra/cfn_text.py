"""Reading a synthesized template: intrinsics rendered as text, IAM statements per role."""

from __future__ import annotations

import json
from typing import Any


def render(value: Any) -> str:
    """A CloudFormation value as text: Join concatenated, Ref as ${Id}, GetAtt as ${Id.Attr}."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and len(value) == 1:
        ((name, argument),) = value.items()
        if name == "Fn::Join":
            separator, parts = argument
            return separator.join(render(part) for part in parts)
        if name == "Ref":
            return "${" + argument + "}"
        if name == "Fn::GetAtt":
            return "${" + ".".join(argument) + "}"
    return json.dumps(value, sort_keys=True)


def as_list(value: Any) -> list:
    return value if isinstance(value, list) else [value]


def role_statements(resources: dict, role_id: str) -> list[dict]:
    """Every statement of the inline and customer-managed policies attached to a role."""
    statements = []
    for resource in resources.values():
        properties = resource.get("Properties", {})
        if resource["Type"] == "AWS::IAM::Policy" and {"Ref": role_id} in properties["Roles"]:
            statements += properties["PolicyDocument"]["Statement"]
        if resource["Type"] == "AWS::IAM::Role" and resource is resources.get(role_id):
            for policy in properties.get("Policies", []):
                statements += policy["PolicyDocument"]["Statement"]
    return statements


def actions_of(statements: list[dict]) -> set[str]:
    return {action for statement in statements for action in as_list(statement["Action"])}


def resources_of(statement: dict) -> list[str]:
    return [render(resource) for resource in as_list(statement["Resource"])]
