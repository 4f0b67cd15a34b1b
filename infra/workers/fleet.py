"""The whole worker fleet of a stage: cluster, log group, one service per group, optional beat."""

from __future__ import annotations

from aws_cdk import RemovalPolicy
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_ecr_assets as ecr_assets
from aws_cdk import aws_ecs as ecs
from aws_cdk import aws_logs as logs
from constructs import Construct

from infra.broker import Broker
from infra.config.workers import WorkersConfig
from infra.logs import retention
from infra.naming import pascal
from infra.queue_depth.metrics import QueueMetrics
from infra.workers.beat import BeatService
from infra.workers.image import worker_image
from infra.workers.scaling import BacklogScaling
from infra.workers.service import WorkerService

_PLATFORM = {"arm64": ecr_assets.Platform.LINUX_ARM64, "x86_64": ecr_assets.Platform.LINUX_AMD64}


class WorkerFleet(Construct):
    """Every worker group of the stage on one ECS cluster with Container Insights.

    Attributes:
        cluster: the ECS cluster.
        log_group: where every worker writes (task events included, one JSON line each).
        services: worker group name -> WorkerService.
        scaling: worker group name -> BacklogScaling.
        beat: the BeatService, when enabled.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        vpc: ec2.IVpc,
        subnets: ec2.SubnetSelection,
        broker: Broker,
        config: WorkersConfig,
        queue_metrics: QueueMetrics,
    ) -> None:
        super().__init__(scope, construct_id)
        self.cluster = ecs.Cluster(
            self,
            "Cluster",
            vpc=vpc,
            enable_fargate_capacity_providers=True,
            # Always on: scaling reads RunningTaskCount from Container Insights (per-minute stages).
            container_insights_v2=ecs.ContainerInsights.ENABLED,
        )
        self.log_group = logs.LogGroup(
            self,
            "Logs",
            retention=retention(config.log_retention_days),
            removal_policy=RemovalPolicy.DESTROY,
        )
        images: dict[str, ecs.ContainerImage] = {}

        def image_for(architecture: str) -> ecs.ContainerImage:
            if architecture not in images:
                scope_for_image = Construct(self, f"Image{pascal(architecture.replace('_', '-'))}")
                images[architecture] = worker_image(
                    scope_for_image, config.image, platform=_PLATFORM[architecture]
                )
            return images[architecture]

        self.services: dict[str, WorkerService] = {}
        self.scaling: dict[str, BacklogScaling] = {}
        for name, group in config.groups.items():
            worker = WorkerService(
                self,
                f"{pascal(name)}Workers",
                name=name,
                cluster=self.cluster,
                subnets=subnets,
                image=image_for(group.cpu_architecture),
                app_module=config.image.app_module,
                broker=broker,
                log_group=self.log_group,
                config=group,
                longest_time_limit_s=config.longest_time_limit_s,
                exec_enabled=config.exec_enabled,
            )
            self.services[name] = worker
            self.scaling[name] = BacklogScaling(
                worker,
                "Scaling",
                service=worker.service,
                running_tasks=worker.running_tasks(),
                group_name=name,
                config=group,
                queue_metrics=queue_metrics,
                high_resolution=config.high_resolution_metrics,
            )

        self.beat: BeatService | None = None
        if config.beat.enabled:
            self.beat = BeatService(
                self,
                "Beat",
                cluster=self.cluster,
                subnets=subnets,
                image=image_for(config.beat.cpu_architecture),
                app_module=config.image.app_module,
                broker=broker,
                log_group=self.log_group,
                config=config.beat,
            )
