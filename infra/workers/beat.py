"""The stage's one Celery beat: a Fargate service that sends the app's periodic tasks to the broker."""

from __future__ import annotations

from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_ecs as ecs
from aws_cdk import aws_logs as logs
from constructs import Construct

from infra.broker import Broker
from infra.config.workers import BeatConfig
from infra.workers.service import (
    acknowledge_task_definition,
    broker_environment,
    broker_secrets,
    fargate_platform,
    fleet_logging,
)

# Beat keeps each periodic task's last run time in a file, by default `celerybeat-schedule` in the
# working directory, which an image running as a non-root user rarely lets it write (the sample's
# /app belongs to root). /tmp is writable by every user in every image. The file lives as long as
# the task: a new beat starts from an empty schedule, so an interval task first runs one interval
# after the start, and a crontab task at its next time.
BEAT_SCHEDULE_PATH = "/tmp/celery-fleet-beat-schedule"


def beat_command(app_module: str) -> list[str]:
    """`celery beat` for the app, with its schedule file where any user can write."""
    return ["celery", "-A", app_module, "beat", "--loglevel=INFO", f"--schedule={BEAT_SCHEDULE_PATH}"]


class BeatService(ecs.FargateService):
    """Exactly one `celery beat` task, on regular Fargate, even during a deploy (the old task stops
    before the new one starts): two beats would send every periodic task twice.

    Same platform, broker environment, AUTH secret and log group as the workers (the helpers of
    infra/workers/service.py); no health check, as beat consumes nothing.

    The construct is the Fargate service itself, and its task definition is its sibling
    `<id>TaskDefinition`, rather than both under a construct of their own like WorkerService's: these
    are the construct paths beat had when the fleet built it inline, so a stage that runs beat keeps
    its logical IDs. A new logical ID would replace the service, and CloudFormation starts the new
    one before it deletes the old: two beats, for a while.

    Attributes:
        task_definition, container: the beat's task definition and its `Beat` container.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        cluster: ecs.ICluster,
        subnets: ec2.SubnetSelection,
        image: ecs.ContainerImage,
        app_module: str,
        broker: Broker,
        log_group: logs.ILogGroup,
        config: BeatConfig,
    ) -> None:
        task_definition = ecs.FargateTaskDefinition(
            scope,
            f"{construct_id}TaskDefinition",
            cpu=config.cpu,
            memory_limit_mib=config.memory_mib,
            runtime_platform=fargate_platform(config.cpu_architecture),
        )
        container = task_definition.add_container(
            "Beat",
            image=image,
            command=beat_command(app_module),
            environment=broker_environment(broker),
            secrets=broker_secrets(broker),
            logging=fleet_logging("beat", log_group),
        )
        super().__init__(
            scope,
            construct_id,
            cluster=cluster,
            task_definition=task_definition,
            vpc_subnets=subnets,
            desired_count=1,
            # The old task stops before the new one starts.
            min_healthy_percent=0,
            max_healthy_percent=100,
            capacity_provider_strategies=[
                ecs.CapacityProviderStrategy(capacity_provider="FARGATE", weight=1)
            ],
            circuit_breaker=ecs.DeploymentCircuitBreaker(enable=True, rollback=True),
        )
        self.container = container
        broker.admit(self, "Celery beat")
        acknowledge_task_definition(task_definition)
