"""Scaling a worker service on its queues' backlog: out from zero, proportional, in only when idle.

Three pieces, each acting on one signal from the queue-depth publisher:

1. From zero. An alarm on "tasks waiting while no worker task runs" (1 datapoint of 1 minute) sets
   the service to 1, 2 or 4 workers by backlog (exact capacity: re-firing never adds more). Target
   tracking alone cannot do this: backlog per running task has no value while none runs.
2. Proportional. Target tracking on backlog per running task (waiting tasks of the group's queues
   divided by RunningTaskCount, metric math through the L1 policy since the L2 accepts no math)
   keeps about `backlog_per_task` waiting tasks per worker task. It only scales out: shrinking
   while work remains would stop busy workers for nothing.
3. In when idle. An alarm on the group's own queues, waiting plus in flight (per-queue counts from
   the publisher), at 0 for `scale_in_quiet_minutes` consecutive minutes sets the service to
   `min_tasks`. Stopped workers would requeue anything still running (soft shutdown, celery_fleet),
   but with nothing in flight there is nothing to requeue.

Missing data never scales: a publisher that cannot reach the broker leaves the fleet as it is.
Response: the publisher polls each minute, the metric lands within about a minute, the from-zero
alarm fires on its first breaching datapoint, and Fargate starts a task in 30-90 s: the first worker
consumes about 2-4 minutes after the first task is queued (about a minute less with high-resolution
metrics).
"""

from __future__ import annotations

from aws_cdk import Duration
from aws_cdk import aws_applicationautoscaling as appscaling
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as cw_actions
from aws_cdk import aws_ecs as ecs
from constructs import Construct

from infra.config.workers import WorkerGroupConfig
from infra.queue_depth.metrics import MINUTE, QueueMetrics


