"""The settings idiom of the in-VPC Lambdas: the environment validated once, at cold start, into a
typed, frozen pydantic model whose field aliases are the variables' names, and one SettingsError
naming every bad variable, its value and what is allowed.

`BrokerSettings` holds the broker's variables (broker_access.environment); each Lambda's `Settings`
extends it with its own and loads it with `load`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Self, TypeVar
from urllib.parse import urlsplit, urlunsplit

from celery_fleet.contract import broker_access_env as env
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

MAX_PORT = 65535
URL_SCHEMES = ("redis", "rediss", "unix")

# The broker as the stack gives it, for messages.
STACK_FORM = f"{env.BROKER_HOST}, {env.BROKER_PORT} and {env.BROKER_AUTH_SECRET_ARN}"

SettingsModel = TypeVar("SettingsModel", bound=BaseModel)


class SettingsError(ValueError):
    """The environment is invalid; the message names each bad variable and its value."""


def redacted_url(url: str) -> str:
    """`url` with its password, if any, replaced by ***: a broker URL may carry one, a message must not."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc}"))


class BrokerSettings(BaseModel):
    """Either BROKER_URL (used as is: local runs, tests), or BROKER_HOST, BROKER_PORT and
    BROKER_AUTH_SECRET_ARN (the stack's: TLS with certificate verification, AUTH token from
    Secrets Manager); never both, never part of the second."""

    # Values are echoed by our own messages (a broker URL's password redacted), not by pydantic's.
    model_config = ConfigDict(frozen=True, extra="ignore", hide_input_in_errors=True)

    broker_url: str | None = Field(default=None, alias=env.BROKER_URL)
    broker_host: str | None = Field(default=None, alias=env.BROKER_HOST)
    broker_port: int | None = Field(default=None, alias=env.BROKER_PORT)
    broker_auth_secret_arn: str | None = Field(default=None, alias=env.BROKER_AUTH_SECRET_ARN)

    @field_validator("broker_url", mode="before")
    @classmethod
    def _check_url(cls, value: object) -> str | None:
        url = str(value).strip()
        if not url:
            return None
        if urlsplit(url).scheme not in URL_SCHEMES:
            raise ValueError(
                f"{env.BROKER_URL}={redacted_url(url)!r}: not a redis://, rediss:// or unix:// URL"
            )
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
            raise ValueError(f"{env.BROKER_PORT}={raw!r}: not a TCP port (1-{MAX_PORT})")
        return int(raw)

    @model_validator(mode="after")
    def _one_broker(self) -> Self:
        aws = {
            env.BROKER_HOST: self.broker_host,
            env.BROKER_PORT: self.broker_port,
            env.BROKER_AUTH_SECRET_ARN: self.broker_auth_secret_arn,
        }
        given = [name for name, value in aws.items() if value is not None]
        if self.broker_url is not None and given:
            raise ValueError(
                f"{env.BROKER_URL} is set together with {', '.join(given)}: set {env.BROKER_URL} alone "
                f"(local runs) or {STACK_FORM} (a TLS broker in AWS)"
            )
        if self.broker_url is None and len(given) < len(aws):
            missing = [name for name in aws if name not in given]
            raise ValueError(
                f"broker not configured: {', '.join(missing)} not set. Set {env.BROKER_URL}, or all of "
                f"{STACK_FORM}"
            )
        return self


def _describe(error: Mapping[str, Any]) -> str:
    variable = ".".join(str(part) for part in error["loc"]) or "environment"
    if error["type"] == "missing":
        return f"{variable} is not set"
    context = error.get("ctx") or {}
    if "error" in context:
        # Our validators' messages already name the variable and its value.
        return str(context["error"])
    return f"{variable}: {error['msg']}"


def load(model: type[SettingsModel], environ: Mapping[str, str], *, function: str) -> SettingsModel:
    """`environ` validated into `model`; a SettingsError names every bad variable and its value."""
    try:
        return model.model_validate(dict(environ))
    except ValidationError as error:
        problems = "; ".join(_describe(item) for item in error.errors(include_url=False))
        raise SettingsError(f"invalid {function} environment: {problems}") from None
