"""One worker group: a Fargate service of Celery workers consuming the group's queues."""

from __future__ import annotations

from aws_cdk import ArnFormat, CfnElement, Duration, Stack
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_ecs as ecs
from aws_cdk import aws_iam as iam
from aws_cdk import aws_logs as logs
from aws_cdk import aws_secretsmanager as secretsmanager
from celery_fleet.contract.container import FARGATE_MAX_STOP_TIMEOUT_S
from celery_fleet.contract.worker_env import (
    BROKER_AUTH_TOKEN_ENV,
    BROKER_HOST_ENV,
    BROKER_PORT_ENV,
    EVENT_KEY_ENV,
    MAX_TASK_RUNTIME_ENV,
    REMAP_SIGTERM_ENV,
    REMAP_SIGTERM_VALUE,
    SOFT_TIME_LIMIT_ENV,
    TIME_LIMIT_ENV,
)
from constructs import Construct

from infra.broker import Broker
from infra.config.workers import WorkerGroupConfig
from infra.nag import acknowledge, arn_in_finding


def worker_command(app_module: str, name: str, config: WorkerGroupConfig) -> list[str]:
    """`celery worker` with the group's options, as the container's command."""
    # WARNING: INFO logs two lines per task, and each outcome is already a task-event line.
    command = ["celery", "-A", app_module, "worker", "--loglevel=WARNING", f"--hostname={name}@%h"]
    command += ["--queues", ",".join(config.queues), "--pool", config.pool]
    if config.autoscale is not None:
        high, low = config.autoscale
        command.append(f"--autoscale={high},{low}")
    else:
        command.append(f"--concurrency={config.concurrency}")
    if config.max_memory_per_child_mib is not None:
        command.append(f"--max-memory-per-child={config.max_memory_per_child_mib * 1024}")
    if config.max_tasks_per_child is not None:
        command.append(f"--max-tasks-per-child={config.max_tasks_per_child}")
    command.append(f"--time-limit={config.time_limit_s}")
    if config.soft_time_limit_s is not None:
        command.append(f"--soft-time-limit={config.soft_time_limit_s}")
    command.append(f"--prefetch-multiplier={config.prefetch_multiplier}")
    # No gossip, mingle or worker heartbeats: broadcast chatter that grows with the fleet, used only by
    # Celery's event monitors. Task outcomes reach monitoring through celery_fleet's event lines.
    command += ["--without-gossip", "--without-mingle", "--without-heartbeat"]
    return command


def worker_environment(config: WorkerGroupConfig, *, longest_time_limit_s: int) -> dict[str, str]:
    """The worker container's plain environment, broker location aside."""
    environment = {
        # SIGTERM starts Celery's cold shutdown with its soft-shutdown phase: running tasks get the
        # soft-shutdown budget, then are requeued at once (billiard reads this at import).
        REMAP_SIGTERM_ENV: REMAP_SIGTERM_VALUE,
        # The longest task any worker may run: celery_fleet derives the visibility timeout from it,
        # so no running task is ever delivered twice.
        MAX_TASK_RUNTIME_ENV: str(longest_time_limit_s),
        # The same limits as the command line's, for the app: each task's own limit is what the pool
        # applies at shutdown, so they must agree (celery_fleet.limits refuses to start otherwise).
        TIME_LIMIT_ENV: str(config.time_limit_s),
    }
    if config.soft_time_limit_s is not None:
        environment[SOFT_TIME_LIMIT_ENV] = str(config.soft_time_limit_s)
    return environment


def fargate_platform(cpu_architecture: str) -> ecs.RuntimePlatform:
    """Linux on `cpu_architecture` ("arm64" or "x86_64"), as the config names it."""
    arm = cpu_architecture == "arm64"
    return ecs.RuntimePlatform(
        cpu_architecture=ecs.CpuArchitecture.ARM64 if arm else ecs.CpuArchitecture.X86_64,
        operating_system_family=ecs.OperatingSystemFamily.LINUX,
    )


def broker_environment(broker: Broker) -> dict[str, str]:
    """Where a Celery process finds the broker (celery_fleet reads these; the token is a secret)."""
    return {BROKER_HOST_ENV: broker.endpoint, BROKER_PORT_ENV: str(broker.port)}


def broker_secrets(broker: Broker) -> dict[str, ecs.Secret]:
    """The broker's AUTH token as an ECS secret: the task definition holds its ARN, never its value."""
    return {BROKER_AUTH_TOKEN_ENV: ecs.Secret.from_secrets_manager(broker.secret)}


def fleet_logging(stream_prefix: str, log_group: logs.ILogGroup) -> ecs.LogDriver:
    """The awslogs driver into the fleet's log group, where the task-event subscription reads."""
    return ecs.LogDrivers.aws_logs(stream_prefix=stream_prefix, log_group=log_group)


