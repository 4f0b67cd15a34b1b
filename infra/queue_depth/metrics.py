"""The queue metrics the publisher writes, as CloudWatch metric objects for scaling, alarms, dashboards.

Names, dimensions and namespace come from `celery_fleet.contract.queue_metrics`, the module the
publisher Lambda writes them with: one definition for both sides.
"""

from __future__ import annotations

from aws_cdk import Duration
from aws_cdk import aws_cloudwatch as cloudwatch
from celery_fleet.contract import queue_metrics

from infra.metric_math import max_of

MINUTE = Duration.minutes(1)


class QueueMetrics:
    """The queue metrics of one stage's namespace, per minute."""

    def __init__(self, namespace: str) -> None:
        self.namespace = namespace

    def waiting(self, queue: str, *, statistic: str = "Maximum") -> cloudwatch.Metric:
        """Tasks waiting in `queue` (its list plus priority siblings); 0 when empty."""
        return self._metric(queue_metrics.WAITING_TASKS, queue, statistic=statistic)

    def oldest_age(self, queue: str) -> cloudwatch.Metric:
        """Age in seconds of the oldest waiting task of `queue`; no data when empty or unstamped."""
        return self._metric(queue_metrics.OLDEST_TASK_AGE, queue)

    def oldest_age_of(self, queues: list[str], *, label: str) -> cloudwatch.IMetric:
        """Age in seconds of the oldest task waiting in any of `queues` (the highest of their ages)."""
        return max_of([self.oldest_age(queue) for queue in queues], label=label, period=MINUTE)

    def in_flight(self, queue: str | None = None) -> cloudwatch.Metric:
        """Tasks delivered and not yet acknowledged: of `queue`, or broker-wide when None."""
        return self._metric(queue_metrics.IN_FLIGHT_TASKS, queue)

    def group_waiting(self, group: str) -> cloudwatch.Metric:
        """Tasks waiting in all of a worker group's queues (the publisher's per-group sum)."""
        return self._metric(queue_metrics.WAITING_TASKS, group, dimension=queue_metrics.GROUP_DIMENSION)

    def group_in_flight(self, group: str) -> cloudwatch.Metric:
        """Tasks in flight from all of a worker group's queues (the publisher's per-group sum)."""
        return self._metric(queue_metrics.IN_FLIGHT_TASKS, group, dimension=queue_metrics.GROUP_DIMENSION)

    def group_running(self, group: str) -> cloudwatch.Metric:
        """Worker tasks running in a group's service, as the publisher read them from ECS at each poll."""
        return self._metric(queue_metrics.RUNNING_WORKERS, group, dimension=queue_metrics.GROUP_DIMENSION)

    def group_desired(self, group: str) -> cloudwatch.Metric:
        """Worker tasks ECS is asked to run in a group's service (starting ones included), per poll."""
        return self._metric(queue_metrics.DESIRED_WORKERS, group, dimension=queue_metrics.GROUP_DIMENSION)

    def waiting_while_no_worker(
        self, queues: list[str], running: cloudwatch.IMetric, *, label: str
    ) -> cloudwatch.MathExpression:
        """Tasks waiting in `queues` in a minute when `running` (worker tasks) is 0, else 0.

        Container Insights may publish nothing for a service with no task: FILL reads that as none.
        """
        waiting = {f"w{i}": self.waiting(queue) for i, queue in enumerate(queues)}
        return cloudwatch.MathExpression(
            expression=f"IF(FILL(running, 0) < 1, {' + '.join(waiting)}, 0)",
            using_metrics={**waiting, "running": running},
            label=label,
            period=MINUTE,
        )

    def group_waiting_while_none_asked_for(
        self, group: str, *, period: Duration, label: str
    ) -> cloudwatch.MathExpression:
        """Tasks waiting in a group's queues in a `period` when its service neither runs nor is asked
        to run a worker (the publisher's own counts, published at every poll, 0 included), else 0.

        No FILL: a poll that could not read ECS leaves the period without a value, which scales
        nothing, where a filled 0 would read as "no worker" and could set a starting fleet to fewer.
        """
        return cloudwatch.MathExpression(
            expression="IF(desired + running < 1, w, 0)",
            using_metrics={
                "w": self.group_waiting(group).with_(period=period),
                "desired": self.group_desired(group).with_(period=period),
                "running": self.group_running(group).with_(period=period),
            },
            label=label,
            period=period,
        )

    def _metric(
        self,
        name: str,
        queue: str | None,
        *,
        statistic: str = "Maximum",
        dimension: str = queue_metrics.QUEUE_DIMENSION,
    ) -> cloudwatch.Metric:
        return cloudwatch.Metric(
            namespace=self.namespace,
            metric_name=name,
            dimensions_map={dimension: queue} if queue is not None else None,
            statistic=statistic,
            period=MINUTE,
        )
