"""The stage's CloudWatch dashboard: alarms first, then queues, task outcomes, workers, broker, pipeline."""

from __future__ import annotations

from collections.abc import Mapping

from aws_cdk import Aws, Duration, Fn
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_sqs as sqs
from celery_fleet.contract import task_metrics
from constructs import Construct

from infra.broker.metrics import (
    AUTHENTICATION_FAILURES,
    CONNECTIONS,
    ENGINE_CPU,
    EVICTIONS,
    MEMORY,
    REPLICATION_LAG,
    BrokerMetrics,
)
from infra.config.monitoring import MonitoringConfig
from infra.queue_depth.metrics import QueueMetrics
from infra.task_events.construct import QUERIES
from infra.task_events.metrics import OUTCOMES, TaskMetrics
from infra.workers import WorkerService

MINUTE = Duration.minutes(1)
PERCENTILES = ("p50", "p90", "p99")


class FleetDashboard(Construct):
    """One dashboard per stage, named `celery-fleet-<stage>-<region>` so a person finds it at 3 a.m.

    Task names are not known at synth, so per-task graphs are SEARCH expressions over the TaskName
    dimension: a new task appears on the dashboard with its first event.

    Every graph reads a metric object: the broker's, the queues', the tasks', the worker services',
    the two Lambdas' and the on-failure queue's.

    Attributes:
        dashboard: the CloudWatch dashboard.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        stage: str,
        alarms: list[cloudwatch.IAlarm],
        broker: BrokerMetrics,
        queues: QueueMetrics,
        tasks: TaskMetrics,
        workers: Mapping[str, WorkerService],
        publisher: lambda_.IFunction,
        ingester: lambda_.IFunction,
        on_failure_queue: sqs.IQueue,
        failed_tasks: logs.ILogGroup,
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
        groups = {name: worker.config for name, worker in workers.items()}
        all_queues = [queue for group in groups.values() for queue in group.queues]
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
                left=[queues.waiting(queue) for queue in all_queues],
                right=[queues.in_flight().with_(label="In flight (all queues)")],
                width=12,
            ),
            cloudwatch.GraphWidget(
                title="Oldest waiting task age per queue (s)",
                left=[queues.oldest_age(queue) for queue in all_queues],
                left_annotations=slo_lines,
                width=12,
            ),
        )

        # Task outcomes.
        self.dashboard.add_widgets(
            cloudwatch.GraphWidget(
                title="Task outcomes per minute (all queues)",
                left=[tasks.outcome_all_queues(outcome) for outcome in OUTCOMES],
                width=12,
            ),
            cloudwatch.GraphWidget(
                title="Failed tasks, % of finished, per worker group (5 minutes)",
                left=[
                    tasks.failure_rate(
                        run, min_tasks=1, label=f"{name} ({', '.join(run)})", id_prefix=f"r{n}"
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
                        left=[tasks.duration_per_task(metric_name, percentile)],
                        width=8,
                    )
                    for percentile in PERCENTILES
                )
            )

        # The ways tasks fail, most frequent first (the saved query of the same name, top 10).
        self.dashboard.add_widgets(
            cloudwatch.LogQueryWidget(
                title="Top failure fingerprints (task, exception, innermost frame of your code)",
                log_group_names=[failed_tasks.log_group_name],
                query_string=QUERIES["top-failure-fingerprints"][1].replace("limit 50", "limit 10"),
                view=cloudwatch.LogQueryVisualizationType.TABLE,
                width=24,
                height=6,
            )
        )

        # Workers.
        running_vs_desired: list[cloudwatch.IMetric] = []
        for name, worker in workers.items():
            running_vs_desired.append(worker.running_tasks().with_(label=f"{name} running"))
            running_vs_desired.append(worker.desired_tasks().with_(label=f"{name} desired"))
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
                    for name, worker in workers.items()
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
                    for name, worker in workers.items()
                ],
                left_annotations=[
                    cloudwatch.HorizontalAnnotation(value=config.worker_memory_percent, label="warn")
                ],
                width=8,
            ),
        )

        # Broker, per node.
        limit = broker.maxclients
        self.dashboard.add_widgets(
            cloudwatch.GraphWidget(
                title="Broker memory, % of usable",
                left=broker.per_node(MEMORY),
                left_annotations=[
                    cloudwatch.HorizontalAnnotation(value=config.broker_memory_warning_percent, label="warn"),
                    cloudwatch.HorizontalAnnotation(value=config.broker_memory_page_percent, label="page"),
                ],
                left_y_axis=cloudwatch.YAxisProps(min=0, max=100),
                width=8,
            ),
            cloudwatch.GraphWidget(
                title="Broker engine CPU %",
                left=broker.per_node(ENGINE_CPU),
                left_annotations=[
                    cloudwatch.HorizontalAnnotation(value=config.broker_cpu_percent, label="warn")
                ],
                width=8,
            ),
            cloudwatch.GraphWidget(
                title=f"Broker connections (maxclients {limit:,})",
                left=broker.per_node(CONNECTIONS),
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
                left=broker.per_node(EVICTIONS),
                right=broker.per_node(AUTHENTICATION_FAILURES),
                width=12,
            ),
            cloudwatch.GraphWidget(
                title="Broker replication lag (s)",
                left=broker.per_node(REPLICATION_LAG),
                width=12,
            ),
        )

        # Pipelines: the queue-depth publisher and the task-event ingester.
        self.dashboard.add_widgets(
            cloudwatch.GraphWidget(
                title="Queue-depth publisher",
                left=[
                    publisher.metric_invocations(period=MINUTE, statistic="Sum"),
                    publisher.metric_errors(period=MINUTE, statistic="Sum"),
                ],
                right=[publisher.metric_duration(period=MINUTE, statistic="Maximum")],
                width=8,
            ),
            cloudwatch.GraphWidget(
                title="Task-event ingester",
                left=[
                    ingester.metric_invocations(period=MINUTE, statistic="Sum"),
                    ingester.metric_errors(period=MINUTE, statistic="Sum"),
                    ingester.metric_throttles(period=MINUTE, statistic="Sum"),
                ],
                right=[ingester.metric_duration(period=MINUTE, statistic="p99")],
                width=8,
            ),
            cloudwatch.GraphWidget(
                title="Task events lost or unreadable",
                left=[
                    on_failure_queue.metric_approximate_number_of_messages_visible(
                        period=MINUTE, statistic="Maximum", label="On-failure queue"
                    ),
                    tasks.pipeline(task_metrics.MALFORMED_EVENTS, period=MINUTE, label="Malformed lines"),
                    tasks.pipeline(
                        task_metrics.FORGED_EVENTS, period=MINUTE, label="Forged lines (no valid signature)"
                    ),
                    tasks.pipeline(
                        task_metrics.FAILURE_RECORDS_DROPPED, period=MINUTE, label="Failure records dropped"
                    ),
                ],
                width=8,
            ),
        )
