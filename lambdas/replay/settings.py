"""The replay function's environment, validated once at cold start into a typed, frozen object.

The idiom both in-VPC Lambdas share (broker_access.settings): field aliases are the variables' names
(replay.environment), and one SettingsError names every bad variable, its value and what is allowed.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from broker_access.settings import BrokerSettings, SettingsError, load
from celery_fleet.contract import replay_env as env
from pydantic import Field, field_validator

__all__ = ["Settings", "SettingsError", "load_settings"]

# S3's rules for a bucket name (general purpose buckets): 3-63 characters of lowercase letters,
# digits, dots and hyphens, starting and ending with a letter or digit.
_BUCKET_NAME = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")


class Settings(BrokerSettings):
    """Environment of the replay function; the broker's variables are BrokerSettings'."""

    bucket: str = Field(alias=env.FAILED_MESSAGES_BUCKET)

    @field_validator("bucket", mode="before")
    @classmethod
    def _check_bucket(cls, value: object) -> str:
        raw = str(value)
        if not _BUCKET_NAME.fullmatch(raw):
            raise ValueError(
                f"{env.FAILED_MESSAGES_BUCKET}={raw!r}: not an S3 bucket name (3-63 lowercase letters, "
                "digits, dots and hyphens, starting and ending with a letter or digit; the stack sets "
                "the failed-messages bucket's)"
            )
        return raw


def load_settings(environ: Mapping[str, str]) -> Settings:
    """Validate `environ`; a SettingsError names every bad variable and its value."""
    return load(Settings, environ, function="replay")
