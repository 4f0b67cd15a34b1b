"""The Celery broker: an ElastiCache replication group, sized from the backlog it must hold."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator

from infra.config.base import ConfigModel, matching, short
from infra.config.common import RetentionDays

# Engine versions ElastiCache offers for a node-based, cluster-mode-disabled replication group
# ("Supported engines and versions" in the ElastiCache guide; Valkey 9.1 is listed there).
ENGINE_VERSIONS: dict[str, tuple[str, ...]] = {
    "valkey": ("7.2", "8.0", "8.1", "8.2", "9.0", "9.1"),
    "redis": ("7.0", "7.1"),
}
# The version an unset engine_version means, per engine. Valkey stays at 9.0 rather than the newest
# so that a stage deployed before 9.1 was allowed is not upgraded by a deploy nobody asked to upgrade.
DEFAULT_ENGINE_VERSIONS: dict[str, str] = {"valkey": "9.0", "redis": "7.1"}

_DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_SNAPSHOT_WINDOW = re.compile(r"^(\d{2}):(\d{2})-(\d{2}):(\d{2})$")
_MAINTENANCE_WINDOW = re.compile(
    r"^(mon|tue|wed|thu|fri|sat|sun):(\d{2}):(\d{2})-(mon|tue|wed|thu|fri|sat|sun):(\d{2}):(\d{2})$"
)


class BrokerConfig(ConfigModel):
    """The broker the workers and the web app share.

    By default: Valkey 9.0 (the current major), one primary and one replica in different AZs with
    automatic failover, TLS and an AUTH token, `noeviction`, list compression, daily snapshots kept
    one day, and the smallest non-burstable Graviton node that holds `backlog_tasks` with 50 %
    headroom.
    """

    engine: Literal["valkey", "redis"] = Field(
        default="valkey", description="valkey (cheaper per node, wire-compatible) or redis (Redis OSS)."
    )
    engine_version: str = Field(
        default=DEFAULT_ENGINE_VERSIONS["valkey"],
        description="Major.minor. valkey: "
        + ", ".join(ENGINE_VERSIONS["valkey"])
        + "; redis: "
        + ", ".join(ENGINE_VERSIONS["redis"])
        + ". Unset: "
        + ", ".join(f"{version} for {engine}" for engine, version in DEFAULT_ENGINE_VERSIONS.items())
        + ".",
    )
    backlog_tasks: int = Field(
        gt=0,
        le=1_000_000_000,
        description="Peak number of queued tasks the broker must hold (all queues, waiting and in flight).",
    )
    message_bytes: int | None = Field(
        default=None,
        ge=200,
        le=10_000_000,
        description="Average task message size as stored in Redis (`LINDEX` length); sizing reads bytes "
        "per task off the benchmark's measured curve, with a 20 % margin. Unset: 738 B, a small-argument "
        "task as celery_fleet.configure sends it (stock Celery sends the same task as 1,290 B: declare that "
        "if your web app publishes without configure). Ignored when bytes_per_task is set.",
    )
    bytes_per_task: int | None = Field(
        default=None,
        ge=50,
        le=20_000_000,
        description="Broker memory per queued task, measured with bench/broker_memory.py on your own "
        "messages; overrides the model.",
    )
    headroom_percent: int = Field(
        default=50,
        ge=0,
        le=400,
        description="Memory kept free above the predicted backlog (in-flight copies, replication buffers, "
        "fragmentation, a burst above the declared peak).",
    )
    node_type: (
        Annotated[str, matching(r"cache\.[a-z0-9]+\.[a-z0-9]+", "a node type like cache.r7g.large")] | None
    ) = Field(
        default=None,
        description="Explicit node type; unset picks the smallest that holds the backlog. An explicit type "
        "too small for the backlog fails synth.",
    )
    allow_burstable_nodes: bool = Field(
        default=False,
        description="Consider cache.t4g nodes when sizing, and accept an explicit one in a protected "
        "Multi-AZ stage. Off by default: a busy broker exhausts CPU credits and slows every worker.",
    )
    replicas: int = Field(default=1, ge=0, le=5, description="Read replicas beside the primary.")
    multi_az: bool = Field(
        default=True, description="Automatic failover to a replica in another AZ. Needs replicas >= 1."
    )
    port: int = Field(
        default=6379,
        ge=1024,
        le=65535,
        description="Broker port (TLS only). Set it before the first deploy: changing it replaces the "
        "broker, and the new one starts empty (a final snapshot of the old one is kept).",
    )
    snapshot_retention_days: int = Field(
        default=1, ge=0, le=35, description="Daily snapshots kept; 0 disables snapshots."
    )
    snapshot_window: str = Field(default="03:00-04:00", description="Daily UTC window, hh:mm-hh:mm.")
    maintenance_window: str = Field(
        default="sun:04:30-sun:05:30", description="Weekly UTC window, ddd:hh:mm-ddd:hh:mm."
    )
    slow_log_retention_days: RetentionDays = Field(
        default=30, description="Days the engine's slow log is kept in CloudWatch Logs."
    )
    client_security_group_ids: list[str] = Field(
        default_factory=list,
        description="Security groups of clients outside this app (the web app that enqueues tasks) "
        "admitted to the broker port.",
    )

    @model_validator(mode="before")
    @classmethod
    def _version_for_engine(cls, data: Any) -> Any:
        # `engine = "redis"` alone means Redis's default version, not Valkey's (which Redis lacks).
        engine = data.get("engine") if isinstance(data, dict) else None
        if isinstance(engine, str) and engine in DEFAULT_ENGINE_VERSIONS and "engine_version" not in data:
            return {**data, "engine_version": DEFAULT_ENGINE_VERSIONS[engine]}
        return data

    @field_validator("client_security_group_ids")
    @classmethod
    def _security_groups(cls, ids: list[str]) -> list[str]:
        for sg in ids:
            if not re.fullmatch(r"sg-[0-9a-f]{8,17}", sg):
                raise ValueError(f"{short(sg)} is not a security group ID; expected sg-xxxxxxxx")
        return ids

    @field_validator("snapshot_window")
    @classmethod
    def _snapshot_window(cls, window: str) -> str:
        match = _SNAPSHOT_WINDOW.fullmatch(window)
        if not match:
            raise ValueError(
                f"{short(window)} is not a daily window; expected hh:mm-hh:mm in UTC, e.g. 03:00-04:00"
            )
        start, end = _minutes(*match.groups()[:2]), _minutes(*match.groups()[2:])
        if (end - start) % 1440 < 60:
            raise ValueError(f"{short(window)} is shorter than the 60 minutes ElastiCache requires")
        return window

    @field_validator("maintenance_window")
    @classmethod
    def _maintenance_window(cls, window: str) -> str:
        match = _MAINTENANCE_WINDOW.fullmatch(window)
        if not match:
            raise ValueError(
                f"{short(window)} is not a weekly window; expected ddd:hh:mm-ddd:hh:mm in UTC, e.g. "
                "sun:04:30-sun:05:30"
            )
        start, end = _weekly_span(window)
        if (end - start) % (7 * 1440) < 60:
            raise ValueError(f"{short(window)} is shorter than the 60 minutes ElastiCache requires")
        return window

    @model_validator(mode="after")
    def _consistent(self) -> BrokerConfig:
        allowed = ENGINE_VERSIONS[self.engine]
        if self.engine_version not in allowed:
            raise ValueError(
                f"engine_version={short(self.engine_version)} is not offered for "
                f"engine={short(self.engine)}; allowed: {', '.join(allowed)}"
            )
        if self.multi_az and self.replicas == 0:
            raise ValueError("multi_az=true needs replicas >= 1 (got replicas=0): failover needs a replica")
        if self.snapshot_retention_days > 0 and _windows_overlap(
            self.snapshot_window, self.maintenance_window
        ):
            raise ValueError(
                f"snapshot_window={short(self.snapshot_window)} overlaps "
                f"maintenance_window={short(self.maintenance_window)}; ElastiCache requires them apart"
            )
        return self


def _minutes(hours: str, minutes: str) -> int:
    h, m = int(hours), int(minutes)
    if h > 23 or m > 59:
        raise ValueError(f"{hours}:{minutes} is not a time of day")
    return h * 60 + m


def _weekly_span(window: str) -> tuple[int, int]:
    start, end = window.split("-")
    return _weekly_minute(start), _weekly_minute(end)


def _weekly_minute(point: str) -> int:
    day, hours, minutes = point.split(":")
    return _DAYS.index(day) * 1440 + _minutes(hours, minutes)


def _windows_overlap(snapshot: str, maintenance: str) -> bool:
    """Whether the daily snapshot window meets the weekly maintenance window on any day."""
    start_s, end_s = snapshot.split("-")
    s0 = _minutes(*start_s.split(":"))
    length = (_minutes(*end_s.split(":")) - s0) % 1440
    m0, m1 = _weekly_span(maintenance)
    m_len = (m1 - m0) % (7 * 1440)
    week = 7 * 1440
    for day in range(7):
        a0 = day * 1440 + s0
        # Two intervals on a circle overlap when either start lies inside the other interval.
        if (a0 - m0) % week < m_len or (m0 - a0) % week < length:
            return True
    return False
