"""The stage configuration: one TOML file per stage under config/, parsed once in app.py.

`load_stage_config` is the only entry point: it reads the file, validates it against `StageConfig`
and raises `ConfigError` listing every problem with its field path, the bad value and what is allowed.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, ValidationError, model_validator

from infra.config.aws import AwsConfig
from infra.config.base import ConfigError, ConfigModel, describe_validation_error, matching, short
from infra.config.broker import BrokerConfig
from infra.config.monitoring import MonitoringConfig
from infra.config.network import NetworkConfig
from infra.config.workers import WorkersConfig

__all__ = [
    "AwsConfig",
    "BrokerConfig",
    "ConfigError",
    "MonitoringConfig",
    "NetworkConfig",
    "StageConfig",
    "WorkersConfig",
    "config_path",
    "load_stage_config",
    "parse_stage_config",
]

CONFIG_DIR = Path(__file__).resolve().parents[2] / "config"


class StageConfig(ConfigModel):
    """Everything one stage (dev, prod, ...) deploys."""

    name: Annotated[
        str,
        matching(
            r"[a-z][a-z0-9-]{1,19}",
            "a stage name is 2 to 20 lowercase letters, digits and -, starting with a letter (e.g. prod)",
        ),
    ] = Field(
        description="Stage name; part of stack names (CeleryFleet-<name>-Stateful). Lowercase, 2-20 chars.",
    )
    protect_stateful: bool = Field(
        default=True,
        description="Termination protection on the stateful stack (broker, its secret, the VPC). Turn off "
        "only for throwaway stages.",
    )
    aws: AwsConfig = Field(default=AwsConfig(), description="Account, region, tags: `[aws]`.")
    network: NetworkConfig = Field(default=NetworkConfig(), description="The VPC: `[network]`.")
    broker: BrokerConfig = Field(description="The Celery broker: `[broker]`.")
    workers: WorkersConfig = Field(description="Worker groups and what they share: `[workers]`.")
    monitoring: MonitoringConfig = Field(
        default=MonitoringConfig(), description="Task events, alarms, notifications: `[monitoring]`."
    )

    @model_validator(mode="after")
    def _region_bound(self) -> StageConfig:
        region = self.aws.region
        zones = self.network.availability_zones
        if self.network.vpc_id is None and zones and region is None:
            raise ValueError(
                f"network.availability_zones={short(zones)} needs aws.region: AZ names belong to a region"
            )
        if self.network.vpc_id is None and region is not None and not zones:
            raise ValueError(
                f"aws.region={short(region)} needs network.availability_zones (2 or 3 AZ names): without "
                "them CDK would look the AZs up in the account at synth"
            )
        if region is not None:
            foreign = [z for z in zones if not (z.startswith(region) and len(z) == len(region) + 1)]
            if foreign:
                raise ValueError(
                    f"network.availability_zones {short(foreign)} are not in aws.region={short(region)}"
                )
        return self

    @model_validator(mode="after")
    def _burstable_in_production(self) -> StageConfig:
        broker = self.broker
        if (
            self.protect_stateful
            and broker.multi_az
            and broker.node_type is not None
            and broker.node_type.startswith("cache.t")
            and not broker.allow_burstable_nodes
        ):
            raise ValueError(
                f"broker.node_type={short(broker.node_type)} is a burstable node in a protected Multi-AZ "
                "stage: a busy broker spends its CPU credits, then is throttled and slows every worker and "
                "the web app. Choose an m7g or r7g node (or unset node_type), or set "
                "broker.allow_burstable_nodes = true to accept the risk"
            )
        return self

    @property
    def warnings(self) -> list[str]:
        """Valid but risky choices, with the key they come from; synth prints each."""
        return [
            f"workers.groups.{name}: {warning}"
            for name, group in self.workers.groups.items()
            for warning in group.warnings
        ]


def config_path(*, stage: str | None, config: str | None) -> Path:
    """The file for `-c config=PATH`, else `config/<stage>.toml`."""
    if config:
        return Path(config)
    name = stage or "dev"
    known = sorted(p.stem for p in CONFIG_DIR.glob("*.toml"))
    # Only a shipped stage's own name: `-c stage=../x` is not a way to read other files.
    if name not in known:
        shown = name if len(name) <= 40 else f"{name[:37]}..."
        raise ConfigError(
            f"-c stage={shown}", [f"no config/{shown}.toml; stages available: {', '.join(known)}"]
        )
    return CONFIG_DIR / f"{name}.toml"


def load_stage_config(path: Path) -> StageConfig:
    """Read and validate one stage file."""
    source = str(path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(source, ["file not found"]) from None
    except OSError as exc:
        raise ConfigError(source, [f"cannot be read: {exc.strerror or exc}"]) from None
    except UnicodeDecodeError as exc:
        raise ConfigError(source, [f"not UTF-8 text (byte {exc.start}): TOML files are UTF-8"]) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(source, [f"not valid TOML: {exc}"]) from None
    except RecursionError:
        raise ConfigError(source, ["not valid TOML: nested too deeply"]) from None
    except ValueError as exc:
        # After its subclasses above: what is left is a path with a NUL byte, which no file has.
        raise ConfigError(source, [f"cannot be read: {exc}"]) from None
    return parse_stage_config(raw, source=source)


def parse_stage_config(raw: Mapping[str, Any], *, source: str = "<config>") -> StageConfig:
    """Validate an already-parsed stage document."""
    try:
        return StageConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(source, describe_validation_error(StageConfig, exc)) from None
