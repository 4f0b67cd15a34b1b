"""One stage of celery-fleet: the stacks a stage config deploys, wired together."""

from __future__ import annotations

from dataclasses import dataclass

from aws_cdk import Annotations, App, Environment, Tags

from infra.broker import BrokerSizing, size_broker
from infra.config import StageConfig
from infra.config.aws import STAGE_TAG
from infra.config.plan import check_broker_plan
from infra.workers.image import build_requirements
from stacks.stateful import StatefulStack
from stacks.stateless import StatelessStack


@dataclass(frozen=True)
class StageStacks:
    """The stacks of one stage and the sizing decision behind the broker."""

    stateful: StatefulStack
    stateless: StatelessStack
    sizing: BrokerSizing
    warnings: tuple[str, ...] = ()

    def summary(self, config: StageConfig) -> str:
        return "\n".join(
            [
                f"celery-fleet stage {config.name!r}:",
                f"  stacks: {self.stateful.stack_name}"
                + (" (termination protection on)" if self.stateful.termination_protection else "")
                + f", {self.stateless.stack_name}",
                f"  broker: {config.broker.engine} {config.broker.engine_version}, "
                f"{1 + config.broker.replicas} node(s), {self.sizing.summary()}",
                f"  {build_requirements(config.workers)}",
                f"  failed messages: {_kept_messages(config)}",
                *(f"  warning: {warning}" for warning in self.warnings),
            ]
        )


def _kept_messages(config: StageConfig) -> str:
    if not config.monitoring.keep_failed_messages:
        return "not kept (monitoring.keep_failed_messages = false): failure records only, no replay"
    return (
        f"kept {config.monitoring.failed_tasks_retention_days} days in S3 (SSE-KMS) for replay, "
        "0 bytes of broker memory"
    )


def build_stage(app: App, config: StageConfig) -> StageStacks:
    """Add the stage's stacks to `app`.

    Raises SizingError when the broker cannot hold the backlog, ConfigError when the plan is unsound.
    """
    sizing = size_broker(config.broker)
    warnings = (*check_broker_plan(config, sizing), *config.warnings)
    env = Environment(account=config.aws.account, region=config.aws.region)
    prefix = f"CeleryFleet-{config.name}"
    stateful = StatefulStack(
        app,
        f"{prefix}-Stateful",
        config=config,
        sizing=sizing,
        env=env,
        description=f"celery-fleet {config.name}: network and Celery broker (stateful)",
    )
    stateless = StatelessStack(
        app,
        f"{prefix}-Stateless",
        config=config,
        stateful=stateful,
        env=env,
        description=f"celery-fleet {config.name}: Celery workers, queue metrics and monitoring (stateless)",
    )
    for stack in (stateful, stateless):
        # The config refuses user tags of the stage's own keys (OWN_TAGS), so none replaces them.
        for key, value in {**config.aws.tags, STAGE_TAG: config.name}.items():
            Tags.of(stack).add(key, value)
    for warning in warnings:
        stack = stateful if warning.startswith("broker.") else stateless
        # One id per key path: `cdk synth` lists each, and a team can acknowledge one by its id.
        Annotations.of(stack).add_warning_v2(f"celery-fleet:{warning.split(':', 1)[0]}", warning)
    return StageStacks(stateful=stateful, stateless=stateless, sizing=sizing, warnings=warnings)
