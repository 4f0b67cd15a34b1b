"""Alarms on the queues: late tasks, backlog nobody consumes, and the publisher that measures them."""

from __future__ import annotations

from collections.abc import Mapping

from aws_cdk import Duration
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_lambda as lambda_
from constructs import Construct

from infra.config.monitoring import MonitoringConfig
from infra.monitoring.alarms import AlarmBook
from infra.monitoring.runbooks import Runbook
from infra.naming import pascal
from infra.queue_depth.metrics import QueueMetrics
from infra.workers import WorkerService


class QueueAlarms(Construct):
    """Per worker group: its oldest waiting task against its SLO, and a backlog with no worker
    running; per stage: the queue-depth publisher going silent or failing.

    One alarm of each per group: each reads one metric per queue of the group (and the backlog alarm
    the group's running tasks), 6 at most for the 5 queues a group may have, within CloudWatch's 10.
    Running task counts come from Container Insights, which the fleet's cluster always enables.

    Attributes:
        oldest_task_late, backlog_without_workers: worker group name -> its alarm.
        metrics_missing, publisher_errors: the publisher's alarms.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        book: AlarmBook,
        metrics: QueueMetrics,
        workers: Mapping[str, WorkerService],
        publisher: lambda_.IFunction,
        config: MonitoringConfig,
    ) -> None:
        super().__init__(scope, construct_id)
        minute = Duration.minutes(1)
        self.oldest_task_late: dict[str, cloudwatch.Alarm] = {}
        self.backlog_without_workers: dict[str, cloudwatch.Alarm] = {}

        for name, worker in workers.items():
            group = worker.config
            listed = ", ".join(group.queues)
            self.oldest_task_late[name] = book.add(
                self,
                f"{pascal(name)}OldestTaskLate",
                metric=metrics.oldest_age_of(group.queues, label=f"Oldest waiting task age, s ({name})"),
                # The group's own promise (workers.groups.NAME.oldest_task_slo_s).
                threshold=group.oldest_task_slo_s,
                comparison=cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
                # Three minutes in a row: one late task in one poll can be a task published
                # with a countdown; a queue that stays late is not.
                evaluation_periods=3,
                # The age has no data point while a queue is empty: nothing waits, nothing is late.
                missing=cloudwatch.TreatMissingData.NOT_BREACHING,
                what=f"a task in queue(s) {listed} (worker group {name!r}) has waited over "
                f"{group.oldest_task_slo_s} s, the group's SLO, for 3 minutes.",
                first_check=f"workers running vs desired for {name!r} and their failure rate on "
                "the dashboard.",
                runbook=Runbook.OLDEST_TASK_LATE,
            )
            minutes = config.backlog_without_workers_minutes
            self.backlog_without_workers[name] = book.add(
                self,
                f"{pascal(name)}BacklogWithoutWorkers",
                metric=metrics.waiting_while_no_worker(
                    group.queues,
                    worker.running_tasks(),
                    label=f"Tasks waiting with no worker running ({name})",
                ),
                threshold=0,
                comparison=cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
                # Scaling from zero has a worker consuming within 3 minutes (tools.scaling_response);
                # this many minutes without one means it did not work.
                evaluation_periods=minutes,
                # No queue data is the publisher's alarm, not this one.
                missing=cloudwatch.TreatMissingData.NOT_BREACHING,
                what=f"tasks have waited in queue(s) {listed} for {minutes} minutes while no "
                f"worker of group {name!r} runs: scaling from zero did not start one, or every "
                "worker crashed.",
                first_check=f"the ECS service of {name!r}: its events and its stopped tasks' reasons.",
                runbook=Runbook.BACKLOG_WITHOUT_WORKERS,
            )

        silent = config.queue_metrics_missing_minutes
        self.metrics_missing = book.add(
            self,
            "MetricsMissing",
            # The publisher writes every queue in each poll: one queue's sample count tells whether it ran.
            metric=metrics.waiting(_first_queue(workers), statistic="SampleCount"),
            threshold=1,
            comparison=cloudwatch.ComparisonOperator.LESS_THAN_THRESHOLD,
            evaluation_periods=silent,
            # Missing is the very signal: no poll published anything.
            missing=cloudwatch.TreatMissingData.BREACHING,
            what=f"the queue-depth publisher has published nothing for {silent} minutes: workers no longer "
            "scale on queue depth, and the queue alarms cannot fire.",
            first_check="the publisher Lambda's errors and logs (broker unreachable? AUTH token? timeout?).",
            runbook=Runbook.QUEUE_METRICS_MISSING,
        )
        self.publisher_errors = book.add(
            self,
            "PublisherErrors",
            metric=publisher.metric_errors(period=minute, statistic="Sum"),
            threshold=0,
            comparison=cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
            # 3 failed polls of the last 5: a failover costs one or two, a broken publisher all of them.
            evaluation_periods=5,
            datapoints_to_alarm=3,
            missing=cloudwatch.TreatMissingData.NOT_BREACHING,
            what="the queue-depth publisher failed in 3 of the last 5 polls; queue metrics are patchy.",
            first_check="the publisher's log group for the exception (connection, AUTH, timeout).",
            runbook=Runbook.QUEUE_DEPTH_PUBLISHER_ERRORS,
        )


def _first_queue(workers: Mapping[str, WorkerService]) -> str:
    return next(iter(workers.values())).config.queues[0]
