"""Building one construct alone: a bare Stack, the least it needs around it, minimal typed configs.

Construct tests use these instead of the shipped stages, so that what config/*.toml says never
decides whether a construct test passes: each test states the inputs its behaviour depends on and
takes the config classes' own defaults for everything else.

    stack = bare_stack()
    broker(stack, broker_config(replicas=0, multi_az=False))
    template(stack).has_resource_properties("AWS::ElastiCache::ReplicationGroup", {...})

    stack = bare_stack()
    worker_service(stack, worker_group(concurrency=2))

The stack has a fixed account and region (so ARNs and AZs are plain strings, not tokens), and the
App gets cdk.json's feature flags, as `cdk synth` does. `vpc` imports a VPC from fixed IDs: it adds
no resource to the template, so a construct's template holds only what that construct creates.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar, cast

from aws_cdk import App, Environment, Stack
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_ecs as ecs
from aws_cdk import aws_logs as logs
from aws_cdk import aws_secretsmanager as secretsmanager
from aws_cdk.assertions import Template
from constructs import Construct

from infra.broker import Broker, size_broker
from infra.config import BrokerConfig, MonitoringConfig, NetworkConfig, WorkersConfig
from infra.config.workers import WorkerGroupConfig
from infra.naming import pascal
from infra.queue_depth.metrics import QueueMetrics
from infra.workers import WorkerFleet, WorkerService
from tests.support.synth import cdk_context

T = TypeVar("T")

ACCOUNT = "123456789012"
REGION = "eu-west-1"
ZONES = ("eu-west-1a", "eu-west-1b")
VPC_ID = "vpc-0a1b2c3d4e5f60718"
PRIVATE_SUBNET_IDS = ("subnet-0aaaaaaaaaaaaaaaa", "subnet-0bbbbbbbbbbbbbbbb")
# Given only so that CDK does not warn about reading them; nothing here routes.
PRIVATE_ROUTE_TABLE_IDS = ("rtb-0aaaaaaaaaaaaaaaa", "rtb-0bbbbbbbbbbbbbbbb")
# Where the stage places everything of its own (infra/network.py's Network.private_subnets).
PRIVATE_SUBNETS = ec2.SubnetSelection(subnet_type=ec2.SubnetType.PRIVATE_WITH_EGRESS)
NAMESPACE = "CeleryFleet/test"
# A registry image: no Docker build context is staged at synth.
IMAGE_NAME = "public.ecr.aws/example/worker:1"


def bare_stack(construct_id: str = "Test", *, environment_agnostic: bool = False) -> Stack:
    """A Stack alone in a fresh App with cdk.json's feature flags, bound to ACCOUNT and REGION
    (`environment_agnostic`: bound to none, as the shipped stages are when `[aws]` is empty)."""
    app = App(context=cdk_context())
    env = None if environment_agnostic else Environment(account=ACCOUNT, region=REGION)
    return Stack(app, construct_id, env=env)


def template(stack: Stack) -> Template:
    """The stack's synthesized template, for `Match`/`Capture` assertions."""
    return Template.from_stack(stack)


def vpc(scope: Construct, construct_id: str = "Vpc") -> ec2.IVpc:
    """A VPC imported from VPC_ID with two private subnets (PRIVATE_SUBNET_IDS in ZONES).

    Construct tests take the VPC from `broker`/`cluster` (one per stack); call this directly only
    for a construct that needs nothing else.
    """
    return ec2.Vpc.from_vpc_attributes(
        scope,
        construct_id,
        vpc_id=VPC_ID,
        availability_zones=list(ZONES),
        private_subnet_ids=list(PRIVATE_SUBNET_IDS),
        private_subnet_route_table_ids=list(PRIVATE_ROUTE_TABLE_IDS),
    )


def network_config(**overrides: Any) -> NetworkConfig:
    """`NetworkConfig`'s defaults (a created VPC) with explicit ZONES, which a bound stack needs
    to avoid an AZ lookup; `overrides` replace any key."""
    return NetworkConfig.model_validate({"availability_zones": list(ZONES), **overrides})


def broker_config(**overrides: Any) -> BrokerConfig:
    """`BrokerConfig`'s defaults with a small backlog (10,000 tasks); `overrides` replace any key."""
    return BrokerConfig.model_validate({"backlog_tasks": 10_000, **overrides})


