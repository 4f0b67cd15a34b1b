"""Pydantic models of what the Lambda reads: its environment and one task-event line."""

from __future__ import annotations

from collections.abc import Mapping

from celery_fleet.contract import task_events as te
from celery_fleet.contract.task_events import EventType
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

# Longest line accepted: the worker writes at most MAX_LINE_BYTES; a line many times that long was
# not written by it, and is refused before it is parsed.
MAX_ACCEPTED_LINE_CHARS = 16 * te.MAX_LINE_BYTES

METRIC_NAMESPACE_ENV = "METRIC_NAMESPACE"
FAILED_TASKS_LOG_GROUP_ENV = "FAILED_TASKS_LOG_GROUP"


class Settings(BaseModel):
    """The Lambda's environment, validated once at cold start."""

    model_config = ConfigDict(frozen=True)

    metric_namespace: str = Field(min_length=1, max_length=255)
    # CloudWatch Logs log group names: 1-512 of [.-_/#A-Za-z0-9].
    failed_tasks_log_group: str = Field(min_length=1, max_length=512, pattern=r"^[.\-_/#A-Za-z0-9]+$")

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> Settings:
        """The settings from `environ`, or a ValueError naming each missing or invalid variable."""
        names = {
            "metric_namespace": METRIC_NAMESPACE_ENV,
            "failed_tasks_log_group": FAILED_TASKS_LOG_GROUP_ENV,
        }
        missing = [env for env in names.values() if not environ.get(env)]
        if missing:
            raise ValueError(f"task_events: environment variable(s) {', '.join(missing)} must be set")
        try:
            return cls(**{field: environ[env] for field, env in names.items()})
        except ValidationError as exc:
            problems = "; ".join(
                f"{names.get(str(error['loc'][0]), error['loc'][0])}={error['input']!r}: {error['msg']}"
                for error in exc.errors()
            )
            raise ValueError(f"task_events: invalid environment: {problems}") from None


class TaskEventLine(BaseModel):
    """One line of `celery_fleet.contract.task_events`, schema version `SCHEMA_VERSION`."""

    # Only keys are worth pydantic's string cache: values (task ids, times) rarely repeat.
    model_config = ConfigDict(frozen=True, extra="ignore", populate_by_name=True, cache_strings="keys")

    marker: str = Field(alias=te.MARKER_KEY)
    version: int = Field(alias=te.F_VERSION)
    event: EventType = Field(alias=te.F_EVENT)
    task_id: str = Field(alias=te.F_TASK_ID)
    task: str = Field(alias=te.F_TASK)
    queue: str | None = Field(alias=te.F_QUEUE)
    worker: str | None = Field(alias=te.F_WORKER)
    retries: int = Field(alias=te.F_RETRIES, ge=0)
    ts: str = Field(alias=te.F_TIMESTAMP, min_length=1)
    runtime_s: float | None = Field(alias=te.F_RUNTIME, ge=0)
    queue_wait_s: float | None = Field(alias=te.F_QUEUE_WAIT, ge=0)
    exc_type: str | None = Field(default=None, alias=te.F_EXC_TYPE)
    exc_message: str | None = Field(default=None, alias=te.F_EXC_MESSAGE)
    traceback: str | None = Field(default=None, alias=te.F_TRACEBACK)
    args: str | None = Field(default=None, alias=te.F_ARGS)
    kwargs: str | None = Field(default=None, alias=te.F_KWARGS)

    @field_validator("marker")
    @classmethod
    def _is_task_event(cls, value: str) -> str:
        if value != te.MARKER_VALUE:
            raise ValueError(f"not a task event: {te.MARKER_KEY}={value!r}")
        return value

    @field_validator("version")
    @classmethod
    def _known_version(cls, value: int) -> int:
        if value != te.SCHEMA_VERSION:
            raise ValueError(f"schema version {value} is not {te.SCHEMA_VERSION}")
        return value
