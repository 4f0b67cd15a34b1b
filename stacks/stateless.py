"""The stage's stateless stack: worker fleet, queue-depth publisher (and monitoring, task events)."""

from __future__ import annotations

from typing import Any

from aws_cdk import Stack
from celery_fleet.contract import queue_metrics
from constructs import Construct

from infra.config import StageConfig
from infra.monitoring import Monitoring
from infra.queue_depth import QueueDepthPublisher
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
        self.task_events = TaskEventIngester(
            self,
            "TaskEvents",
            stage=config.name,
            worker_logs=self.fleet.log_group,
            namespace=namespace,
            failed_tasks_retention_days=config.monitoring.failed_tasks_retention_days,
            log_retention_days=config.workers.log_retention_days,
        )
        self.monitoring = Monitoring(
            self,
            "Monitoring",
            stage=config.name,
            config=config.monitoring,
            namespace=namespace,
            broker=broker,
            broker_replicas=config.broker.replicas,
            fleet=self.fleet,
            groups=config.workers.groups,
            publisher=self.queue_depth,
            ingester=self.task_events,
        )
