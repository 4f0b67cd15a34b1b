"""IAM statements of a role, evaluated against the AWS calls the rehearsal saw its code make.

The evaluation is the subset the stacks use: Allow and Deny statements, `Action`/`NotAction` and
`Resource` with `*` and `?` wildcards, and `StringEquals`/`StringLike` conditions on the keys a call
sets (today `cloudwatch:namespace`). An unknown condition operator makes the statement not match, so
a call is never allowed by a statement the rehearsal could not read.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from typing import Any

from rehearse.assembly import ACCOUNT, REGION

# Endpoint prefixes whose IAM service prefix differs.
IAM_PREFIX = {"monitoring": "cloudwatch", "events": "events"}

# The AWS managed policies roles here attach, as far as the rehearsed calls go.
MANAGED_POLICIES: dict[str, list[dict[str, Any]]] = {
    "service-role/AWSLambdaBasicExecutionRole": [
        {
            "Effect": "Allow",
            "Action": ["logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents"],
            "Resource": "*",
        }
    ],
    "service-role/AWSLambdaVPCAccessExecutionRole": [
        {
            "Effect": "Allow",
            "Action": [
                "logs:CreateLogGroup",
                "logs:CreateLogStream",
                "logs:PutLogEvents",
                "ec2:CreateNetworkInterface",
                "ec2:DescribeNetworkInterfaces",
                "ec2:DescribeSubnets",
                "ec2:DeleteNetworkInterface",
                "ec2:AssignPrivateIpAddresses",
                "ec2:UnassignPrivateIpAddresses",
            ],
            "Resource": "*",
        }
    ],
}


@dataclass(frozen=True)
class Call:
    """One AWS API call as IAM sees it."""

    action: str
    resource: str
    context: dict[str, str] = field(default_factory=dict)
    caller: str = ""

    def describe(self) -> str:
        keys = "".join(f" [{key}={value}]" for key, value in sorted(self.context.items()))
        return f"{self.action} on {self.resource}{keys}"


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _match(pattern: str, value: str, *, case: bool) -> bool:
    if not case:
        pattern, value = pattern.lower(), value.lower()
    return fnmatch.fnmatchcase(value, pattern)


def _conditions_hold(conditions: dict[str, Any], context: dict[str, str]) -> bool:
    for operator, tests in conditions.items():
        for key, expected in tests.items():
            actual = context.get(key)
            if actual is None:
                return False
            if operator == "StringEquals":
                ok = actual in [str(item) for item in _as_list(expected)]
            elif operator == "StringLike":
                ok = any(_match(str(item), actual, case=True) for item in _as_list(expected))
            else:
                return False
            if not ok:
                return False
    return True


def _statement_matches(statement: dict[str, Any], call: Call) -> bool:
    if "NotAction" in statement:
        if any(_match(str(a), call.action, case=False) for a in _as_list(statement["NotAction"])):
            return False
    elif not any(_match(str(a), call.action, case=False) for a in _as_list(statement.get("Action", []))):
        return False
    resources = [str(item) for item in _as_list(statement.get("Resource", "*"))]
    if not any(_match(pattern, call.resource, case=True) for pattern in resources):
        return False
    return _conditions_hold(statement.get("Condition", {}), call.context)


def allowed(statements: list[dict[str, Any]], call: Call) -> bool:
    """Whether `statements` allow `call`: some Allow matches and no Deny does."""
    matching = [s for s in statements if _statement_matches(s, call)]
    return any(s.get("Effect") == "Allow" for s in matching) and not any(
        s.get("Effect") == "Deny" for s in matching
    )


def _arn(service: str, resource: str) -> str:
    return f"arn:aws:{service}:{REGION}:{ACCOUNT}:{resource}"


def _named(value: str, service: str, kind: str) -> str:
    return value if value.startswith("arn:") else _arn(service, f"{kind}{value}")


def calls_from_api(
    service: str, operation: str, params: dict[str, Any], *, resolve_secret: Any
) -> list[Call]:
    """The IAM action, resources and condition keys of one botocore call: one Call per resource."""
    prefix = IAM_PREFIX.get(service, service)
    action = f"{prefix}:{operation}"
    if prefix == "ecs" and "services" in params:
        cluster = str(params.get("cluster", "default")).rsplit("/", 1)[-1]
        return [Call(action, _named(str(s), "ecs", f"service/{cluster}/")) for s in params["services"]]
    if prefix == "ecs" and "service" in params:
        cluster = str(params.get("cluster", "default")).rsplit("/", 1)[-1]
        return [Call(action, _named(str(params["service"]), "ecs", f"service/{cluster}/"))]
    if prefix == "cloudwatch" and params.get("AlarmNames"):
        return [Call(action, _named(str(name), "cloudwatch", "alarm:")) for name in params["AlarmNames"]]
    if (
        prefix == "application-autoscaling"
        and operation != "DescribeScalableTargets"
        and "ResourceId" in params
    ):
        # AWS names a scalable target by an opaque ID of its own; the resource ID stands in for it.
        target = str(params["ResourceId"]).replace("/", "-")
        return [Call(action, _arn("application-autoscaling", f"scalable-target/{target}"))]
    return [call_from_api(service, operation, params, resolve_secret=resolve_secret)]


def call_from_api(service: str, operation: str, params: dict[str, Any], *, resolve_secret: Any) -> Call:
    """The IAM action, resource and condition keys of one botocore call on a single resource."""
    prefix = IAM_PREFIX.get(service, service)
    action = f"{prefix}:{operation}"
    resource, context = "*", {}
    if prefix == "secretsmanager" and "SecretId" in params:
        resource = str(resolve_secret(params["SecretId"]))
    elif prefix == "logs" and "logGroupName" in params:
        resource = f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:{params['logGroupName']}"
        if "logStreamName" in params:
            resource += f":log-stream:{params['logStreamName']}"
    elif prefix == "sqs" and "QueueUrl" in params:
        resource = f"arn:aws:sqs:{REGION}:{ACCOUNT}:{str(params['QueueUrl']).rstrip('/').rsplit('/', 1)[-1]}"
    elif prefix == "s3" and "Bucket" in params:
        resource = f"arn:aws:s3:::{params['Bucket']}" + (f"/{params['Key']}" if "Key" in params else "")
    elif prefix == "cloudwatch" and operation == "PutMetricData":
        context["cloudwatch:namespace"] = str(params.get("Namespace", ""))
    return Call(action=action, resource=resource, context=context)


def role_statements(
    resolved_policies: list[dict[str, Any]], managed_arns: list[str]
) -> tuple[list[dict[str, Any]], list[str]]:
    """The statements of a role's inline policies and known managed policies; unknown managed ARNs."""
    statements: list[dict[str, Any]] = []
    for document in resolved_policies:
        statements += _as_list(document.get("Statement", []))
    unknown: list[str] = []
    for arn in managed_arns:
        name = arn.split(":policy/", 1)[-1]
        if name in MANAGED_POLICIES:
            statements += MANAGED_POLICIES[name]
        else:
            unknown.append(arn)
    return statements, unknown