class BacklogScaling(Construct):
    """Application Auto Scaling of one worker service on its queues' depth (see module docstring).

    Attributes:
        target: the scalable target (desired count between min_tasks and max_tasks).
        scale_out_from_zero_alarm, idle_alarm: the alarms that drive the step policies.
        backlog_policy: the target-tracking policy (L1: the L2 takes no metric math).
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        service: ecs.FargateService,
        running_tasks: cloudwatch.Metric,
        group_name: str,
        config: WorkerGroupConfig,
        queue_metrics: QueueMetrics,
    ) -> None:
        super().__init__(scope, construct_id)
        # Built by hand rather than with service.auto_scale_task_count(): the step actions below need
        # the ScalableTarget itself, which ScalableTaskCount keeps private.
        self.target = appscaling.ScalableTarget(
            self,
            "Target",
            service_namespace=appscaling.ServiceNamespace.ECS,
            resource_id=f"service/{service.cluster.cluster_name}/{service.service_name}",
            scalable_dimension="ecs:service:DesiredCount",
            min_capacity=config.min_tasks,
            max_capacity=config.max_tasks,
        )
        self.target.node.add_dependency(service)

        # 1. From zero. Exact capacity, not a change: the alarm stays in ALARM until a worker shows in
        # Container Insights (30-90 s after start), and re-firing must not add more workers each time.
        self.scale_out_from_zero_alarm = cloudwatch.Alarm(
            self,
            "FromZeroAlarm",
            alarm_description=(
                f"Scaling signal, not a page: tasks wait in the queues of worker group {group_name!r} "
                "while none of its workers runs. Starts workers; target tracking takes over once they "
                "run. Runbook: docs/runbooks.md#scaling-out-from-zero"
            ),
            metric=queue_metrics.waiting_while_no_worker(
                config.queues, running_tasks, label="Tasks waiting with no worker running"
            ),
            threshold=0,
            comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
            evaluation_periods=1,
            # No queue data: do not scale (the publisher alarm reports it).
            treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
        )
        from_zero = appscaling.StepScalingAction(
            self,
            "FromZero",
            scaling_target=self.target,
            adjustment_type=appscaling.AdjustmentType.EXACT_CAPACITY,
            # Long enough for a Fargate task to start and appear in RunningTaskCount.
            cooldown=Duration.minutes(2),
            metric_aggregation_type=appscaling.MetricAggregationType.MAXIMUM,
        )
        for lower, upper, tasks in _from_zero_steps(config):
            from_zero.add_adjustment(adjustment=tasks, lower_bound=lower, upper_bound=upper)
        self.scale_out_from_zero_alarm.add_alarm_action(cw_actions.ApplicationScalingAction(from_zero))

        # 2. Proportional, out only.
        waiting = {f"w{i}": queue_metrics.waiting(queue) for i, queue in enumerate(config.queues)}
        waiting_sum = " + ".join(waiting)
        self.backlog_policy = appscaling.CfnScalingPolicy(
            self,
            "BacklogPerTask",
            # CloudFormation requires a name; it is unique per scalable target, not per account.
            policy_name=f"{group_name}-backlog-per-task",
            policy_type="TargetTrackingScaling",
            scaling_target_id=self.target.scalable_target_id,
            target_tracking_scaling_policy_configuration=appscaling.CfnScalingPolicy.TargetTrackingScalingPolicyConfigurationProperty(
                target_value=float(config.backlog_per_task),
                disable_scale_in=True,
                # One publisher period: react to each new datapoint, Fargate start-up paces the rest.
                scale_out_cooldown=60,
                customized_metric_specification=appscaling.CfnScalingPolicy.CustomizedMetricSpecificationProperty(
                    metrics=[
                        *[_tracking_query(key, metric) for key, metric in waiting.items()],
                        _tracking_query("running", running_tasks),
                        appscaling.CfnScalingPolicy.TargetTrackingMetricDataQueryProperty(
                            id="backlog_per_task",
                            expression=f"({waiting_sum}) / running",
                            label="Waiting tasks per running worker task",
                            return_data=True,
                        ),
                    ]
                ),
            ),
        )

        # 3. In when idle: the group's own queues, waiting and in flight.
        in_flight = {f"f{i}": queue_metrics.in_flight(queue) for i, queue in enumerate(config.queues)}
        quiet = config.scale_in_quiet_minutes
        self.idle_alarm = cloudwatch.Alarm(
            self,
            "IdleAlarm",
            alarm_description=(
                f"Scaling signal, not a page: the queues of worker group {group_name!r} have been empty "
                f"(nothing waiting, nothing in flight) for {quiet} minutes. Scales the group to "
                f"{config.min_tasks} tasks. Runbook: docs/runbooks.md#scaling-in-when-idle"
            ),
            metric=cloudwatch.MathExpression(
                expression=" + ".join([*waiting, *in_flight]),
                using_metrics={**waiting, **in_flight},
                label="Tasks waiting or in flight",
                period=MINUTE,
            ),
            threshold=0,
            comparison_operator=cloudwatch.ComparisonOperator.LESS_THAN_OR_EQUAL_TO_THRESHOLD,
            evaluation_periods=quiet,
            datapoints_to_alarm=quiet,
            # A gap in the data is not evidence of an empty queue.
            treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
        )
        scale_in = appscaling.StepScalingAction(
            self,
            "InWhenIdle",
            scaling_target=self.target,
            adjustment_type=appscaling.AdjustmentType.EXACT_CAPACITY,
            # The idle alarm re-fires each minute while idle; once at min_tasks there is nothing to do.
            cooldown=Duration.minutes(5),
            metric_aggregation_type=appscaling.MetricAggregationType.MAXIMUM,
        )
        scale_in.add_adjustment(adjustment=config.min_tasks, upper_bound=0)
        self.idle_alarm.add_alarm_action(cw_actions.ApplicationScalingAction(scale_in))


# Most workers started at once from zero: enough to absorb a burst while target tracking, which needs
# a running worker to compute backlog per task, takes over within a minute or two.
_FROM_ZERO_BURST = 4


def _from_zero_steps(config: WorkerGroupConfig) -> list[tuple[float, float | None, int]]:
    """(lower, upper, worker tasks) by waiting tasks above the alarm threshold of 0.

    Up to one target's worth of backlog starts one worker; more starts two, then up to four, never
    above max_tasks and never below min_tasks.
    """
    per_task = config.backlog_per_task
    burst = max(config.min_tasks, min(config.max_tasks, _FROM_ZERO_BURST))
    first = max(config.min_tasks, 1)
    if burst <= first:
        return [(0, None, first)]
    middle = max(first, min(burst, 2))
    return [(0, per_task, first), (per_task, per_task * burst, middle), (per_task * burst, None, burst)]


def _tracking_query(
    query_id: str, metric: cloudwatch.Metric
) -> appscaling.CfnScalingPolicy.TargetTrackingMetricDataQueryProperty:
    dimensions = [
        appscaling.CfnScalingPolicy.TargetTrackingMetricDimensionProperty(name=name, value=value)
        for name, value in (metric.dimensions or {}).items()
    ]
    return appscaling.CfnScalingPolicy.TargetTrackingMetricDataQueryProperty(
        id=query_id,
        return_data=False,
        metric_stat=appscaling.CfnScalingPolicy.TargetTrackingMetricStatProperty(
            metric=appscaling.CfnScalingPolicy.TargetTrackingMetricProperty(
                namespace=metric.namespace, metric_name=metric.metric_name, dimensions=dimensions or None
            ),
            stat=metric.statistic,
        ),
    )
