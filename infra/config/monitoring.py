"""Task events, alarms, dashboard and notifications."""

from __future__ import annotations

import re

from pydantic import Field, field_validator, model_validator

from infra.config.base import ConfigModel, short
from infra.config.common import RetentionDays

# Deliberately loose: SNS checks deliverability itself (it mails a confirmation link). This only
# catches what is certainly not an address: a missing @, a missing domain, spaces, a list in a string.
_EMAIL = re.compile(r"^[^@\s,;]+@[^@\s,;]+\.[A-Za-z]{2,}$")
_SLACK_WORKSPACE = re.compile(r"^[0-9A-Z]{1,255}$")
_SLACK_CHANNEL = re.compile(r"^[A-Za-z0-9]{1,255}$")


class SlackChannelConfig(ConfigModel):
    """A Slack channel that receives every notification of the stage's topic through AWS Chatbot.

    Authorize the Slack workspace once in the AWS Chatbot console first (an OAuth step no template can
    do); a private channel also needs `/invite @aws`. The channel gets notifications only: its guardrail
    is read-only, so nobody can run commands against the account from Slack.
    """

    workspace_id: str = Field(
        description="Slack workspace (team) ID, e.g. T0123ABCDE: AWS Chatbot console, Configured clients."
    )
    channel_id: str = Field(
        description="Slack channel ID, e.g. C0123ABCDE: the channel's details in Slack, at the bottom."
    )

    @field_validator("workspace_id")
    @classmethod
    def _workspace(cls, value: str) -> str:
        # AWS::Chatbot::SlackChannelConfiguration's own pattern for SlackWorkspaceId.
        if not _SLACK_WORKSPACE.fullmatch(value):
            raise ValueError(
                f"{short(value)} is not a Slack workspace ID; expected uppercase letters and digits like "
                "T0123ABCDE (AWS Chatbot console, Configured clients)"
            )
        return value

    @field_validator("channel_id")
    @classmethod
    def _channel(cls, value: str) -> str:
        if not _SLACK_CHANNEL.fullmatch(value):
            raise ValueError(
                f"{short(value)} is not a Slack channel ID; expected letters and digits like C0123ABCDE "
                "(the ID from the channel's details, not its name)"
            )
        return value


class MonitoringConfig(ConfigModel):
    """How task outcomes are kept, what is alarmed, and who hears about it.

    By default failed-task records (arguments, traceback) are kept 90 days in their own log group; every
    stage gets a KMS-encrypted SNS topic, its alarms and a dashboard, but no subscriber: add
    `notify_emails` or `slack`. Paging alarms (docs/alarms.md lists which they are) reach the topic
    once per incident through one composite alarm; warnings reach it directly. Each threshold below
    says why its default is what it is; docs/alarms.md lists every alarm as deployed,
    docs/runbooks.md says what to do.
    """

    failed_tasks_retention_days: RetentionDays = Field(
        default=90, description="Days failed-task records (arguments, traceback) are kept."
    )
    keep_failed_messages: bool = Field(
        default=True,
        description="Keep each failed task's whole message (encrypted S3, failed_tasks_retention_days) so "
        "`celery-fleet replay` can send it again; false keeps only the failure record.",
    )
    notify_emails: list[str] = Field(
        default_factory=list,
        description="Addresses subscribed to the stage's alarm topic; each confirms by a link SNS mails.",
    )
    slack: SlackChannelConfig | None = Field(
        default=None,
        description="Slack channel for the same notifications, through AWS Chatbot; unset: none.",
    )
    broker_memory_warning_percent: int = Field(
        default=70,
        ge=10,
        le=99,
        description="Warn above this share of the broker's usable memory (DatabaseMemoryUsagePercentage: "
        "the engine's maxmemory is what ElastiCache's 25 % reserve leaves). Sizing keeps the declared "
        "peak backlog at or below 67 % of it with the default 50 % headroom (synth prints the actual "
        "share), so more means a backlog beyond the plan.",
    )
    broker_memory_page_percent: int = Field(
        default=85,
        ge=10,
        le=99,
        description="Page above this share: at 100 % the broker (noeviction) refuses every new task.",
    )
    broker_cpu_percent: int = Field(
        default=90,
        ge=10,
        le=100,
        description="Warn when the broker's engine thread is busier than this for 15 minutes.",
    )
    broker_connections_percent: int = Field(
        default=80,
        ge=10,
        le=100,
        description="Warn when a broker node holds more than this share of its maxclients connections.",
    )
    broker_replication_lag_s: int = Field(
        default=30,
        ge=1,
        le=3600,
        description="Warn when a replica trails the primary by more than this for 5 minutes: a failover "
        "then would lose that much of the queue.",
    )
    failure_rate_percent: float = Field(
        default=10.0,
        gt=0,
        le=100,
        description="Page when more than this share of a worker group's finished tasks fail, two 5-minute "
        "windows in a row.",
    )
    failure_rate_min_tasks: int = Field(
        default=20,
        ge=1,
        description="Finished tasks a 5-minute window needs before its failure rate counts (1 failure of "
        "2 tasks is not an incident).",
    )
    retry_surge_per_5min: int = Field(
        default=500,
        ge=1,
        description="Warn when a worker group's tasks retry more than this in 5 minutes (a dependency "
        "failing under them).",
    )
    worker_cpu_percent: int = Field(
        default=90,
        ge=10,
        le=100,
        description="Warn when a worker group's average CPU stays above this for 15 minutes.",
    )
    worker_memory_percent: int = Field(
        default=90,
        ge=10,
        le=100,
        description="Warn when a worker task's memory stays above this share of its limit for 5 minutes "
        "(the OOM killer is next).",
    )
    backlog_without_workers_minutes: int = Field(
        default=10,
        ge=5,
        le=60,
        description="Page when tasks wait this long with no worker of their group running; scaling from "
        "zero normally has one consuming within 3 minutes (`python -m tools.scaling_response` prints it).",
    )
    tasks_not_starting_minutes: int = Field(
        default=15,
        ge=5,
        le=120,
        description="Warn when a worker group runs fewer tasks than desired for this long (tasks failing "
        "to start or crashing).",
    )
    queue_metrics_missing_minutes: int = Field(
        default=5,
        ge=2,
        le=60,
        description="Page when the queue-depth publisher has published nothing for this long: scaling "
        "and queue alarms are blind meanwhile.",
    )

    @field_validator("notify_emails")
    @classmethod
    def _emails(cls, emails: list[str]) -> list[str]:
        for email in emails:
            if not _EMAIL.fullmatch(email):
                raise ValueError(
                    f"{short(email)} is not an email address; expected one address like name@example.com"
                )
        seen: set[str] = set()
        for email in emails:
            if email.lower() in seen:
                raise ValueError(
                    f"{short(email)} is listed twice; SNS would mail it once anyway, list it once"
                )
            seen.add(email.lower())
        return emails

    @model_validator(mode="after")
    def _levels(self) -> MonitoringConfig:
        if self.broker_memory_page_percent <= self.broker_memory_warning_percent:
            raise ValueError(
                f"broker_memory_page_percent={self.broker_memory_page_percent} must be above "
                f"broker_memory_warning_percent={self.broker_memory_warning_percent}: the warning comes first"
            )
        return self
