"""Scaling a worker service on its queues' backlog: out from zero, proportional both ways, idle to min.

Four pieces, each acting on signals from the queue-depth publisher:

1. From zero. The publisher itself raises the group's minimum when tasks wait and no worker runs
   (lambdas/queue_depth/wake.py): within one poll of the first task, 10 s or 60 s. The fallback, if
   that fails: an alarm on "tasks waiting while no worker task runs" (1 datapoint of one period)
   sets the service to 1, 2 or 4 workers by backlog (exact capacity: re-firing never adds more).
   Target tracking alone cannot do this: backlog per running task has no value while none runs.
2. Out, proportional. Target tracking on backlog per running task (waiting tasks of the group's
   queues divided by RunningTaskCount, metric math through the L1 policy since the L2 accepts no
   math) keeps about `backlog_per_task` waiting tasks per worker task. It only scales out.
3. In, proportional. The workers needed are CEIL(waiting / backlog_per_task + in flight / pool
   processes per worker); an alarm on running minus needed >= 1 for SURPLUS_MINUTES removes about
   the surplus (never more: each step removes the lower bound of its range), again every
   SURPLUS_COOLDOWN_S while a surplus remains. Workers hold ECS task scale-in protection while they
   have tasks (celery_fleet.protection), so ECS stops idle workers only.
4. Idle to min_tasks. An alarm on the group's own queues, waiting plus in flight, at 0 for
   `scale_in_quiet_minutes` consecutive minutes sets the service to `min_tasks`, a backstop of 3.

Periods: with per-minute queue metrics the alarms read Container Insights' RunningTaskCount, per
minute. With high-resolution metrics (polls every 10 s) they read the publisher's own worker counts
(RunningWorkers, DesiredWorkers, from DescribeServices at each poll) and take 10 s periods, their
windows the same in minutes (surplus 5 min = 30 periods, idle 15 min = 90). Target tracking stays
per minute: its CloudFormation metric stat takes no period.

Missing data never scales: a publisher that cannot reach the broker, or a poll that could not
attribute in-flight tasks to queues, leaves the fleet as it is. `python -m tools.scaling_response`
prints each group's response times from the synthesized template.
"""

from __future__ import annotations

from aws_cdk import Duration
from aws_cdk import aws_applicationautoscaling as appscaling
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as cw_actions
from aws_cdk import aws_ecs as ecs
from celery_fleet.contract import queue_metrics as queue_metrics_contract
from constructs import Construct

from infra.config.workers import WorkerGroupConfig
from infra.metric_math import check_alarm_metrics
from infra.queue_depth.construct import WakeTarget
from infra.queue_depth.metrics import QueueMetrics


