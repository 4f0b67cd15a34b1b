"""One stage of celery-fleet: the stacks a stage config deploys, wired together."""

from __future__ import annotations

from dataclasses import dataclass

from aws_cdk import App, Environment, Tags

from infra.broker import BrokerSizing, size_broker
from infra.config import StageConfig
from stacks.stateful import StatefulStack
from stacks.stateless import StatelessStack


@dataclass(frozen=True)
class StageStacks:
    """The stacks of one stage and the sizing decision behind the broker."""

    stateful: StatefulStack
    stateless: StatelessStack
    sizing: BrokerSizing

    def summary(self, config: StageConfig) -> str:
        return "\n".join(
            [
                f"celery-fleet stage {config.name!r}:",
                f"  stacks: {self.stateful.stack_name}"
                + (" (termination protection on)" if self.stateful.termination_protection else "")
                + f", {self.stateless.stack_name}",
                f"  broker: {config.broker.engine} {config.broker.engine_version}, "
                f"{1 + config.broker.replicas} node(s), {self.sizing.summary()}",
            ]
        )


def build_stage(app: App, config: StageConfig) -> StageStacks:
    """Add the stage's stacks to `app`. Raises SizingError when the broker cannot hold the backlog."""
    sizing = size_broker(config.broker)
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
        for key, value in {"celery-fleet:stage": config.name, **config.aws.tags}.items():
            Tags.of(stack).add(key, value)
    return StageStacks(stateful=stateful, stateless=stateless, sizing=sizing)
