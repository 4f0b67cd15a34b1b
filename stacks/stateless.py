"""The stage's stateless stack: worker fleet, queue-depth publisher (and monitoring, task events)."""

from __future__ import annotations

from typing import Any

from aws_cdk import CfnOutput, Stack
from celery_fleet.contract import queue_metrics
from constructs import Construct

from infra.config import StageConfig
from infra.monitoring import Monitoring
from infra.queue_depth import QueueDepthPublisher
from infra.replay import FailedMessageReplay
from infra.task_events import TaskEventIngester
from infra.workers import WorkerFleet
from stacks.stateful import StatefulStack


class StatelessStack(Stack):
    """Everything that can be destroyed and redeployed without losing a queued task."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: StageConfig,
        stateful: StatefulStack,
        **kwargs: Any,
    ) -> None:
        super().__init__(scope, construct_id, **kwargs)
        network, broker = stateful.network, stateful.broker
        namespace = queue_metrics.namespace(config.name)

        self.queue_depth = QueueDepthPublisher(
            self,
            "QueueDepthPublisher",
            vpc=network.vpc,
            subnets=network.private_subnets,
            broker=broker,
            queues=config.workers.queues,
            namespace=namespace,
            high_resolution=config.workers.high_resolution_metrics,
            log_retention_days=config.workers.log_retention_days,
        )
        self.fleet = WorkerFleet(
            self,
            "Workers",
            vpc=network.vpc,
            subnets=network.private_subnets,
            broker=broker,
            config=config.workers,
            queue_metrics=self.queue_depth.metrics,
        )
        self.queue_depth.start_workers_from_zero(
            [scaling.wake_target for scaling in self.fleet.scaling.values()]
        )
        self.task_events = TaskEventIngester(
            self,
            "TaskEvents",
            stage=config.name,
            worker_logs=self.fleet.log_group,
            queues=config.workers.queues,
            event_key=stateful.task_event_key.secret,
            namespace=namespace,
            failed_tasks_retention_days=config.monitoring.failed_tasks_retention_days,
            log_retention_days=config.workers.log_retention_days,
        )
        self.replay: FailedMessageReplay | None = None
        if config.monitoring.keep_failed_messages:
            self.replay = FailedMessageReplay(
                self,
                "Replay",
                vpc=network.vpc,
                subnets=network.private_subnets,
                broker=broker,
                retention_days=config.monitoring.failed_tasks_retention_days,
                log_retention_days=config.workers.log_retention_days,
            )
            for worker in self.fleet.services.values():
                self.replay.keep_from(worker)
        for worker in self.fleet.services.values():
            worker.sign_task_events(stateful.task_event_key.secret)
        self.monitoring = Monitoring(
            self,
            "Monitoring",
            stage=config.name,
            config=config.monitoring,
            broker=broker,
            fleet=self.fleet,
            publisher=self.queue_depth,
            ingester=self.task_events,
        )
        self._operator_outputs(config)

    def _operator_outputs(self, config: StageConfig) -> None:
        """What `celery-fleet` reads to find the stage's resources (celery_fleet_cli.aws.load_stage)."""
        outputs = {
            "MetricNamespace": (
                self.queue_depth.metrics.namespace,
                "CloudWatch namespace of the stage's metrics",
            ),
            "Queues": (",".join(config.workers.queues), "Celery queues the stage's workers consume"),
            "ClusterName": (self.fleet.cluster.cluster_name, "ECS cluster of the worker services"),
            "WorkerServices": (
                ",".join(f"{name}={w.service.service_name}" for name, w in self.fleet.services.items()),
                "Worker group name = ECS service name, for each group",
            ),
            "WorkerLogGroup": (
                self.fleet.log_group.log_group_name,
                "Log group of the workers (task-event lines)",
            ),
            "FailedTasksLogGroup": (
                self.task_events.failed_tasks.log_group_name,
                "Log group of the failed-task records",
            ),
        }
        if self.replay is not None:
            outputs["ReplayFunctionName"] = (
                self.replay.function.function_name,
                "Lambda that puts kept failed messages back on their queues (celery-fleet replay)",
            )
            outputs["ReplayLogGroup"] = (
                self.replay.function.log_group.log_group_name,
                "Log group of the replay Lambda: one audit line per replay",
            )
        for output_id, (value, description) in outputs.items():
            CfnOutput(self, output_id, value=value, description=description)
