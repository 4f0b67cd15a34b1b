"""Alarms on the workers: task outcomes per group (from task events) and the Fargate services."""

from __future__ import annotations

from collections.abc import Mapping

from aws_cdk import Duration
from aws_cdk import aws_cloudwatch as cloudwatch
from celery_fleet.contract import task_metrics
from constructs import Construct

from infra.config.monitoring import MonitoringConfig
from infra.monitoring.alarms import AlarmBook
from infra.monitoring.runbooks import Runbook
from infra.naming import pascal
from infra.task_events.metrics import TaskMetrics
from infra.workers import WorkerService

_GT = cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD
# Task metrics exist only for outcomes that happened: no data is no failure, no retry, no kill.
_NOT_BREACHING = cloudwatch.TreatMissingData.NOT_BREACHING
WINDOW = Duration.minutes(5)


class WorkerAlarms(Construct):
    """Per worker group: failure rate (page), retry surge, time-limit kills, lost pool processes,
    CPU, memory, and tasks that do not start (warnings).

    Outcome alarms read the task metrics of each of the group's queues (the Queue-only dimension set)
    and add them up in one alarm: the failure rate reads two per queue, 10 for the 5 queues a group
    may have, CloudWatch's most.

    Attributes:
        failure_rate: worker group name -> its failure-rate alarm.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        book: AlarmBook,
        tasks: TaskMetrics,
        workers: Mapping[str, WorkerService],
        config: MonitoringConfig,
    ) -> None:
        super().__init__(scope, construct_id)
        self.failure_rate: dict[str, cloudwatch.Alarm] = {}
        for name, worker in workers.items():
            self._outcomes(book, tasks, name=name, queues=worker.config.queues, config=config)
            self._service(book, worker, config)

    def _outcomes(
        self,
        book: AlarmBook,
        tasks: TaskMetrics,
        *,
        name: str,
        queues: list[str],
        config: MonitoringConfig,
    ) -> None:
        prefix, listed = pascal(name), ", ".join(queues)
        rate = config.failure_rate_percent
        self.failure_rate[name] = book.add(
            self,
            f"{prefix}FailureRate",
            metric=tasks.failure_rate(
                queues,
                min_tasks=config.failure_rate_min_tasks,
                label=f"Failed tasks, % ({name})",
            ),
            threshold=rate,
            comparison=_GT,
            # Two 5-minute windows: a burst of failures from one bad input passes, a broken
            # dependency or deploy does not.
            evaluation_periods=2,
            missing=_NOT_BREACHING,
            what=f"over {rate:g} % of the tasks finished in queue(s) {listed} (worker group {name!r}) "
            f"failed, 10 minutes running (counted from {config.failure_rate_min_tasks} tasks per 5 "
            "minutes).",
            first_check="the saved Logs Insights query failures-by-task-and-exception: one task? one "
            "exception?",
            runbook=Runbook.FAILURE_RATE_HIGH,
        )
        surge = config.retry_surge_per_5min
        book.add(
            self,
            f"{prefix}RetrySurge",
            metric=tasks.outcome_total(task_metrics.RETRIED, queues, label=f"Retries per 5 minutes ({name})"),
            # Retries with back-off are normal; this many in 5 minutes means something they depend on is down.
            threshold=surge,
            comparison=_GT,
            evaluation_periods=1,
            missing=_NOT_BREACHING,
            what=f"tasks in queue(s) {listed} (worker group {name!r}) retried over {surge} times in 5 "
            "minutes.",
            first_check="the saved Logs Insights query retry-storms: which task, which exception.",
            runbook=Runbook.RETRY_SURGE,
        )
        book.add(
            self,
            f"{prefix}TimeLimitExceeded",
            metric=tasks.outcome_total(
                task_metrics.TIME_LIMIT_EXCEEDED, queues, label=f"Tasks killed by their time limit ({name})"
            ),
            # A task killed at its limit lost its work and may leave partial side effects: any one counts.
            threshold=0,
            comparison=_GT,
            evaluation_periods=1,
            missing=_NOT_BREACHING,
            what=f"tasks in queue(s) {listed} (worker group {name!r}) were stopped by their time limit.",
            first_check="the saved Logs Insights query slowest-tasks: which task runs long, since when.",
            runbook=Runbook.TIME_LIMIT_EXCEEDED,
        )
        book.add(
            self,
            f"{prefix}WorkerLost",
            metric=tasks.outcome_total(
                task_metrics.WORKER_LOST, queues, label=f"Pool processes lost mid-task ({name})"
            ),
            # A pool process killed under a task (OOM killer, crash): never part of normal operation.
            threshold=0,
            comparison=_GT,
            evaluation_periods=1,
            missing=_NOT_BREACHING,
            what=f"worker pool processes of group {name!r} died while running tasks from queue(s) {listed} "
            "(OOM kill or crash); those tasks were requeued or failed.",
            first_check="the group's memory on the dashboard and max_memory_per_child_mib.",
            runbook=Runbook.WORKER_LOST,
        )

    def _service(self, book: AlarmBook, worker: WorkerService, config: MonitoringConfig) -> None:
        name = worker.name
        prefix = pascal(name)
        service = worker.service
        cpu = config.worker_cpu_percent
        book.add(
            self,
            f"{prefix}CpuHigh",
            metric=service.metric_cpu_utilization(period=WINDOW, statistic="Average"),
            threshold=cpu,
            comparison=_GT,
            # 15 minutes: busy workers are the point; saturated for a quarter of an hour, they are too few
            # or too small.
            evaluation_periods=3,
            # A group scaled to zero reports nothing.
            missing=_NOT_BREACHING,
            what=f"worker group {name!r} has used over {cpu} % of its CPU for 15 minutes.",
            first_check=f"whether {name!r} runs at max_tasks, and the runtime percentiles on the dashboard.",
            runbook=Runbook.WORKER_CPU_HIGH,
        )
        memory = config.worker_memory_percent
        book.add(
            self,
            f"{prefix}MemoryHigh",
            # Maximum: the fullest task is the one the OOM killer takes.
            metric=service.metric_memory_utilization(period=Duration.minutes(1), statistic="Maximum"),
            threshold=memory,
            comparison=_GT,
            evaluation_periods=5,
            missing=_NOT_BREACHING,
            what=f"a worker task of group {name!r} has used over {memory} % of its memory for 5 minutes; at "
            "100 % the kernel kills a pool process or the whole task.",
            first_check="max_memory_per_child_mib and concurrency against memory_mib for the group.",
            runbook=Runbook.WORKER_MEMORY_HIGH,
        )
        minutes = config.tasks_not_starting_minutes
        book.add(
            self,
            f"{prefix}TasksNotStarting",
            metric=cloudwatch.MathExpression(
                expression="desired - FILL(running, 0)",
                using_metrics={"desired": worker.desired_tasks(), "running": worker.running_tasks()},
                label=f"Worker tasks desired but not running ({name})",
                period=Duration.minutes(1),
            ),
            # Any shortfall, every minute for this long: a scale-out jump is absorbed within 1-2
            # minutes, while a task that cannot start or keeps crashing leaves a gap that stays.
            threshold=0,
            comparison=_GT,
            evaluation_periods=minutes,
            missing=_NOT_BREACHING,
            what=f"worker group {name!r} has run fewer tasks than desired for {minutes} minutes: tasks fail "
            "to start (image, secret, capacity) or crash soon after.",
            first_check=f"the stopped tasks of {name!r}: aws ecs list-tasks --desired-status STOPPED, then "
            "their stoppedReason.",
            runbook=Runbook.WORKER_TASKS_NOT_STARTING,
        )
