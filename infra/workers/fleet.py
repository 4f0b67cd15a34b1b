"""The whole worker fleet of a stage: cluster, log group, one service per group, optional beat."""

from __future__ import annotations

from aws_cdk import RemovalPolicy
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_ecr_assets as ecr_assets
from aws_cdk import aws_ecs as ecs
from aws_cdk import aws_logs as logs
from celery_fleet.contract.container import BROKER_AUTH_TOKEN_ENV, BROKER_HOST_ENV, BROKER_PORT_ENV
from constructs import Construct

from infra.broker import Broker
from infra.config.workers import WorkersConfig
from infra.logs import retention
from infra.naming import pascal
from infra.queue_depth.metrics import QueueMetrics
from infra.workers.image import worker_image
from infra.workers.scaling import BacklogScaling
from infra.workers.service import WorkerService, acknowledge_task_definition

_PLATFORM = {"arm64": ecr_assets.Platform.LINUX_ARM64, "x86_64": ecr_assets.Platform.LINUX_AMD64}

# Beat keeps each periodic task's last run time in a file, by default `celerybeat-schedule` in the
# working directory, which an image running as a non-root user rarely lets it write (the sample's
# /app belongs to root). /tmp is writable by every user in every image. The file lives as long as
# the task: a new beat starts from an empty schedule, so an interval task first runs one interval
# after the start, and a crontab task at its next time.
BEAT_SCHEDULE_PATH = "/tmp/celery-fleet-beat-schedule"


def beat_command(app_module: str) -> list[str]:
    """`celery beat` for the app, with its schedule file where any user can write."""
    return ["celery", "-A", app_module, "beat", "--loglevel=INFO", f"--schedule={BEAT_SCHEDULE_PATH}"]


class WorkerFleet(Construct):
    """Every worker group of the stage on one ECS cluster with Container Insights.

    Attributes:
        cluster: the ECS cluster.
        log_group: where every worker writes (task events included, one JSON line each).
        services: worker group name -> WorkerService.
        scaling: worker group name -> BacklogScaling.
        beat: the beat service, when enabled.
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
                running_tasks=worker.task_count_metric("RunningTaskCount"),
                group_name=name,
                config=group,
                queue_metrics=queue_metrics,
                high_resolution=config.high_resolution_metrics,
            )

        self.beat: ecs.FargateService | None = None
        if config.beat.enabled:
            self.beat = self._beat(subnets, broker, config, image_for(config.beat.cpu_architecture))

    def _beat(
        self, subnets: ec2.SubnetSelection, broker: Broker, config: WorkersConfig, image: ecs.ContainerImage
    ) -> ecs.FargateService:
        beat = config.beat
        task = ecs.FargateTaskDefinition(
            self,
            "BeatTaskDefinition",
            cpu=beat.cpu,
            memory_limit_mib=beat.memory_mib,
            runtime_platform=ecs.RuntimePlatform(
                cpu_architecture=ecs.CpuArchitecture.ARM64
                if beat.cpu_architecture == "arm64"
                else ecs.CpuArchitecture.X86_64,
                operating_system_family=ecs.OperatingSystemFamily.LINUX,
            ),
        )
        task.add_container(
            "Beat",
            image=image,
            command=beat_command(config.image.app_module),
            environment={BROKER_HOST_ENV: broker.endpoint, BROKER_PORT_ENV: str(broker.port)},
            secrets={BROKER_AUTH_TOKEN_ENV: ecs.Secret.from_secrets_manager(broker.secret)},
            logging=ecs.LogDrivers.aws_logs(stream_prefix="beat", log_group=self.log_group),
        )
        service = ecs.FargateService(
            self,
            "Beat",
            cluster=self.cluster,
            task_definition=task,
            vpc_subnets=subnets,
            desired_count=1,
            # Exactly one beat at any time, even during a deploy: the old stops before the new starts.
            min_healthy_percent=0,
            max_healthy_percent=100,
            capacity_provider_strategies=[
                ecs.CapacityProviderStrategy(capacity_provider="FARGATE", weight=1)
            ],
            circuit_breaker=ecs.DeploymentCircuitBreaker(enable=True, rollback=True),
        )
        broker.admit(service, "Celery beat")
        acknowledge_task_definition(task)
        return service
