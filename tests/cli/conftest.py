"""A deployed stage as moto holds it: stack outputs, metrics, ECS services, alarms, log groups, the
failed-messages bucket; a fake only for the Logs Insights engine (moto runs no queries) and for
Lambda's invoke (moto would need Docker), which runs the replay handler in this process against a
real redis-server."""

from __future__ import annotations

import importlib
import io
import json
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest
from celery_fleet.contract import kept_messages as km
from celery_fleet.contract import queue_metrics as qm
from celery_fleet.contract.queue_metrics import SENT_AT_HEADER
from celery_fleet_cli.main import main
from moto import mock_aws

from tests.support.redis_server import RedisServer

REGION = "eu-west-1"
STAGE = "dev"
STACK = f"CeleryFleet-{STAGE}-Stateless"
BUCKET = "celery-fleet-dev-failed-messages"
NOW = datetime(2026, 11, 30, 14, 0, tzinfo=UTC)
OUTPUTS = {
    "MetricNamespace": qm.namespace(STAGE),
    "Queues": "default,bulk",
    "ClusterName": "fleet",
    "WorkerServices": "default=default-workers,bulk=bulk-workers",
    "WorkerLogGroup": "workers",
    "FailedTasksLogGroup": "failed-tasks",
    "ReplayFunctionName": "replay-function",
    "ReplayLogGroup": "replay-logs",
}


@dataclass
class FakeInsights:
    """Logs Insights: answers each query with the rows of the first rule whose text it contains.

    Every other call goes to moto's CloudWatch Logs. `running_polls` polls report Running first.
    """

    logs: Any
    rules: list[tuple[str, list[dict[str, str]]]] = field(default_factory=list)
    running_polls: int = 0
    queries: list[dict[str, Any]] = field(default_factory=list)
    stopped: list[str] = field(default_factory=list)

    def start_query(self, **kwargs: Any) -> dict[str, str]:
        self.queries.append(kwargs)
        return {"queryId": str(len(self.queries) - 1)}

    def get_query_results(self, *, queryId: str) -> dict[str, Any]:  # noqa: N803 (boto3's name)
        if self.running_polls > 0:
            self.running_polls -= 1
            return {"status": "Running", "results": [], "statistics": {"recordsScanned": 1234.0}}
        text = self.queries[int(queryId)]["queryString"]
        rows = next((rows for needle, rows in self.rules if needle in text), [])
        results = [[{"field": k, "value": v} for k, v in row.items()] for row in rows]
        return {"status": "Complete", "results": results, "statistics": {"recordsScanned": float(len(rows))}}

    def stop_query(self, *, queryId: str) -> dict[str, bool]:  # noqa: N803
        self.stopped.append(queryId)
        return {"success": True}

    def __getattr__(self, name: str) -> Any:
        return getattr(self.logs, name)


class FakeContext:
    function_name = "replay-function"
    function_version = "$LATEST"
    memory_limit_in_mb = 512
    invoked_function_arn = f"arn:aws:lambda:{REGION}:123456789012:function:replay-function"
    aws_request_id = "c0ffee00-0000-4000-8000-000000000002"

    def get_remaining_time_in_millis(self) -> int:
        return 900_000


class FakeLambda:
    """Lambda's Invoke for the replay function: the real handler, run here."""

    def __init__(self, handler: Callable[[dict[str, Any], Any], dict[str, Any]]) -> None:
        self.handler = handler
        self.events: list[dict[str, Any]] = []

    def invoke(self, *, FunctionName: str, InvocationType: str, Payload: bytes) -> dict[str, Any]:  # noqa: N803
        assert (FunctionName, InvocationType) == ("replay-function", "RequestResponse")
        event = json.loads(Payload)
        self.events.append(event)
        return {
            "StatusCode": 200,
            "Payload": io.BytesIO(json.dumps(self.handler(event, FakeContext())).encode()),
        }


@dataclass
class Deployed:
    """The fake stage and a way to run the command against it."""

    clients: dict[str, Any]
    insights: FakeInsights
    lambda_: FakeLambda
    broker: RedisServer

    def run(self, *argv: str) -> tuple[int, str, str]:
        out, err = io.StringIO(), io.StringIO()
        status = main(list(argv), clients=self.client, stdout=out, stderr=err, now=NOW)
        return status, out.getvalue(), err.getvalue()

    def client(self, name: str) -> Any:
        return self.clients[name]

    def keep(self, task_id: str, *, task: str = "app.charge", queue: str = "default") -> str:
        """A kept message in the bucket, as a worker writes it; returns its key."""
        message = {
            "body": json.dumps([[task_id], {}, {}]),
            "content-encoding": "utf-8",
            "content-type": "application/json",
            "headers": {"task": task, "id": task_id, SENT_AT_HEADER: 1.0},
            "properties": {
                "correlation_id": task_id,
                "delivery_tag": "t-" + task_id,
                "delivery_info": {"exchange": "", "routing_key": queue},
            },
        }
        envelope = {
            "v": 1,
            "task_id": task_id,
            "task": task,
            "exchange": "",
            "routing_key": queue,
            "kept_at": 1.0,
            "message": json.dumps(message),
        }
        key = km.message_key(task_id)
        self.clients["s3"].put_object(Bucket=BUCKET, Key=key, Body=json.dumps(envelope).encode())
        return key