class WorkerService(Construct):
    """A Fargate service running `celery worker` for one group's queues.

    By default each task gets the group's cpu and memory on the configured architecture, the broker
    token as an ECS secret, 120 s between SIGTERM and SIGKILL (Fargate's maximum) with SIGTERM
    remapped to Celery's soft shutdown so running tasks finish or are requeued, a container health
    check that fails when the worker stops consuming, a deployment circuit breaker that rolls back,
    and logs in the fleet's log group.

    Attributes:
        name: the worker group's name.
        config: the worker group's configuration (queues, SLO, size).
        service, task_definition, container: the ECS resources.
        connections: the workers' security group.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        name: str,
        cluster: ecs.ICluster,
        subnets: ec2.SubnetSelection,
        image: ecs.ContainerImage,
        app_module: str,
        broker: Broker,
        log_group: logs.ILogGroup,
        config: WorkerGroupConfig,
        longest_time_limit_s: int,
        exec_enabled: bool,
    ) -> None:
        super().__init__(scope, construct_id)
        self.name = name
        self.config = config
        self.task_definition = ecs.FargateTaskDefinition(
            self,
            "TaskDefinition",
            cpu=config.cpu,
            memory_limit_mib=config.memory_mib,
            runtime_platform=fargate_platform(config.cpu_architecture),
        )
        self.container = self.task_definition.add_container(
            "Worker",
            image=image,
            command=worker_command(app_module, name, config),
            environment={
                **broker_environment(broker),
                **worker_environment(config, longest_time_limit_s=longest_time_limit_s),
            },
            secrets=broker_secrets(broker),
            logging=fleet_logging(name, log_group),
            stop_timeout=Duration.seconds(FARGATE_MAX_STOP_TIMEOUT_S),
            health_check=ecs.HealthCheck(
                command=["CMD", "celery-fleet-healthcheck"],
                interval=Duration.seconds(30),
                timeout=Duration.seconds(10),
                retries=3,
                # Imports and the first broker connection can take a while on a cold image.
                start_period=Duration.seconds(90),
            ),
            linux_parameters=ecs.LinuxParameters(self, "Linux", init_process_enabled=True),
        )

        strategies = [
            ecs.CapacityProviderStrategy(
                capacity_provider="FARGATE",
                base=config.on_demand_base,
                weight=max(1, 100 - config.spot_percent),
            )
        ]
        if config.spot_percent > 0:
            strategies.append(
                ecs.CapacityProviderStrategy(capacity_provider="FARGATE_SPOT", weight=config.spot_percent)
            )
        self.service = ecs.FargateService(
            self,
            "Service",
            cluster=cluster,
            task_definition=self.task_definition,
            vpc_subnets=subnets,
            assign_public_ip=False,
            capacity_provider_strategies=strategies,
            circuit_breaker=ecs.DeploymentCircuitBreaker(enable=True, rollback=True),
            # New workers start before old ones stop: a deploy never drops capacity.
            min_healthy_percent=100,
            max_healthy_percent=200,
            enable_execute_command=exec_enabled,
            propagate_tags=ecs.PropagatedTagSource.SERVICE,
        )
        self.connections = self.service.connections
        broker.admit(self.service, f"Celery workers ({name})")
        self._allow_scale_in_protection(cluster)

        if exec_enabled:
            acknowledge(
                self.task_definition.task_role,
                "AwsSolutions-IAM5[Resource::*]",
                "ECS Exec (enabled in this stage's config) needs ssmmessages channel actions, which support "
                "no resource ARN.",
            )
        acknowledge_task_definition(self.task_definition)

    def sign_task_events(self, key: secretsmanager.ISecret) -> None:
        """Give the worker the stage's task-event signing key, as an ECS secret (the execution role
        may read it; the value never appears in the task definition)."""
        self.container.add_secret(EVENT_KEY_ENV, ecs.Secret.from_secrets_manager(key))

    def _allow_scale_in_protection(self, cluster: ecs.ICluster) -> None:
        # celery_fleet.protection protects the worker's own task through the ECS agent while it
        # runs tasks; the agent calls UpdateTaskProtection with the task role.
        tasks = Stack.of(self).format_arn(
            service="ecs",
            resource="task",
            resource_name=f"{cluster.cluster_name}/*",
            arn_format=ArnFormat.SLASH_RESOURCE_NAME,
        )
        self.task_definition.add_to_task_role_policy(
            iam.PolicyStatement(actions=["ecs:UpdateTaskProtection"], resources=[tasks])
        )
        cluster_resource = cluster.node.default_child
        assert isinstance(cluster_resource, CfnElement)
        cluster_id = Stack.of(self).get_logical_id(cluster_resource)
        acknowledge(
            self.task_definition.task_role,
            f"AwsSolutions-IAM5[Resource::{arn_in_finding(self, 'ecs', f'task/<{cluster_id}>/*')}]",
            "A task's ID is known only once it runs: the grant names the tasks of this cluster, and the ECS "
            "agent uses it for the worker's own task only (celery_fleet.protection).",
        )

    def running_tasks(self) -> cloudwatch.Metric:
        """Worker tasks of this group running, per minute (Container Insights)."""
        return self.task_count_metric("RunningTaskCount")

    def desired_tasks(self) -> cloudwatch.Metric:
        """Worker tasks of this group the service should run (what scaling asked for), per minute."""
        return self.task_count_metric("DesiredTaskCount")

    def task_count_metric(self, name: str) -> cloudwatch.Metric:
        """RunningTaskCount, DesiredTaskCount or PendingTaskCount of this service, per minute, from
        Container Insights (always on: see WorkerFleet)."""
        return cloudwatch.Metric(
            namespace="ECS/ContainerInsights",
            metric_name=name,
            dimensions_map={
                "ClusterName": self.service.cluster.cluster_name,
                "ServiceName": self.service.service_name,
            },
            statistic="Average",
            period=Duration.minutes(1),
        )


def acknowledge_task_definition(task_definition: ecs.FargateTaskDefinition) -> None:
    """The cdk-nag findings every celery-fleet task definition has, and why they are accepted."""
    acknowledge(
        task_definition.obtain_execution_role(),
        "AwsSolutions-IAM5[Resource::*]",
        "ecr:GetAuthorizationToken, which ECS needs to pull the worker image, supports no resource ARN; "
        "the pull itself is limited to the image's repository.",
    )
    acknowledge(
        task_definition,
        "AwsSolutions-ECS2",
        "Only non-secret settings are environment variables (broker host and port, signal remap, time "
        "limits); the AUTH token arrives as an ECS secret from Secrets Manager.",
    )
