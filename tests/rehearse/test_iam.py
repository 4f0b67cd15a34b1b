"""The IAM subset the rehearsal evaluates a role's statements with."""

from __future__ import annotations

from rehearse.iam import Call, allowed, call_from_api, role_statements

SECRET = "arn:aws:secretsmanager:us-east-1:123456789012:secret:dev-token-AbCdEf"


def test_an_action_and_resource_listed_together_are_allowed() -> None:
    statements = [{"Effect": "Allow", "Action": ["secretsmanager:GetSecretValue"], "Resource": SECRET}]
    assert allowed(statements, Call("secretsmanager:GetSecretValue", SECRET))
    assert not allowed(statements, Call("secretsmanager:GetSecretValue", SECRET + "x"))
    assert not allowed(statements, Call("secretsmanager:PutSecretValue", SECRET))


def test_log_group_wildcard_arns_cover_their_streams() -> None:
    group = "arn:aws:logs:us-east-1:123456789012:log-group:/failed:*"
    statements = [{"Effect": "Allow", "Action": "logs:PutLogEvents", "Resource": group}]
    call = call_from_api(
        "logs", "PutLogEvents", {"logGroupName": "/failed", "logStreamName": "s"}, resolve_secret=str
    )
    assert allowed(statements, call)
    other = call_from_api(
        "logs", "PutLogEvents", {"logGroupName": "/other", "logStreamName": "s"}, resolve_secret=str
    )
    assert not allowed(statements, other)


def test_a_namespace_condition_limits_put_metric_data() -> None:
    statements = [
        {
            "Effect": "Allow",
            "Action": "cloudwatch:PutMetricData",
            "Resource": "*",
            "Condition": {"StringEquals": {"cloudwatch:namespace": "CeleryFleet/dev"}},
        }
    ]
    ok = call_from_api("monitoring", "PutMetricData", {"Namespace": "CeleryFleet/dev"}, resolve_secret=str)
    wrong = call_from_api(
        "monitoring", "PutMetricData", {"Namespace": "CeleryFleet/prod"}, resolve_secret=str
    )
    assert ok.action == "cloudwatch:PutMetricData"
    assert allowed(statements, ok)
    assert not allowed(statements, wrong)


def test_an_explicit_deny_wins() -> None:
    statements = [
        {"Effect": "Allow", "Action": "sqs:*", "Resource": "*"},
        {"Effect": "Deny", "Action": "sqs:SendMessage", "Resource": "*"},
    ]
    assert not allowed(statements, Call("sqs:SendMessage", "arn:aws:sqs:us-east-1:123456789012:q"))
    assert allowed(statements, Call("sqs:GetQueueUrl", "arn:aws:sqs:us-east-1:123456789012:q"))


def test_an_unknown_condition_operator_never_allows() -> None:
    statements = [
        {
            "Effect": "Allow",
            "Action": "*",
            "Resource": "*",
            "Condition": {"IpAddress": {"aws:SourceIp": "10.0.0.0/8"}},
        }
    ]
    assert not allowed(statements, Call("sqs:SendMessage", "*", {"aws:SourceIp": "10.0.0.1"}))


def test_known_managed_policies_are_expanded_and_unknown_ones_reported() -> None:
    basic = "arn:aws:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole"
    statements, unknown = role_statements([], [basic, "arn:aws:iam::aws:policy/Mystery"])
    assert allowed(
        statements, Call("logs:PutLogEvents", "arn:aws:logs:us-east-1:123456789012:log-group:/x:log-stream:y")
    )
    assert unknown == ["arn:aws:iam::aws:policy/Mystery"]