class BacklogScaling(Construct):
    """Application Auto Scaling of one worker service on its queues' depth (see module docstring).

    Attributes:
        target: the scalable target (desired count between min_tasks and max_tasks).
        scale_out_from_zero_alarm, idle_alarm, surplus_alarm: the alarms that drive the step
            policies (each refused at synth if it reads more metrics than CloudWatch accepts).
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
        high_resolution: bool = False,
    ) -> None:
        super().__init__(scope, construct_id)
        period_s = queue_metrics_contract.HIGH_RESOLUTION_PERIOD_S if high_resolution else 60
        period = Duration.seconds(period_s)
        per_minute = 60 // period_s
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
        # Container Insights (30-90 s after start; at 10 s, until the next poll sees the desired count),
        # and re-firing must not add more workers each time.
        waiting_without_workers = self._checked(
            "FromZeroAlarm",
            queue_metrics.group_waiting_while_none_asked_for(
                group_name, period=period, label="Tasks waiting with no worker running or asked for"
            )
            if high_resolution
            else queue_metrics.waiting_while_no_worker(
                config.queues, running_tasks, label="Tasks waiting with no worker running"
            ),
        )
        self.scale_out_from_zero_alarm = cloudwatch.Alarm(
            self,
            "FromZeroAlarm",
            alarm_description=(
                f"Scaling signal, not a page: tasks wait in the queues of worker group {group_name!r} "
                "while none of its workers runs. Starts workers; target tracking takes over once they "
                "run. Runbook: docs/runbooks.md#scaling-out-from-zero"
            ),
            metric=waiting_without_workers,
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

        # 4. Idle to min_tasks: the group's own queues, waiting and in flight.
        in_flight = {f"f{i}": queue_metrics.in_flight(queue) for i, queue in enumerate(config.queues)}
        idle_figures = {key: metric.with_(period=period) for key, metric in {**waiting, **in_flight}.items()}
        quiet = config.scale_in_quiet_minutes
        self.idle_alarm = cloudwatch.Alarm(
            self,
            "IdleAlarm",
            alarm_description=(
                f"Scaling signal, not a page: the queues of worker group {group_name!r} have been empty "
                f"(nothing waiting, nothing in flight) for {quiet} minutes. Scales the group to "
                f"{config.min_tasks} tasks. Runbook: docs/runbooks.md#scaling-in-when-idle"
            ),
            metric=self._checked(
                "IdleAlarm",
                cloudwatch.MathExpression(
                    expression=" + ".join([*waiting, *in_flight]),
                    using_metrics=idle_figures,
                    label="Tasks waiting or in flight",
                    period=period,
                ),
            ),
            threshold=0,
            comparison_operator=cloudwatch.ComparisonOperator.LESS_THAN_OR_EQUAL_TO_THRESHOLD,
            evaluation_periods=quiet * per_minute,
            datapoints_to_alarm=quiet * per_minute,
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

        # 3. In, proportional: about the surplus of running over needed workers, never below needed.
        # The group's sums, one metric each: per-queue metrics would pass an alarm's 10 for 5 queues.
        group_figures = {
            key: metric.with_(period=period)
            for key, metric in {
                "w": queue_metrics.group_waiting(group_name),
                "f": queue_metrics.group_in_flight(group_name),
                "running": queue_metrics.group_running(group_name) if high_resolution else running_tasks,
            }.items()
        }
        # Container Insights may publish nothing for a service with no task; the publisher's count is
        # there at every poll it could read ECS, and a poll that could not must not read as 0 workers.
        running = "running" if high_resolution else "FILL(running, 0)"
        needed = f"CEIL(w / {config.backlog_per_task} + f / {config.processes})"
        if config.min_tasks > 0:
            # At min_tasks there is nothing to remove: no surplus, so the alarm rests in OK.
            needed = f"IF({needed} < {config.min_tasks}, {config.min_tasks}, {needed})"
        self.surplus_alarm = cloudwatch.Alarm(
            self,
            "SurplusAlarm",
            alarm_description=(
                f"Scaling signal, not a page: worker group {group_name!r} has run more workers than its "
                f"queues need for {SURPLUS_MINUTES} minutes (needed: waiting / {config.backlog_per_task} "
                f"+ in flight / {config.processes} processes). Stops about the surplus; busy workers "
                "are protected. Runbook: docs/runbooks.md#scaling-in-when-idle"
            ),
            metric=self._checked(
                "SurplusAlarm",
                cloudwatch.MathExpression(
                    expression=f"{running} - {needed}",
                    using_metrics=group_figures,
                    label="Workers running beyond what the queues need",
                    period=period,
                ),
            ),
            threshold=1,
            comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
            evaluation_periods=SURPLUS_MINUTES * per_minute,
            datapoints_to_alarm=SURPLUS_MINUTES * per_minute,
            # No in-flight figures (more unacked than a poll reads) is no evidence of a surplus.
            treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
        )
        surplus_in = appscaling.StepScalingAction(
            self,
            "InBySurplus",
            scaling_target=self.target,
            adjustment_type=appscaling.AdjustmentType.CHANGE_IN_CAPACITY,
            # Long enough for the stopped workers to leave RunningTaskCount before the next step.
            cooldown=Duration.seconds(SURPLUS_COOLDOWN_S),
            metric_aggregation_type=appscaling.MetricAggregationType.MAXIMUM,
        )
        for lower, upper, change in surplus_steps(config.max_tasks):
            surplus_in.add_adjustment(adjustment=change, lower_bound=lower, upper_bound=upper)
        self.surplus_alarm.add_alarm_action(cw_actions.ApplicationScalingAction(surplus_in))

        # What the queue-depth publisher needs to start this group from zero itself (the FromZero
        # alarm above stays as the fallback): the same steps, bounded the same way.
        self.wake_target = WakeTarget(
            name=group_name,
            queues=list(config.queues),
            service=service,
            min_tasks=config.min_tasks,
            max_tasks=config.max_tasks,
            steps=_from_zero_steps(config),
            idle_alarm=self.idle_alarm,
        )

    def _checked(self, alarm_id: str, metric: cloudwatch.IMetric) -> cloudwatch.IMetric:
        """`metric`, once checked for the alarm `alarm_id` about to read it: a clear synth error that
        names the alarm, before CDK's own, which names none."""
        check_alarm_metrics(f"{self.node.path}/{alarm_id}", metric)
        return metric


# Minutes of surplus before workers are stopped, and seconds between two steps: a burst's gaps do
# not stop workers, and a trickle after a burst gets to its size in three or four steps.
SURPLUS_MINUTES = 5
SURPLUS_COOLDOWN_S = 180
# Workers removed per step, by surplus: each step removes the lower bound of its range, at least
# two thirds of the surplus, never all of it unless the surplus is exactly that.
_SURPLUS_LADDER = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768)


def surplus_steps(max_tasks: int) -> list[tuple[float, float | None, int]]:
    """(lower, upper, change) above the surplus alarm's threshold of 1: a surplus in
    [ladder[i], ladder[i+1]) removes ladder[i] workers (Application Auto Scaling's steps are offsets
    from the threshold, lower bound included)."""
    ladder = [size for size in _SURPLUS_LADDER if size <= max(1, max_tasks)]
    steps: list[tuple[float, float | None, int]] = []
    for index, size in enumerate(ladder):
        upper = ladder[index + 1] - 1 if index + 1 < len(ladder) else None
        steps.append((size - 1, upper, -size))
    return steps


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