def _deploy_stack(cloudformation: Any) -> None:
    template = {
        "Resources": {"Topic": {"Type": "AWS::SNS::Topic"}},
        "Outputs": {key: {"Value": value} for key, value in OUTPUTS.items()},
    }
    cloudformation.create_stack(StackName=STACK, TemplateBody=json.dumps(template))


def _metrics(cloudwatch: Any) -> None:
    values = {
        ("default", qm.WAITING_TASKS): 1520,
        ("default", qm.IN_FLIGHT_TASKS): 8,
        ("default", qm.OLDEST_TASK_AGE): 312,
        ("bulk", qm.WAITING_TASKS): 0,
        ("bulk", qm.IN_FLIGHT_TASKS): 0,
    }
    cloudwatch.put_metric_data(
        Namespace=OUTPUTS["MetricNamespace"],
        MetricData=[
            {
                "MetricName": metric,
                "Dimensions": [{"Name": qm.QUEUE_DIMENSION, "Value": queue}],
                "Timestamp": NOW - timedelta(minutes=1),
                "Value": value,
            }
            for (queue, metric), value in values.items()
        ],
    )
    cloudwatch.put_metric_alarm(
        AlarmName=f"{STACK}-MonitoringOldestTaskDefault-ABC123",
        AlarmDescription="[PAGE] celery-fleet dev: tasks on default wait longer than 300 s. First check: "
        "workers running. Runbook: docs/runbooks.md#oldest-task-late",
        MetricName=qm.OLDEST_TASK_AGE,
        Namespace=OUTPUTS["MetricNamespace"],
        Statistic="Maximum",
        Period=60,
        EvaluationPeriods=1,
        Threshold=300,
        ComparisonOperator="GreaterThanThreshold",
    )
    cloudwatch.set_alarm_state(
        AlarmName=f"{STACK}-MonitoringOldestTaskDefault-ABC123", StateValue="ALARM", StateReason="test"
    )
    cloudwatch.put_metric_alarm(
        AlarmName="SomeoneElses-Alarm",
        MetricName="X",
        Namespace="Other",
        Statistic="Maximum",
        Period=60,
        EvaluationPeriods=1,
        Threshold=1,
        ComparisonOperator="GreaterThanThreshold",
    )
    cloudwatch.set_alarm_state(AlarmName="SomeoneElses-Alarm", StateValue="ALARM", StateReason="test")


def _services(ecs: Any) -> None:
    ecs.create_cluster(clusterName="fleet")
    ecs.register_task_definition(
        family="worker", containerDefinitions=[{"name": "w", "image": "i", "memory": 512}]
    )
    ecs.create_service(
        cluster="fleet", serviceName="default-workers", taskDefinition="worker", desiredCount=3
    )
    ecs.create_service(cluster="fleet", serviceName="bulk-workers", taskDefinition="worker", desiredCount=0)


@pytest.fixture
def deployed(monkeypatch: pytest.MonkeyPatch, redis_server: RedisServer) -> Iterator[Deployed]:
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": REGION,
        "FAILED_MESSAGES_BUCKET": BUCKET,
        "BROKER_URL": redis_server.url,
    }.items():
        monkeypatch.setenv(name, value)
    with mock_aws():
        clients = {
            name: boto3.client(name, region_name=REGION)
            for name in ("cloudformation", "cloudwatch", "ecs", "logs", "s3", "sts")
        }
        clients["s3"].create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": REGION})
        _deploy_stack(clients["cloudformation"])
        _metrics(clients["cloudwatch"])
        _services(clients["ecs"])
        sys.modules.pop("replay.handler", None)
        handler = importlib.import_module("replay.handler")
        insights = FakeInsights(clients["logs"])
        fake_lambda = FakeLambda(handler.handler)
        yield Deployed(
            {**clients, "logs": insights, "lambda": fake_lambda}, insights, fake_lambda, redis_server
        )
        sys.modules.pop("replay.handler", None)
