"""Task-event monitoring's deployment: subscription, ingest Lambda, failed-task log, queue, queries."""

from __future__ import annotations

from aws_cdk.assertions import Match
from celery_fleet.contract import queue_metrics
from celery_fleet.contract.task_events import SUBSCRIPTION_FILTER_PATTERN

from infra.task_events.construct import QUERIES
from tests.support.synth import Synthesized


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
