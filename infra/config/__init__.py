"""The stage configuration: one TOML file per stage under config/, parsed once in app.py.

`load_stage_config` is the only entry point: it reads the file, validates it against `StageConfig`
and raises `ConfigError` listing every problem with its field path, the bad value and what is allowed.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError, model_validator

from infra.config.aws import AwsConfig
from infra.config.base import ConfigError, ConfigModel, describe_validation_error
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

    name: str = Field(
        pattern=r"^[a-z][a-z0-9-]{1,19}$",
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
                f"network.availability_zones={zones!r} needs aws.region: AZ names belong to a region"
            )
        if self.network.vpc_id is None and region is not None and not zones:
            raise ValueError(
                f"aws.region={region!r} needs network.availability_zones (2 or 3 AZ names): without them "
                "CDK would look the AZs up in the account at synth"
            )
        if region is not None:
            foreign = [z for z in zones if not (z.startswith(region) and len(z) == len(region) + 1)]
            if foreign:
                raise ValueError(f"network.availability_zones {foreign!r} are not in aws.region={region!r}")
        return self


def config_path(*, stage: str | None, config: str | None) -> Path:
    """The file for `-c config=PATH`, else `config/<stage>.toml`."""
    if config:
        return Path(config)
    name = stage or "dev"
    path = CONFIG_DIR / f"{name}.toml"
    if not path.exists():
        known = ", ".join(sorted(p.stem for p in CONFIG_DIR.glob("*.toml")))
        raise ConfigError(f"-c stage={name}", [f"no config/{name}.toml; stages available: {known}"])
    return path


def load_stage_config(path: Path) -> StageConfig:
    """Read and validate one stage file."""
    source = str(path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(source, ["file not found"]) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(source, [f"not valid TOML: {exc}"]) from None
    return parse_stage_config(raw, source=source)


def parse_stage_config(raw: Mapping[str, Any], *, source: str = "<config>") -> StageConfig:
    """Validate an already-parsed stage document."""
    try:
        return StageConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(source, describe_validation_error(StageConfig, exc)) from None
