"""The stage's CloudWatch dashboard: alarms first, then queues, task outcomes, workers, broker, pipeline."""

from __future__ import annotations

from aws_cdk import Aws, Duration, Fn
from aws_cdk import aws_cloudwatch as cloudwatch
from celery_fleet.contract import task_metrics
from constructs import Construct

from infra.config.monitoring import MonitoringConfig
from infra.config.workers import WorkerGroupConfig
from infra.monitoring.broker_alarms import BrokerAlarms
from infra.monitoring.queue_alarms import desired_tasks, running_tasks
from infra.monitoring.worker_alarms import failure_rate
from infra.queue_depth import QueueDepthPublisher
from infra.task_events import TaskEventIngester
from infra.task_events.construct import QUERIES
from infra.workers import WorkerFleet

MINUTE = Duration.minutes(1)
OUTCOMES = tuple(task_metrics.COUNT_BY_EVENT.values())
PERCENTILES = ("p50", "p90", "p99")


def search(namespace: str, dimensions: tuple[str, ...], metric_name: str, statistic: str) -> str:
    """A SEARCH over every series of `metric_name` with exactly `dimensions` (e.g. one per task name)."""
    schema = ",".join([f'"{namespace}"', *dimensions])
    return f"SEARCH('{{{schema}}} MetricName=\"{metric_name}\"', '{statistic}', 60)"


