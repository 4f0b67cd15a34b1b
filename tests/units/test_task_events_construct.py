"""TaskEventIngester and TaskEventKey alone: subscription, ingest Lambda, failed-task log, queue, queries."""

from __future__ import annotations

from typing import Any

from aws_cdk import Stack
from aws_cdk.assertions import Match, Template
from celery_fleet.contract.task_events import SUBSCRIPTION_FILTER_PATTERN
from celery_fleet.contract.worker_env import EVENT_KEY_ENV

from infra.task_events import TaskEventIngester, TaskEventKey
from infra.task_events.construct import QUERIES
from tests.support.bare import NAMESPACE, bare_stack, log_group, secret, template, worker_service

QUEUES = ["alpha", "beta"]


def _ingester(stack: Stack, **overrides: Any) -> TaskEventIngester:
    arguments: dict[str, Any] = {
        "stage": "test",
        "worker_logs": log_group(stack, "WorkerLogs"),
        "queues": QUEUES,
        "event_key": secret(stack, "EventKey"),
        "namespace": NAMESPACE,
        "failed_tasks_retention_days": 60,
        "log_retention_days": 7,
        **overrides,
    }
    return TaskEventIngester(stack, "TaskEvents", **arguments)


def _template(**overrides: Any) -> Template:
    stack = bare_stack()
    _ingester(stack, **overrides)
    return template(stack)


def _ref_to(prefix: str) -> dict[str, Any]:
    return {"Ref": Match.string_like_regexp(f"^{prefix}")}


def test_worker_logs_are_subscribed_with_the_event_line_filter() -> None:
    _template().has_resource_properties(
        "AWS::Logs::SubscriptionFilter",
        {
            "LogGroupName": _ref_to("WorkerLogs"),
            "FilterPattern": SUBSCRIPTION_FILTER_PATTERN,
            "DestinationArn": {"Fn::GetAtt": [Match.string_like_regexp("^TaskEventsFunction"), "Arn"]},
        },
    )


def test_ingest_lambda_follows_the_environment_contract() -> None:
    _template().has_resource_properties(
        "AWS::Lambda::Function",
        {
            "Handler": "task_events.handler.handler",
            "Environment": {
                "Variables": Match.object_like(
                    {
                        "METRIC_NAMESPACE": NAMESPACE,
                        "FAILED_TASKS_LOG_GROUP": _ref_to("TaskEventsFailedTasks"),
                        "QUEUES": "alpha,beta",
                        "EVENT_KEY_SECRET_ARN": _ref_to("EventKey"),
                    }
                )
            },
        },
    )


def test_failed_invocations_go_to_the_on_failure_queue_after_two_retries() -> None:
    _template().has_resource_properties(
        "AWS::Lambda::EventInvokeConfig",
        {
            "MaximumRetryAttempts": 2,
            "DestinationConfig": {
                "OnFailure": {
                    "Destination": {"Fn::GetAtt": [Match.string_like_regexp("^TaskEventsOnFailure"), "Arn"]}
                }
            },
        },
    )


def test_on_failure_queue_is_encrypted_and_tls_only() -> None:
    t = _template()
    t.has_resource_properties(
        "AWS::SQS::Queue", {"SqsManagedSseEnabled": True, "MessageRetentionPeriod": 1209600}
    )
    t.has_resource_properties(
        "AWS::SQS::QueuePolicy",
        {
            "PolicyDocument": {
                "Statement": Match.array_with(
                    [
                        Match.object_like(
                            {"Effect": "Deny", "Condition": {"Bool": {"aws:SecureTransport": "false"}}}
                        )
                    ]
                )
            }
        },
    )


def test_failed_task_records_are_kept_as_configured_and_survive_the_stack() -> None:
    (failed,) = _template(failed_tasks_retention_days=60).find_resources(
        "AWS::Logs::LogGroup", {"Properties": {"RetentionInDays": 60}, "DeletionPolicy": "Retain"}
    )
    assert failed.startswith("TaskEventsFailedTasks")


def test_the_ingest_lambdas_own_logs_are_kept_as_configured() -> None:
    _template(log_retention_days=7).has_resource(
        "AWS::Logs::LogGroup", {"Properties": {"RetentionInDays": 7}, "DeletionPolicy": "Delete"}
    )


def test_ingest_lambda_may_write_only_to_the_failed_tasks_log() -> None:
    _template().has_resource_properties(
        "AWS::IAM::Policy",
        {
            "PolicyDocument": {
                "Statement": Match.array_with(
                    [
                        Match.object_like(
                            {
                                "Action": ["logs:CreateLogStream", "logs:PutLogEvents"],
                                "Resource": {
                                    "Fn::GetAtt": [Match.string_like_regexp("^TaskEventsFailedTasks"), "Arn"]
                                },
                            }
                        )
                    ]
                )
            }
        },
    )


def test_ingest_lambda_may_read_the_signing_key() -> None:
    _template().has_resource_properties(
        "AWS::IAM::Policy",
        {
            "PolicyDocument": {
                "Statement": Match.array_with(
                    [
                        Match.object_like(
                            {
                                "Action": Match.array_with(["secretsmanager:GetSecretValue"]),
                                "Resource": _ref_to("EventKey"),
                            }
                        )
                    ]
                )
            },
            "Roles": [_ref_to("TaskEventsFunction")],
        },
    )


def test_saved_queries_are_deployed_for_the_stage() -> None:
    t = _template(stage="qa")
    t.resource_count_is("AWS::Logs::QueryDefinition", len(QUERIES))
    for name in QUERIES:
        t.has_resource_properties("AWS::Logs::QueryDefinition", {"Name": f"celery-fleet/qa/{name}"})


def test_the_top_failure_fingerprints_query_reads_the_failed_tasks_log() -> None:
    _template().has_resource_properties(
        "AWS::Logs::QueryDefinition",
        {
            "Name": "celery-fleet/test/top-failure-fingerprints",
            "QueryString": Match.string_like_regexp("by fingerprint"),
            "LogGroupNames": [_ref_to("TaskEventsFailedTasks")],
        },
    )


def test_the_signing_key_is_a_generated_secret_that_outlives_the_stack() -> None:
    stack = bare_stack()
    TaskEventKey(stack, "TaskEventKey")
    template(stack).has_resource(
        "AWS::SecretsManager::Secret",
        {
            "Properties": {
                "Description": Match.string_like_regexp("task-event signing key"),
                "GenerateSecretString": {"PasswordLength": 64, "ExcludePunctuation": True},
            },
            "DeletionPolicy": "Retain",
        },
    )


def test_a_worker_told_to_sign_receives_the_key_as_an_ecs_secret_never_as_plain_environment() -> None:
    stack = bare_stack()
    key = TaskEventKey(stack, "TaskEventKey")
    worker_service(stack).sign_task_events(key.secret)
    (definition,) = template(stack).find_resources("AWS::ECS::TaskDefinition").values()
    (container,) = definition["Properties"]["ContainerDefinitions"]
    assert EVENT_KEY_ENV in {entry["Name"] for entry in container["Secrets"]}
    assert EVENT_KEY_ENV not in {entry["Name"] for entry in container["Environment"]}
