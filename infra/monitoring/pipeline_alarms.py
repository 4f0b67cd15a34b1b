"""Alarms on the task-event pipeline: the ingest Lambda, its on-failure queue, malformed and forged lines."""

from __future__ import annotations

from aws_cdk import Duration
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_sqs as sqs
from celery_fleet.contract import task_metrics
from constructs import Construct

from infra.monitoring.alarms import AlarmBook
from infra.monitoring.runbooks import Runbook
from infra.task_events.metrics import TaskMetrics

_GT = cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD
# The Lambda and the queue publish nothing while idle: no data is no failure.
_NOT_BREACHING = cloudwatch.TreatMissingData.NOT_BREACHING
WINDOW = Duration.minutes(5)


class PipelineAlarms(Construct):
    """Warnings only: a broken pipeline blinds the task-outcome alarms but stops no task.

    Lambda retries a failed invocation twice, then parks the batch in the on-failure queue; errors
    and throttles say the pipeline struggles, a message in the queue says events were not counted.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        book: AlarmBook,
        tasks: TaskMetrics,
        ingester: lambda_.IFunction,
        on_failure_queue: sqs.IQueue,
    ) -> None:
        super().__init__(scope, construct_id)
        self.errors = book.add(
            self,
            "IngestErrors",
            metric=ingester.metric_errors(period=WINDOW, statistic="Sum"),
            threshold=0,
            comparison=_GT,
            # Two windows of three: a single CloudWatch Logs hiccup is retried away.
            evaluation_periods=3,
            datapoints_to_alarm=2,
            missing=_NOT_BREACHING,
            what="the task-event ingest Lambda failed in 2 of the last 3 five-minute windows; task metrics "
            "and failed-task records lag or go missing.",
            first_check="the ingest Lambda's log group for the exception.",
            runbook=Runbook.INGEST_ERRORS,
        )
        self.throttles = book.add(
            self,
            "IngestThrottles",
            metric=ingester.metric_throttles(period=WINDOW, statistic="Sum"),
            threshold=0,
            comparison=_GT,
            # Throttled log deliveries are retried by Lambda for hours; 15 minutes of it is a limit, not
            # a blip.
            evaluation_periods=3,
            missing=_NOT_BREACHING,
            what="the task-event ingest Lambda has been throttled for 15 minutes; task metrics arrive late.",
            first_check="the account's Lambda concurrency (ConcurrentExecutions) and other functions "
            "using it.",
            runbook=Runbook.INGEST_THROTTLES,
        )
        self.dead_letters = book.add(
            self,
            "IngestDeadLetters",
            metric=on_failure_queue.metric_approximate_number_of_messages_visible(
                period=WINDOW, statistic="Maximum"
            ),
            # Every message is a batch of task events that was not counted after all retries.
            threshold=0,
            comparison=_GT,
            evaluation_periods=1,
            missing=_NOT_BREACHING,
            what="task-event batches failed every retry and wait in the on-failure queue: their outcomes are "
            "missing from metrics and from the failed-tasks log.",
            first_check="one message of the queue (aws sqs receive-message): its error and request context.",
            runbook=Runbook.INGEST_DEAD_LETTERS,
        )
        self.malformed = book.add(
            self,
            "MalformedEvents",
            metric=tasks.pipeline(task_metrics.MALFORMED_EVENTS, period=WINDOW),
            # Workers and Lambda share one schema: any line the Lambda cannot read is a version mismatch
            # or a bug, and its outcome is not counted.
            threshold=0,
            comparison=_GT,
            evaluation_periods=1,
            missing=_NOT_BREACHING,
            what="the ingest Lambda received task-event lines it could not read; those outcomes are not "
            "counted.",
            first_check="the ingest Lambda's log for 'malformed task event' samples, and the workers' "
            "celery_fleet version.",
            runbook=Runbook.MALFORMED_EVENTS,
        )
        self.forged = book.add(
            self,
            "ForgedEvents",
            metric=tasks.pipeline(task_metrics.FORGED_EVENTS, period=WINDOW),
            # Workers sign every line they write: any unsigned line is task output posing as an event
            # (a task printing or raising user data) or a worker without the stage's key. Neither is
            # normal, and the second means real outcomes go uncounted.
            threshold=0,
            comparison=_GT,
            evaluation_periods=1,
            missing=_NOT_BREACHING,
            what="the ingest Lambda received lines that look like task events but carry no valid signature; "
            "they were not counted. Either task output imitates event lines, or workers sign with a key "
            "the ingester does not hold.",
            first_check="the ingest Lambda's log for 'forged task event' samples: their log stream names "
            "the worker that wrote them.",
            runbook=Runbook.FORGED_EVENTS,
        )