class FleetDashboard(Construct):
    """One dashboard per stage, named `celery-fleet-<stage>-<region>` so a person finds it at 3 a.m.

    Task names are not known at synth, so per-task graphs are SEARCH expressions over the TaskName
    dimension: a new task appears on the dashboard with its first event.

    Attributes:
        dashboard: the CloudWatch dashboard.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        stage: str,
        namespace: str,
        alarms: list[cloudwatch.IAlarm],
        broker: BrokerAlarms,
        fleet: WorkerFleet,
        groups: dict[str, WorkerGroupConfig],
        publisher: QueueDepthPublisher,
        ingester: TaskEventIngester,
        config: MonitoringConfig,
    ) -> None:
        super().__init__(scope, construct_id)
        self.dashboard = cloudwatch.Dashboard(
            self,
            "Dashboard",
            # A physical name, unlike everything else: it is what a person types into the console.
            # Dashboard names are per account across regions, and PutDashboard overwrites, so a
            # redeploy never conflicts with itself.
            dashboard_name=Fn.join("-", ["celery-fleet", stage, Aws.REGION]),
            default_interval=Duration.hours(3),
        )
        queues = [queue for group in groups.values() for queue in group.queues]
        self.dashboard.add_widgets(
            cloudwatch.TextWidget(
                markdown=(
                    f"# celery-fleet {stage}\n"
                    "Every alarm below has a section in **docs/runbooks.md** (its description ends with the "
                    "anchor); **docs/alarms.md** lists them as deployed. Saved Logs Insights queries: "
                    f"`celery-fleet/{stage}/failures-by-task-and-exception`, `task-history-by-id`, "
                    "`slowest-tasks`, `retry-storms`."
                ),
                width=24,
                height=2,
            ),
        )
        # An alarm status widget shows at most 100 alarms.
        for first in range(0, len(alarms), 100):
            shown = alarms[first : first + 100]
            self.dashboard.add_widgets(
                cloudwatch.AlarmStatusWidget(
                    title="Alarms",
                    alarms=shown,
                    width=24,
                    height=2 + len(shown) // 4,
                    sort_by=cloudwatch.AlarmStatusWidgetSortBy.STATE_UPDATED_TIMESTAMP,
                )
            )

        # Queues.
        slo_lines = [
            cloudwatch.HorizontalAnnotation(value=group.oldest_task_slo_s, label=f"SLO {name}")
            for name, group in groups.items()
        ]
        self.dashboard.add_widgets(
            cloudwatch.GraphWidget(
                title="Waiting tasks per queue",
                left=[publisher.metrics.waiting(queue) for queue in queues],
                right=[publisher.metrics.in_flight().with_(label="In flight (all queues)")],
                width=12,
            ),
            cloudwatch.GraphWidget(
                title="Oldest waiting task age per queue (s)",
                left=[publisher.metrics.oldest_age(queue) for queue in queues],
                left_annotations=slo_lines,
                width=12,
            ),
        )

        # Task outcomes.
        self.dashboard.add_widgets(
            cloudwatch.GraphWidget(
                title="Task outcomes per minute (all queues)",
                left=[
                    cloudwatch.MathExpression(
                        expression=f"SUM({search(namespace, ('Queue',), outcome, 'Sum')})",
                        label=outcome,
                        period=MINUTE,
                    )
                    for outcome in OUTCOMES
                ],
                width=12,
            ),
            cloudwatch.GraphWidget(
                title="Failed tasks, % of finished, per worker group (5 minutes)",
                left=[
                    failure_rate(
                        namespace, run, min_tasks=1, label=f"{name} ({', '.join(run)})", id_prefix=f"r{n}"
                    )
                    for n, (name, run) in enumerate((name, group.queues) for name, group in groups.items())
                ],
                left_annotations=[
                    cloudwatch.HorizontalAnnotation(value=config.failure_rate_percent, label="page above")
                ],
                width=12,
            ),
        )
        for metric_name, title in (
            (task_metrics.RUNTIME, "Runtime"),
            (task_metrics.QUEUE_WAIT, "Queue wait"),
        ):
            self.dashboard.add_widgets(
                *(
                    cloudwatch.GraphWidget(
                        title=f"{title} {percentile} per task (s)",
                        left=[
                            cloudwatch.MathExpression(
                                expression=search(namespace, ("TaskName", "Queue"), metric_name, percentile),
                                label="",
                                period=MINUTE,
                            )
                        ],
                        width=8,
                    )
                    for percentile in PERCENTILES
                )
            )

        # The ways tasks fail, most frequent first (the saved query of the same name, top 10).
        self.dashboard.add_widgets(
            cloudwatch.LogQueryWidget(
                title="Top failure fingerprints (task, exception, innermost frame of your code)",
                log_group_names=[ingester.failed_tasks.log_group_name],
                query_string=QUERIES["top-failure-fingerprints"][1].replace("limit 50", "limit 10"),
                view=cloudwatch.LogQueryVisualizationType.TABLE,
                width=24,
                height=6,
            )
        )

        # Workers.
        running_vs_desired: list[cloudwatch.IMetric] = []
        for name in fleet.services:
            running_vs_desired.append(running_tasks(fleet, name).with_(label=f"{name} running"))
            running_vs_desired.append(desired_tasks(fleet, name).with_(label=f"{name} desired"))
        self.dashboard.add_widgets(
            cloudwatch.GraphWidget(
                title="Worker tasks: running vs desired",
                left=running_vs_desired,
                width=8,
            ),
            cloudwatch.GraphWidget(
                title="Worker CPU % (average per group)",
                left=[
                    worker.service.metric_cpu_utilization(period=MINUTE, label=name)
                    for name, worker in fleet.services.items()
                ],
                left_annotations=[
                    cloudwatch.HorizontalAnnotation(value=config.worker_cpu_percent, label="warn")
                ],
                width=8,
            ),
            cloudwatch.GraphWidget(
                title="Worker memory % (fullest task per group)",
                left=[
                    worker.service.metric_memory_utilization(period=MINUTE, statistic="Maximum", label=name)
                    for name, worker in fleet.services.items()
                ],
                left_annotations=[
                    cloudwatch.HorizontalAnnotation(value=config.worker_memory_percent, label="warn")
                ],
                width=8,
            ),
        )

        # Broker, per node.
        def per_node(metric_name: str, statistic: str) -> list[cloudwatch.IMetric]:
            return [
                broker.node_metric(metric_name, node_id, statistic, MINUTE).with_(label=f"node {n:03d}")
                for n, node_id in enumerate(broker.node_ids, start=1)
            ]

        limit = broker.maxclients
        self.dashboard.add_widgets(
            cloudwatch.GraphWidget(
                title="Broker memory, % of usable",
                left=per_node("DatabaseMemoryUsagePercentage", "Maximum"),
                left_annotations=[
                    cloudwatch.HorizontalAnnotation(value=config.broker_memory_warning_percent, label="warn"),
                    cloudwatch.HorizontalAnnotation(value=config.broker_memory_page_percent, label="page"),
                ],
                left_y_axis=cloudwatch.YAxisProps(min=0, max=100),
                width=8,
            ),
            cloudwatch.GraphWidget(
                title="Broker engine CPU %",
                left=per_node("EngineCPUUtilization", "Average"),
                left_annotations=[
                    cloudwatch.HorizontalAnnotation(value=config.broker_cpu_percent, label="warn")
                ],
                width=8,
            ),
            cloudwatch.GraphWidget(
                title=f"Broker connections (maxclients {limit:,})",
                left=per_node("CurrConnections", "Maximum"),
                left_annotations=[
                    cloudwatch.HorizontalAnnotation(
                        value=limit * config.broker_connections_percent // 100, label="warn"
                    )
                ],
                width=8,
            ),
        )
        self.dashboard.add_widgets(
            cloudwatch.GraphWidget(
                title="Broker evictions and authentication failures",
                left=per_node("Evictions", "Sum"),
                right=per_node("AuthenticationFailures", "Sum"),
                width=12,
            ),
            cloudwatch.GraphWidget(
                title="Broker replication lag (s)",
                left=per_node("ReplicationLag", "Maximum"),
                width=12,
            ),
        )

        # Pipelines: the queue-depth publisher and the task-event ingester.
        self.dashboard.add_widgets(
            cloudwatch.GraphWidget(
                title="Queue-depth publisher",
                left=[
                    publisher.function.metric_invocations(period=MINUTE, statistic="Sum"),
                    publisher.function.metric_errors(period=MINUTE, statistic="Sum"),
                ],
                right=[publisher.function.metric_duration(period=MINUTE, statistic="Maximum")],
                width=8,
            ),
            cloudwatch.GraphWidget(
                title="Task-event ingester",
                left=[
                    ingester.function.metric_invocations(period=MINUTE, statistic="Sum"),
                    ingester.function.metric_errors(period=MINUTE, statistic="Sum"),
                    ingester.function.metric_throttles(period=MINUTE, statistic="Sum"),
                ],
                right=[ingester.function.metric_duration(period=MINUTE, statistic="p99")],
                width=8,
            ),
            cloudwatch.GraphWidget(
                title="Task events lost or unreadable",
                left=[
                    ingester.on_failure_queue.metric_approximate_number_of_messages_visible(
                        period=MINUTE, statistic="Maximum", label="On-failure queue"
                    ),
                    cloudwatch.Metric(
                        namespace=namespace,
                        metric_name=task_metrics.MALFORMED_EVENTS,
                        statistic="Sum",
                        period=MINUTE,
                        label="Malformed lines",
                    ),
                    cloudwatch.Metric(
                        namespace=namespace,
                        metric_name=task_metrics.FORGED_EVENTS,
                        statistic="Sum",
                        period=MINUTE,
                        label="Forged lines (no valid signature)",
                    ),
                    cloudwatch.Metric(
                        namespace=namespace,
                        metric_name=task_metrics.FAILURE_RECORDS_DROPPED,
                        statistic="Sum",
                        period=MINUTE,
                        label="Failure records dropped",
                    ),
                ],
                width=8,
            ),
        )
