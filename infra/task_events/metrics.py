"""The task metrics the ingest Lambda writes, as CloudWatch metric objects for alarms and dashboards.

Metric names and dimension sets come from `celery_fleet.contract.task_metrics`, the module the
Lambda writes them with: one definition for both sides, as `infra.queue_depth.metrics` is for the
queue metrics.
"""

from __future__ import annotations

from aws_cdk import Duration
from aws_cdk import aws_cloudwatch as cloudwatch
from celery_fleet.contract import task_metrics

from infra.metric_math import sum_of

MINUTE = Duration.minutes(1)
# Outcome alarms count over 5 minutes: one task's outcome a minute is no trend.
WINDOW = Duration.minutes(5)
# (TaskName, Queue) for per-task graphs; (Queue) alone for alarms, which know the queues but not the
# task names.
BY_TASK_AND_QUEUE, BY_QUEUE = task_metrics.DIMENSION_SETS
OUTCOMES = tuple(task_metrics.COUNT_BY_EVENT.values())
DURATIONS = (task_metrics.RUNTIME, task_metrics.QUEUE_WAIT)


class TaskMetrics:
    """The task metrics of one stage's namespace: outcomes and durations per queue and per task, and
    the pipeline's own counts (malformed, forged, dropped)."""

    def __init__(self, namespace: str) -> None:
        self.namespace = namespace

    def outcome(self, name: str, queue: str, *, period: Duration = WINDOW) -> cloudwatch.Metric:
        """Tasks of `queue` with outcome `name` (Succeeded, Failed, ...: `OUTCOMES`), summed per period."""
        _check(name, OUTCOMES, "task outcome")
        [queue_dimension] = BY_QUEUE
        return cloudwatch.Metric(
            namespace=self.namespace,
            metric_name=name,
            dimensions_map={queue_dimension: queue},
            statistic="Sum",
            period=period,
        )

    def outcome_total(self, name: str, queues: list[str], *, label: str) -> cloudwatch.IMetric:
        """Tasks with outcome `name` over all of `queues`, per 5 minutes (a queue without any reads 0)."""
        return sum_of([self.outcome(name, queue) for queue in queues], label=label, period=WINDOW)

    def failure_rate(
        self, queues: list[str], *, min_tasks: int, label: str, id_prefix: str = ""
    ) -> cloudwatch.MathExpression:
        """Failed / (Succeeded + Failed) in percent over `queues` per 5 minutes; 0 below `min_tasks`
        finished tasks.

        `id_prefix` keeps metric IDs apart when several rates share one graph.
        """
        failed = {
            f"{id_prefix}f{i}": self.outcome(task_metrics.FAILED, queue) for i, queue in enumerate(queues)
        }
        succeeded = {
            f"{id_prefix}s{i}": self.outcome(task_metrics.SUCCEEDED, queue) for i, queue in enumerate(queues)
        }
        f = " + ".join(f"FILL({key}, 0)" for key in failed)
        s = " + ".join(f"FILL({key}, 0)" for key in succeeded)
        return cloudwatch.MathExpression(
            expression=f"IF(({s}) + ({f}) >= {min_tasks}, 100 * ({f}) / (({s}) + ({f})), 0)",
            using_metrics={**failed, **succeeded},
            label=label,
            period=WINDOW,
        )

    def outcome_all_queues(self, name: str) -> cloudwatch.MathExpression:
        """Tasks with outcome `name` per minute, summed over every queue that has any (a graph line)."""
        _check(name, OUTCOMES, "task outcome")
        return cloudwatch.MathExpression(
            expression=f"SUM({self.search(name, 'Sum', BY_QUEUE)})", label=name, period=MINUTE
        )

    def duration_per_task(self, name: str, statistic: str) -> cloudwatch.MathExpression:
        """`statistic` (p50, Average, ...) of Runtime or QueueWait per minute, one line per task name and
        queue: task names are not known at synth, so this searches and finds each with its first event."""
        _check(name, DURATIONS, "task duration")
        return cloudwatch.MathExpression(
            expression=self.search(name, statistic, BY_TASK_AND_QUEUE), label="", period=MINUTE
        )

    def pipeline(
        self, name: str, *, period: Duration = WINDOW, label: str | None = None
    ) -> cloudwatch.Metric:
        """One of the ingester's own counts (MalformedEvents, ForgedEvents, ...), published without
        dimensions at every invocation, summed per period."""
        _check(name, task_metrics.PIPELINE_COUNTS, "pipeline count")
        return cloudwatch.Metric(
            namespace=self.namespace, metric_name=name, statistic="Sum", period=period, label=label
        )

    def search(self, name: str, statistic: str, dimensions: tuple[str, ...]) -> str:
        """A SEARCH over every series of `name` with exactly `dimensions`, one of the contract's
        DIMENSION_SETS, per minute."""
        _check(dimensions, task_metrics.DIMENSION_SETS, "dimension set")
        schema = ",".join([f'"{self.namespace}"', *dimensions])
        return f"SEARCH('{{{schema}}} MetricName=\"{name}\"', '{statistic}', 60)"


def _check(value: object, allowed: tuple[object, ...], what: str) -> None:
    if value not in allowed:
        raise ValueError(f"{value!r} is not a {what} the ingest Lambda publishes; expected one of {allowed}")
