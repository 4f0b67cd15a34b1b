"""Task-event monitoring as the stages wire it: the fleet's logs, the stage's names, the stateful key.

What TaskEventIngester and TaskEventKey do with their inputs is tested alone in
tests/units/test_task_events_construct.py.
"""

from __future__ import annotations

from aws_cdk.assertions import Match
from celery_fleet.contract import queue_metrics
from celery_fleet.contract.worker_env import BROKER_AUTH_TOKEN_ENV, EVENT_KEY_ENV

from tests.support.synth import Synthesized, stage_config

# The signing key's ARN, as the stateless stack reads it from the stateful one.
_KEY_FROM_STATEFUL = {
    "Fn::GetStackOutput": Match.object_like({"OutputName": Match.string_like_regexp("TaskEventKeySecret")})
}


def test_the_ingester_is_subscribed_to_the_fleets_worker_logs(dev: Synthesized) -> None:
    dev.template("stateless").has_resource_properties(
        "AWS::Logs::SubscriptionFilter",
        {
            "LogGroupName": {"Ref": Match.string_like_regexp("^WorkersLogs")},
            "DestinationArn": {"Fn::GetAtt": [Match.string_like_regexp("^TaskEventsFunction"), "Arn"]},
        },
    )


def test_the_ingester_gets_the_stages_namespace_queues_and_the_stateful_key(dev: Synthesized) -> None:
    dev.template("stateless").has_resource_properties(
        "AWS::Lambda::Function",
        {
            "Handler": "task_events.handler.handler",
            "Environment": {
                "Variables": Match.object_like(
                    {
                        "METRIC_NAMESPACE": queue_metrics.namespace("dev"),
                        "QUEUES": ",".join(stage_config("dev").workers.queues),
                        "EVENT_KEY_SECRET_ARN": _KEY_FROM_STATEFUL,
                    }
                )
            },
        },
    )


def test_saved_queries_carry_the_stage_name(dev: Synthesized) -> None:
    dev.template("stateless").has_resource_properties(
        "AWS::Logs::QueryDefinition", {"Name": "celery-fleet/dev/top-failure-fingerprints"}
    )


def test_failed_task_records_are_kept_as_the_stage_says(dev: Synthesized) -> None:
    days = stage_config("dev").monitoring.failed_tasks_retention_days
    dev.template("stateless").has_resource(
        "AWS::Logs::LogGroup", {"Properties": {"RetentionInDays": days}, "DeletionPolicy": "Retain"}
    )


def test_the_signing_key_is_kept_with_the_broker(dev: Synthesized) -> None:
    # In the stateful stack: a key replaced with the stateless one would void every worker's lines.
    key = {
        "Properties": Match.object_like({"Description": Match.string_like_regexp("task-event signing key")})
    }
    assert len(dev.template("stateful").find_resources("AWS::SecretsManager::Secret", key)) == 1
    assert dev.template("stateless").find_resources("AWS::SecretsManager::Secret", key) == {}


def test_every_worker_holds_the_broker_token_and_the_signing_key_as_ecs_secrets(dev: Synthesized) -> None:
    template = dev.template("stateless")
    definitions = template.find_resources("AWS::ECS::TaskDefinition")
    workers = [
        d for d in definitions.values()
        if any("celery" in " ".join(c.get("Command", [])) and "worker" in c.get("Command", [])
               for c in d["Properties"]["ContainerDefinitions"])
    ]  # fmt: skip
    assert len(workers) == len(stage_config("dev").workers.groups)
    for definition in workers:
        (container,) = definition["Properties"]["ContainerDefinitions"]
        assert {secret["Name"] for secret in container["Secrets"]} == {BROKER_AUTH_TOKEN_ENV, EVENT_KEY_ENV}
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
