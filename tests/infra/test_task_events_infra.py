"""Task-event monitoring's deployment: subscription, ingest Lambda, failed-task log, queue, queries."""

from __future__ import annotations

from aws_cdk.assertions import Match
from celery_fleet.contract import queue_metrics
from celery_fleet.contract.task_events import EVENT_KEY_ENV, SUBSCRIPTION_FILTER_PATTERN

from infra.task_events.construct import QUERIES
from tests.support.synth import Synthesized, stage_config

# The signing key's ARN, as the stateless stack reads it from the stateful one.
_KEY_FROM_STATEFUL = {
    "Fn::GetStackOutput": Match.object_like({"OutputName": Match.string_like_regexp("TaskEventKeySecret")})
}


def test_worker_logs_are_subscribed_with_the_event_line_filter(dev: Synthesized) -> None:
    dev.template("stateless").has_resource_properties(
        "AWS::Logs::SubscriptionFilter",
        {
            "FilterPattern": SUBSCRIPTION_FILTER_PATTERN,
            "DestinationArn": {"Fn::GetAtt": [Match.string_like_regexp("^TaskEventsFunction"), "Arn"]},
        },
    )


def test_ingest_lambda_follows_the_environment_contract(dev: Synthesized) -> None:
    dev.template("stateless").has_resource_properties(
        "AWS::Lambda::Function",
        {
            "Handler": "task_events.handler.handler",
            "Environment": {
                "Variables": Match.object_like(
                    {
                        "METRIC_NAMESPACE": queue_metrics.namespace("dev"),
                        "FAILED_TASKS_LOG_GROUP": {"Ref": Match.string_like_regexp("^TaskEventsFailedTasks")},
                        "QUEUES": ",".join(stage_config("dev").workers.queues),
                        "EVENT_KEY_SECRET_ARN": _KEY_FROM_STATEFUL,
                    }
                )
            },
        },
    )


def test_failed_invocations_go_to_the_on_failure_queue(dev: Synthesized) -> None:
    dev.template("stateless").has_resource_properties(
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


def test_on_failure_queue_is_encrypted_and_tls_only(dev: Synthesized) -> None:
    template = dev.template("stateless")
    template.has_resource_properties(
        "AWS::SQS::Queue", {"SqsManagedSseEnabled": True, "MessageRetentionPeriod": 1209600}
    )
    template.has_resource_properties(
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


def test_failed_task_records_are_kept_and_survive_the_stack(dev: Synthesized) -> None:
    dev.template("stateless").has_resource(
        "AWS::Logs::LogGroup", {"Properties": {"RetentionInDays": 90}, "DeletionPolicy": "Retain"}
    )


def test_ingest_lambda_may_write_only_to_the_failed_tasks_log(dev: Synthesized) -> None:
    dev.template("stateless").has_resource_properties(
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


def test_saved_queries_are_deployed_for_the_stage(dev: Synthesized) -> None:
    template = dev.template("stateless")
    template.resource_count_is("AWS::Logs::QueryDefinition", len(QUERIES))
    for name in QUERIES:
        template.has_resource_properties("AWS::Logs::QueryDefinition", {"Name": f"celery-fleet/dev/{name}"})


def test_the_signing_key_is_a_generated_secret_kept_with_the_broker(dev: Synthesized) -> None:
    dev.template("stateful").has_resource(
        "AWS::SecretsManager::Secret",
        {
            "Properties": {
                "Description": Match.string_like_regexp("task-event signing key"),
                "GenerateSecretString": {"PasswordLength": 64, "ExcludePunctuation": True},
            },
            "DeletionPolicy": "Retain",
        },
    )


def test_every_worker_receives_the_signing_key_as_an_ecs_secret(dev: Synthesized) -> None:
    template = dev.template("stateless")
    definitions = template.find_resources("AWS::ECS::TaskDefinition")
    workers = [
        d for d in definitions.values()
        if any("celery" in " ".join(c.get("Command", [])) and "worker" in c.get("Command", [])
               for c in d["Properties"]["ContainerDefinitions"])
    ]  # fmt: skip
    assert workers
    for definition in workers:
        (container,) = definition["Properties"]["ContainerDefinitions"]
        names = {secret["Name"] for secret in container["Secrets"]}
        assert EVENT_KEY_ENV in names
        assert EVENT_KEY_ENV not in {variable["Name"] for variable in container["Environment"]}


def test_only_the_ingest_lambda_and_the_workers_may_read_the_signing_key(dev: Synthesized) -> None:
    policies = dev.template("stateless").find_resources("AWS::IAM::Policy")
    readers = {
        role["Ref"]
        for policy in policies.values()
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]
        if "TaskEventKeySecret" in str(statement["Resource"])
        and "secretsmanager:GetSecretValue" in statement["Action"]
        for role in policy["Properties"]["Roles"]
    }
    assert any(role.startswith("TaskEventsFunction") for role in readers)
    assert all(
        role.startswith("TaskEventsFunction") or "TaskDefinitionExecutionRole" in role for role in readers
    )


def test_the_top_failure_fingerprints_query_reads_the_failed_tasks_log(dev: Synthesized) -> None:
    dev.template("stateless").has_resource_properties(
        "AWS::Logs::QueryDefinition",
        {
            "Name": "celery-fleet/dev/top-failure-fingerprints",
            "QueryString": Match.string_like_regexp("by fingerprint"),
            "LogGroupNames": [{"Ref": Match.string_like_regexp("^TaskEventsFailedTasks")}],
        },
    )
