"""The publisher's environment, validated once at cold start into a typed, frozen object.

The idiom both in-VPC Lambdas share (broker_access.settings): field aliases are the variables' names
(queue_depth.environment), and one SettingsError names every bad variable, its value and what is
allowed.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

from broker_access.settings import BrokerSettings, SettingsError, load
from celery_fleet.contract import queue_depth_env as env
from pydantic import Field, field_validator

from .wake import WakeGroup

__all__ = ["Settings", "SettingsError", "load_settings"]

# A poll interval must split the minute evenly: each invocation covers one minute.
POLL_INTERVALS_S = tuple(n for n in range(1, 61) if 60 % n == 0)
# CloudWatch dimension values: 1-1024 ASCII characters, no control characters, not all whitespace.
MAX_DIMENSION_VALUE = 1024
MAX_NAMESPACE = 255


def _printable_ascii(text: str) -> bool:
    return all(32 <= ord(char) < 127 for char in text)


class Settings(BrokerSettings):
    """Environment of the queue-depth publisher; the broker's variables are BrokerSettings'.

    POLL_INTERVAL_S defaults to 60: one poll per invocation.
    """

    queues: tuple[str, ...] = Field(alias=env.QUEUES)
    metric_namespace: str = Field(alias=env.METRIC_NAMESPACE)
    poll_interval_s: int = Field(default=60, alias=env.POLL_INTERVAL_S)
    # Optional: the worker groups the publisher may start from zero (wake.py); none when unset.
    worker_groups: tuple[WakeGroup, ...] = Field(default=(), alias=env.WORKER_GROUPS)

    @field_validator("queues", mode="before")
    @classmethod
    def _split_queues(cls, value: object) -> tuple[str, ...]:
        raw = str(value)
        names = tuple(name.strip() for name in raw.split(","))
        if not any(names):
            raise ValueError(f"{env.QUEUES}={raw!r}: no queue named (comma-separated Celery queue names)")
        for name in names:
            if not name:
                raise ValueError(f"{env.QUEUES}={raw!r}: an empty queue name between commas")
            if not _printable_ascii(name) or len(name) > MAX_DIMENSION_VALUE:
                raise ValueError(
                    f"{env.QUEUES}={raw!r}: queue {name!r} cannot be a CloudWatch dimension value "
                    f"(printable ASCII, at most {MAX_DIMENSION_VALUE} characters)"
                )
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"{env.QUEUES}={raw!r}: {', '.join(duplicates)} listed more than once")
        return names

    @field_validator("metric_namespace", mode="before")
    @classmethod
    def _check_namespace(cls, value: object) -> str:
        raw = str(value)
        name = raw.strip()
        if (
            not name
            or len(name) > MAX_NAMESPACE
            or not _printable_ascii(name)
            or name.startswith(("AWS/", ":"))
        ):
            raise ValueError(
                f"{env.METRIC_NAMESPACE}={raw!r}: not a CloudWatch namespace (1-{MAX_NAMESPACE} printable "
                "ASCII characters, not starting with 'AWS/' or ':'; the stack sets CeleryFleet/<stage>)"
            )
        return name

    @field_validator("worker_groups", mode="before")
    @classmethod
    def _parse_groups(cls, value: object) -> object:
        raw = str(value).strip()
        if not raw:
            return ()
        try:
            return json.loads(raw)
        except ValueError as error:
            raise ValueError(f"{env.WORKER_GROUPS}: not JSON ({error}); the stack writes it") from None

    @field_validator("poll_interval_s", mode="before")
    @classmethod
    def _check_interval(cls, value: object) -> int:
        raw = str(value).strip()
        if not raw.isdigit() or int(raw) not in POLL_INTERVALS_S:
            raise ValueError(
                f"{env.POLL_INTERVAL_S}={raw!r}: must be a whole number of seconds that divides 60 "
                f"({', '.join(map(str, POLL_INTERVALS_S))}); 10 for high-resolution metrics, 60 for standard"
            )
        return int(raw)

    @property
    def high_resolution(self) -> bool:
        return self.poll_interval_s < 60


def load_settings(environ: Mapping[str, str]) -> Settings:
    """Validate `environ`; a SettingsError names every bad variable and its value."""
    return load(Settings, environ, function="queue-depth publisher")
