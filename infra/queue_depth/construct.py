"""A scheduled Lambda in the VPC that publishes queue depth, in-flight count and oldest-task age."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

from aws_cdk import ArnFormat, Duration, Stack
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_ecs as ecs
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_iam as iam
from celery_fleet.contract import queue_depth_env as env
from celery_fleet.contract import queue_metrics
from constructs import Construct

from infra.broker import Broker
from infra.functions import broker_function
from infra.nag import acknowledge, arn_in_finding
from infra.queue_depth.metrics import QueueMetrics


@dataclass(frozen=True)
class WakeTarget:
    """A worker group the publisher may start from zero (see lambdas/queue_depth/wake.py)."""

    name: str
    queues: Sequence[str]
    service: ecs.FargateService
    min_tasks: int
    max_tasks: int
    # (lower, upper or None, workers) by tasks waiting: the FromZero step policy's own steps.
    steps: Sequence[tuple[float, float | None, int]]
    idle_alarm: cloudwatch.IAlarm


class QueueDepthPublisher(Construct):
    """Polls the broker every minute (or every 10 s within each minute) and publishes queue metrics.

    Queue names come from config, never from worker discovery, so a queue nobody consumes yet (a
    group scaled to zero) is still measured and can start its workers. One invocation at a time,
    without reserved concurrency: each holds a lease on the broker while it polls, and one that
    finds it held ends at once, so a duplicated schedule event never doubles a data point.
    With `start_workers_from_zero`, each poll also starts the first workers of a group whose tasks
    wait while it has none, without waiting on CloudWatch.

    Attributes:
        function: the Lambda; its Errors metric is the "publisher failing" signal.
        metrics: the metrics it publishes, as CloudWatch metric objects.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        vpc: ec2.IVpc,
        subnets: ec2.SubnetSelection,
        broker: Broker,
        queues: list[str],
        namespace: str,
        high_resolution: bool,
        log_retention_days: int,
    ) -> None:
        super().__init__(scope, construct_id)
        self.metrics = QueueMetrics(namespace)
        poll_interval_s = queue_metrics.HIGH_RESOLUTION_PERIOD_S if high_resolution else 60

        self.function = broker_function(
            self,
            broker=broker,
            package="queue_depth",
            description="celery-fleet: publishes Celery queue depth, in-flight count and oldest-task age",
            purpose="Queue-depth publisher",
            memory_size=256,
            # High resolution polls six times within one invocation; it must end before the next one.
            timeout=Duration.seconds(58 if high_resolution else 30),
            vpc=vpc,
            subnets=subnets,
            log_retention_days=log_retention_days,
            # Every name the publisher reads (celery_fleet.contract.queue_depth_env), and only those:
            # the broker's are added by broker_function.
            environment={
                env.QUEUES: ",".join(queues),
                env.METRIC_NAMESPACE: namespace,
                env.POLL_INTERVAL_S: str(poll_interval_s),
                env.POWERTOOLS_SERVICE_NAME: "queue-depth-publisher",
            },
        )
        self.function.add_to_role_policy(
            iam.PolicyStatement(
                actions=["cloudwatch:PutMetricData"],
                # PutMetricData has no resource-level permissions; the namespace condition is the scope.
                resources=["*"],
                conditions={"StringEquals": {"cloudwatch:namespace": namespace}},
            )
        )

        self.schedule = events.Rule(
            self,
            "Schedule",
            description="Every minute: poll the Celery broker's queues",
            schedule=events.Schedule.rate(Duration.minutes(1)),
            targets=[targets.LambdaFunction(self.function, retry_attempts=0)],
        )

        role = self.function.role
        assert role is not None
        acknowledge(
            role,
            "AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/AWSLambdaVPCAccessExecutionRole]",
            "AWS's managed policy for VPC-attached Lambdas: creating and deleting the function's network "
            "interfaces and writing its logs; nothing else.",
        )
        acknowledge(
            role,
            "AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole]",
            "AWS's managed policy for writing the function's own logs.",
        )
        acknowledge(
            role,
            "AwsSolutions-IAM5[Resource::*]",
            "cloudwatch:PutMetricData supports no resource ARN; the statement is limited to this stage's "
            "namespace by the cloudwatch:namespace condition.",
        )

    def start_workers_from_zero(self, groups: Sequence[WakeTarget]) -> None:
        """Let each poll start `groups`' first workers: it raises a group's scaling minimum while its
        tasks wait and no worker runs, and sets it back once workers run (lambdas/queue_depth/wake.py).

        Grants exactly that: reading the scalable targets, the services' counts and the idle alarms,
        and RegisterScalableTarget, which the code only calls with a minimum between min_tasks and
        max_tasks. The services' counts are also published at each poll (DesiredWorkers,
        RunningWorkers per group), which the 10 s scaling alarms read.
        """
        if not groups:
            return
        self.function.add_environment(
            env.WORKER_GROUPS,
            json.dumps(
                [
                    {
                        "name": group.name,
                        "queues": list(group.queues),
                        "cluster": group.service.cluster.cluster_name,
                        "service": group.service.service_name,
                        "min_tasks": group.min_tasks,
                        "max_tasks": group.max_tasks,
                        "steps": [list(step) for step in group.steps],
                        "idle_alarm": group.idle_alarm.alarm_name,
                    }
                    for group in groups
                ],
                separators=(",", ":"),
            ),
        )
        stack = Stack.of(self)
        self.function.add_to_role_policy(
            iam.PolicyStatement(
                # RegisterScalableTarget acts on the service through ECS on the caller's behalf.
                actions=["ecs:DescribeServices", "ecs:UpdateService"],
                resources=[group.service.service_arn for group in groups],
            )
        )
        self.function.add_to_role_policy(
            iam.PolicyStatement(
                actions=["application-autoscaling:RegisterScalableTarget"],
                resources=[
                    stack.format_arn(
                        service="application-autoscaling",
                        resource="scalable-target",
                        resource_name="*",
                        arn_format=ArnFormat.SLASH_RESOURCE_NAME,
                    )
                ],
            )
        )
        self.function.add_to_role_policy(
            iam.PolicyStatement(
                # DescribeScalableTargets supports no resource ARN.
                actions=["application-autoscaling:DescribeScalableTargets"],
                resources=["*"],
            )
        )
        self.function.add_to_role_policy(
            iam.PolicyStatement(
                actions=["cloudwatch:DescribeAlarms"],
                resources=[group.idle_alarm.alarm_arn for group in groups],
            )
        )
        role = self.function.role
        assert role is not None
        targets = arn_in_finding(self, "application-autoscaling", "scalable-target/*")
        acknowledge(
            role,
            f"AwsSolutions-IAM5[Resource::{targets}]",
            "A scalable target's ARN carries an ID Application Auto Scaling generates (CloudFormation "
            "returns none), so the grant names this account and region's scalable targets; the code "
            "only sets the minimum of the worker groups in WORKER_GROUPS, within min_tasks and max_tasks.",
        )
