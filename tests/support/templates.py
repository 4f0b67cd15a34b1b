"""Queries on synthesized templates that several test files ask: a Lambda by its handler, a role's
policy statements, the actions they allow."""

from __future__ import annotations

from typing import Any

from aws_cdk.assertions import Template


def function_properties(template: Template, handler: str) -> dict[str, Any]:
    """Properties of the one Lambda function of `template` whose handler is `handler`."""
    functions = template.find_resources("AWS::Lambda::Function", {"Properties": {"Handler": handler}})
    assert len(functions) == 1, f"{len(functions)} functions with handler {handler}"
    return dict(next(iter(functions.values()))["Properties"])


def role_statements(template: Template, role_prefix: str) -> list[dict[str, Any]]:
    """Every statement of the IAM policies attached to roles whose logical ID starts with `role_prefix`."""
    return [
        statement
        for policy in template.find_resources("AWS::IAM::Policy").values()
        for role in policy["Properties"]["Roles"]
        if role["Ref"].startswith(role_prefix)
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]
    ]


def actions(statements: list[dict[str, Any]]) -> set[str]:
    """The actions `statements` allow, one string each."""
    found: set[str] = set()
    for statement in statements:
        value = statement["Action"]
        found.update([value] if isinstance(value, str) else value)
    return found
