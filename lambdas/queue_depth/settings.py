"""The publisher's environment, validated once at cold start into a typed, frozen object."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Self
from urllib.parse import urlsplit, urlunsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .wake import WakeGroup

MAX_PORT = 65535
# A poll interval must split the minute evenly: each invocation covers one minute.
POLL_INTERVALS_S = tuple(n for n in range(1, 61) if 60 % n == 0)
# CloudWatch dimension values: 1-1024 ASCII characters, no control characters, not all whitespace.
MAX_DIMENSION_VALUE = 1024
MAX_NAMESPACE = 255


class SettingsError(ValueError):
    """The environment is invalid; the message names each bad variable and its value."""


def _printable_ascii(text: str) -> bool:
    return all(32 <= ord(char) < 127 for char in text)


def _redacted_url(url: str) -> str:
    # A broker URL may carry a password; an error message must not.
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc}"))


class Settings(BaseModel):
    """Environment of the queue-depth publisher (field aliases are the variable names).

    Either BROKER_URL (used as is), or BROKER_HOST, BROKER_PORT and BROKER_AUTH_SECRET_ARN (TLS with
    certificate verification, AUTH token from Secrets Manager). POLL_INTERVAL_S defaults to 60: one
    poll per invocation.
    """

    # Values are echoed by our own messages (a broker URL's password redacted), not by pydantic's.
    model_config = ConfigDict(frozen=True, extra="ignore", hide_input_in_errors=True)

    queues: tuple[str, ...] = Field(alias="QUEUES")
    metric_namespace: str = Field(alias="METRIC_NAMESPACE")
    broker_url: str | None = Field(default=None, alias="BROKER_URL")
    broker_host: str | None = Field(default=None, alias="BROKER_HOST")
    broker_port: int | None = Field(default=None, alias="BROKER_PORT")
    broker_auth_secret_arn: str | None = Field(default=None, alias="BROKER_AUTH_SECRET_ARN")
    poll_interval_s: int = Field(default=60, alias="POLL_INTERVAL_S")
    # Optional: the worker groups the publisher may start from zero (wake.py); none when unset.
    worker_groups: tuple[WakeGroup, ...] = Field(default=(), alias="WORKER_GROUPS")

    @field_validator("queues", mode="before")
    @classmethod
    def _split_queues(cls, value: object) -> tuple[str, ...]:
        raw = str(value)
        names = tuple(name.strip() for name in raw.split(","))
        if not any(names):
            raise ValueError(f"QUEUES={raw!r}: no queue named (comma-separated Celery queue names)")
        for name in names:
            if not name:
                raise ValueError(f"QUEUES={raw!r}: an empty queue name between commas")
            if not _printable_ascii(name) or len(name) > MAX_DIMENSION_VALUE:
                raise ValueError(
                    f"QUEUES={raw!r}: queue {name!r} cannot be a CloudWatch dimension value "
                    f"(printable ASCII, at most {MAX_DIMENSION_VALUE} characters)"
                )
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"QUEUES={raw!r}: {', '.join(duplicates)} listed more than once")
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
                f"METRIC_NAMESPACE={raw!r}: not a CloudWatch namespace (1-{MAX_NAMESPACE} printable ASCII "
                "characters, not starting with 'AWS/' or ':'; the stack sets CeleryFleet/<stage>)"
            )
        return name

    @field_validator("broker_url", mode="before")
    @classmethod
    def _check_url(cls, value: object) -> str | None:
        url = str(value).strip()
        if not url:
            return None
        if urlsplit(url).scheme not in {"redis", "rediss", "unix"}:
            raise ValueError(f"BROKER_URL={_redacted_url(url)!r}: not a redis://, rediss:// or unix:// URL")
        return url

    @field_validator("broker_host", "broker_auth_secret_arn", mode="before")
    @classmethod
    def _blank_is_unset(cls, value: object) -> str | None:
        text = str(value).strip()
        return text or None

    @field_validator("broker_port", mode="before")
    @classmethod
    def _check_port(cls, value: object) -> int | None:
        raw = str(value).strip()
        if not raw:
            return None
        if not raw.isdigit() or not 0 < int(raw) <= MAX_PORT:
            raise ValueError(f"BROKER_PORT={raw!r}: not a TCP port (1-{MAX_PORT})")
        return int(raw)

    @field_validator("worker_groups", mode="before")
    @classmethod
    def _parse_groups(cls, value: object) -> object:
        raw = str(value).strip()
        if not raw:
            return ()
        try:
            return json.loads(raw)
        except ValueError as error:
            raise ValueError(f"WORKER_GROUPS: not JSON ({error}); the stack writes it") from None

    @field_validator("poll_interval_s", mode="before")
    @classmethod
    def _check_interval(cls, value: object) -> int:
        raw = str(value).strip()
        if not raw.isdigit() or int(raw) not in POLL_INTERVALS_S:
            raise ValueError(
                f"POLL_INTERVAL_S={raw!r}: must be a whole number of seconds that divides 60 "
                f"({', '.join(map(str, POLL_INTERVALS_S))}); 10 for high-resolution metrics, 60 for standard"
            )
        return int(raw)

    @model_validator(mode="after")
    def _one_broker(self) -> Self:
        aws = {
            "BROKER_HOST": self.broker_host,
            "BROKER_PORT": self.broker_port,
            "BROKER_AUTH_SECRET_ARN": self.broker_auth_secret_arn,
        }
        given = [name for name, value in aws.items() if value is not None]
        if self.broker_url is not None and given:
            raise ValueError(
                f"BROKER_URL is set together with {', '.join(given)}: set BROKER_URL alone (local runs) "
                "or BROKER_HOST, BROKER_PORT and BROKER_AUTH_SECRET_ARN (a TLS broker in AWS)"
            )
        if self.broker_url is None and len(given) < len(aws):
            missing = [name for name in aws if name not in given]
            raise ValueError(
                f"broker not configured: {', '.join(missing)} not set. Set BROKER_URL, or all of "
                "BROKER_HOST, BROKER_PORT and BROKER_AUTH_SECRET_ARN"
            )
        return self

    @property
    def high_resolution(self) -> bool:
        return self.poll_interval_s < 60


def _describe(error: Mapping[str, Any]) -> str:
    variable = ".".join(str(part) for part in error["loc"]) or "environment"
    if error["type"] == "missing":
        return f"{variable} is not set"
    context = error.get("ctx") or {}
    if "error" in context:
        # Our validators' messages already name the variable and its value.
        return str(context["error"])
    return f"{variable}: {error['msg']}"


def load_settings(environ: Mapping[str, str]) -> Settings:
    """Validate `environ`; a SettingsError names every bad variable and its value."""
    try:
        return Settings.model_validate(dict(environ))
    except ValidationError as error:
        problems = "; ".join(_describe(item) for item in error.errors(include_url=False))
        raise SettingsError(f"invalid queue-depth publisher environment: {problems}") from None