def broker(scope: Construct, config: BrokerConfig | None = None, *, construct_id: str = "Broker") -> Broker:
    """A Broker in `vpc(scope)`, sized from `config` (default `broker_config()`) as the stage sizes it."""
    config = config or broker_config()
    return Broker(
        scope,
        construct_id,
        vpc=_vpc_of(scope),
        subnets=PRIVATE_SUBNETS,
        config=config,
        sizing=size_broker(config),
    )


def worker_group(**overrides: Any) -> WorkerGroupConfig:
    """`WorkerGroupConfig`'s defaults consuming queue "default"; `overrides` replace any key."""
    return WorkerGroupConfig.model_validate({"queues": ["default"], **overrides})


def workers_config(groups: dict[str, WorkerGroupConfig] | None = None, **overrides: Any) -> WorkersConfig:
    """`WorkersConfig`'s defaults with `groups` (default: one group "default", `worker_group()`)."""
    return WorkersConfig.model_validate({"groups": groups or {"default": worker_group()}, **overrides})


def monitoring_config(**overrides: Any) -> MonitoringConfig:
    """`MonitoringConfig`'s defaults; `overrides` replace any key."""
    return MonitoringConfig.model_validate(overrides)


def queue_metrics(namespace: str = NAMESPACE) -> QueueMetrics:
    """The queue metrics the publisher would write under `namespace`."""
    return QueueMetrics(namespace)


def image() -> ecs.ContainerImage:
    """A worker image from a registry (IMAGE_NAME), so that synth stages no Docker context."""
    return ecs.ContainerImage.from_registry(IMAGE_NAME)


def cluster(scope: Construct, construct_id: str = "Cluster") -> ecs.Cluster:
    """An ECS cluster in `vpc(scope)` with the Fargate capacity providers, as WorkerFleet makes it."""
    return ecs.Cluster(scope, construct_id, vpc=_vpc_of(scope), enable_fargate_capacity_providers=True)


def log_group(scope: Construct, construct_id: str = "Logs") -> logs.LogGroup:
    """A log group with CDK's defaults (for worker logs and the like)."""
    return logs.LogGroup(scope, construct_id)


def secret(scope: Construct, construct_id: str = "Secret") -> secretsmanager.Secret:
    """A generated secret (for the task-event signing key and the like)."""
    return secretsmanager.Secret(scope, construct_id)


def worker_service(
    scope: Construct,
    config: WorkerGroupConfig | None = None,
    *,
    name: str = "default",
    longest_time_limit_s: int | None = None,
    exec_enabled: bool = False,
) -> WorkerService:
    """A WorkerService `<Name>Workers` for group `name` (default config `worker_group()`), running
    `image()` with app "app". Services of one stack share its cluster, broker and log group (made by
    the first); `longest_time_limit_s` defaults to the group's own time limit."""
    config = config or worker_group()
    stack = Stack.of(scope)
    return WorkerService(
        scope,
        f"{pascal(name)}Workers",
        name=name,
        cluster=_one_per_stack(stack, "Cluster", cluster),
        subnets=PRIVATE_SUBNETS,
        image=image(),
        app_module="app",
        broker=_one_per_stack(stack, "Broker", broker),
        log_group=_one_per_stack(stack, "Logs", log_group),
        config=config,
        longest_time_limit_s=longest_time_limit_s or config.time_limit_s,
        exec_enabled=exec_enabled,
    )


def worker_fleet(scope: Construct, config: WorkersConfig | None = None) -> WorkerFleet:
    """A WorkerFleet "Workers" of `config` (default `workers_config()`) reaching the stack's broker
    (made here if none yet), scaled on `queue_metrics()`."""
    stack = Stack.of(scope)
    return WorkerFleet(
        scope,
        "Workers",
        vpc=_vpc_of(stack),
        subnets=PRIVATE_SUBNETS,
        broker=_one_per_stack(stack, "Broker", broker),
        config=config or workers_config(),
        queue_metrics=queue_metrics(),
    )


def _one_per_stack(stack: Stack, construct_id: str, make: Callable[[Construct], T]) -> T:
    # Two helpers that need the stack's broker (or cluster, log group) share one instead of
    # colliding on its construct ID.
    existing = stack.node.try_find_child(construct_id)
    return cast(T, existing) if existing is not None else make(stack)


def _vpc_of(scope: Construct) -> ec2.IVpc:
    return _one_per_stack(Stack.of(scope), "Vpc", vpc)
