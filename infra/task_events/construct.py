"""The ingest Lambda, its subscription to the worker logs, the failed-tasks log and saved queries."""

from __future__ import annotations

from aws_cdk import Duration, RemovalPolicy
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_lambda_destinations as destinations
from aws_cdk import aws_logs as logs
from aws_cdk import aws_logs_destinations as log_destinations
from aws_cdk import aws_secretsmanager as secretsmanager
from aws_cdk import aws_sqs as sqs
from celery_fleet.contract import task_events_env as env
from celery_fleet.contract.task_events import SUBSCRIPTION_FILTER_PATTERN
from constructs import Construct

from infra.functions import ARCHITECTURE, RUNTIME, function_log_group, powertools_layer
from infra.lambda_code import lambda_package
from infra.logs import retention
from infra.nag import acknowledge
from infra.naming import pascal
from infra.task_events.metrics import TaskMetrics

# Logs Insights queries for the person following up failures (docs/task-events.md explains each).
# Worker log lines are JSON: Logs Insights discovers their fields (task_id, event, task, ...) itself.
_EVENT_LINES = 'filter celery_fleet = "task_event"'
QUERIES = {
    # One row per way of failing: how often, since and until when, and a task id to look at first.
    # Counting distinct keys drops a record a retried invocation wrote twice (`dedup` cannot precede
    # `stats`: only `limit` may follow it).
    "top-failure-fingerprints": (
        "failed",
        "stats count_distinct(key) as failures, min(@timestamp) as first_seen, max(@timestamp) as last_seen,"
        " latest(task_id) as example_task_id by fingerprint, task, exc_type, exc_frame\n"
        "| sort failures desc\n| limit 50",
    ),
    "failures-by-task-and-exception": (
        "failed",
        "stats count(*) as failures by task, exc_type, queue | sort failures desc",
    ),
    "task-history-by-id": (
        "workers",
        f'{_EVENT_LINES} and task_id = "PASTE-TASK-ID"\n'
        "| fields @timestamp, event, task, queue, worker, retries, runtime_s, queue_wait_s, exc_type,"
        " exc_message\n"
        "| sort @timestamp asc",
    ),
    "slowest-tasks": (
        "workers",
        f'{_EVENT_LINES} and event = "succeeded"\n'
        "| fields @timestamp, task, queue, runtime_s, queue_wait_s, task_id, worker\n"
        "| sort runtime_s desc\n| limit 100",
    ),
    "retry-storms": (
        "workers",
        f'{_EVENT_LINES} and event = "retried"\n'
        "| stats count(*) as retries by bin(5m) as window, task, exc_type\n"
        "| sort retries desc\n| limit 50",
    ),
}


class TaskEventIngester(Construct):
    """Turns the workers' task-event lines into CloudWatch metrics and failed-task records.

    A subscription filter on the worker log group sends only event lines to the Lambda, which
    checks each line's MAC under `event_key` (current and previous values), aggregates the signed
    ones per batch into EMF metrics (Queue dimension: `queues` only) and writes every failure (with
    arguments, traceback and fingerprint) to its own log group. An invocation that fails after
    Lambda's two retries lands in the on-failure queue, which monitoring alarms on. Nothing here
    holds a task list in memory.

    Attributes:
        function: the ingest Lambda.
        failed_tasks: the failed-tasks log group.
        on_failure_queue: invocations that could not be processed.
        queries: saved Logs Insights queries, by name.
        metrics: the task metrics the function writes (outcomes, durations, its own counts), for
            alarms and dashboards.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        stage: str,
        worker_logs: logs.ILogGroup,
        queues: list[str],
        event_key: secretsmanager.ISecret,
        namespace: str,
        failed_tasks_retention_days: int,
        log_retention_days: int,
    ) -> None:
        super().__init__(scope, construct_id)
        self.metrics = TaskMetrics(namespace)
        self.failed_tasks = logs.LogGroup(
            self,
            "FailedTasks",
            retention=retention(failed_tasks_retention_days),
            removal_policy=RemovalPolicy.RETAIN,
        )
        self.on_failure_queue = sqs.Queue(
            self,
            "OnFailure",
            encryption=sqs.QueueEncryption.SQS_MANAGED,
            enforce_ssl=True,
            retention_period=Duration.days(14),
        )
        acknowledge(
            self.on_failure_queue,
            "AwsSolutions-SQS3",
            "This queue is itself the dead-letter destination of the ingest Lambda; nothing consumes it "
            "automatically; an alarm notifies the stage's topic when it is not empty.",
        )

        self.function = lambda_.Function(
            self,
            "Function",
            description="celery-fleet: task events from worker logs into metrics and failed-task records",
            runtime=RUNTIME,
            architecture=ARCHITECTURE,
            handler="task_events.handler.handler",
            code=lambda_package("task_events"),
            layers=[powertools_layer(self, "Powertools")],
            memory_size=512,
            timeout=Duration.seconds(60),
            retry_attempts=2,
            on_failure=destinations.SqsDestination(self.on_failure_queue),
            log_group=function_log_group(self, "Logs", retention_days=log_retention_days),
            environment={
                env.METRIC_NAMESPACE: namespace,
                env.FAILED_TASKS_LOG_GROUP: self.failed_tasks.log_group_name,
                # The only values of the Queue dimension: any other routing key folds into one.
                env.QUEUES: ",".join(queues),
                env.EVENT_KEY_SECRET_ARN: event_key.secret_arn,
                env.POWERTOOLS_SERVICE_NAME: "task-event-ingester",
                env.POWERTOOLS_METRICS_NAMESPACE: namespace,
            },
        )
        self.failed_tasks.grant_write(self.function)
        event_key.grant_read(self.function)

        self.subscription = logs.SubscriptionFilter(
            self,
            "WorkerLogs",
            log_group=worker_logs,
            destination=log_destinations.LambdaDestination(self.function),
            filter_pattern=logs.FilterPattern.literal(SUBSCRIPTION_FILTER_PATTERN),
        )

        groups = {"failed": self.failed_tasks, "workers": worker_logs}
        # The L1 resource: the L2 QueryString rebuilds a query from parts in its own clause order.
        self.queries = {
            name: logs.CfnQueryDefinition(
                self,
                pascal(name) + "Query",
                name=f"celery-fleet/{stage}/{name}",
                query_string=query,
                log_group_names=[groups[group].log_group_name],
            )
            for name, (group, query) in QUERIES.items()
        }

        role = self.function.role
        assert role is not None
        acknowledge(
            role,
            "AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole]",
            "AWS's managed policy for writing the function's own logs.",
        )
