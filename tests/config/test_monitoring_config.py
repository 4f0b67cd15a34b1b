"""The [monitoring] section: who is notified and at which thresholds, validated with pinned messages."""

from __future__ import annotations

from typing import Any

import pytest

from infra.config import ConfigError, MonitoringConfig, parse_stage_config

BROKER = {"backlog_tasks": 100_000}
WORKERS = {"groups": {"default": {"queues": ["default"]}}}


def _stage(monitoring: dict[str, Any]) -> dict[str, Any]:
    return {"name": "test", "broker": dict(BROKER), "workers": WORKERS, "monitoring": monitoring}


def _problems(monitoring: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_stage_config(_stage(monitoring), source="test.toml")
    return caught.value.problems


CASES: list[tuple[str, dict[str, Any], str]] = [
    (
        "email without a domain",
        {"notify_emails": ["oncall"]},
        "monitoring.notify_emails: 'oncall' is not an email address; expected one address like "
        "name@example.com",
    ),
    (
        "two addresses in one string",
        {"notify_emails": ["a@example.com, b@example.com"]},
        "monitoring.notify_emails: 'a@example.com, b@example.com' is not an email address; expected one "
        "address like name@example.com",
    ),
    (
        "one address instead of a list",
        {"notify_emails": "a@example.com"},
        "monitoring.notify_emails: 'a@example.com' is not allowed: expected a list in brackets, e.g. "
        '["a", "b"]',
    ),
    (
        "address listed twice, differing in case",
        {"notify_emails": ["oncall@example.com", "OnCall@example.com"]},
        "monitoring.notify_emails: 'OnCall@example.com' is listed twice; SNS would mail it once anyway, "
        "list it once",
    ),
    (
        "slack as a channel name",
        {"slack": "#alerts"},
        "monitoring.slack: expected a table of settings, got '#alerts'",
    ),
    (
        "slack without a channel",
        {"slack": {"workspace_id": "T0123ABCDE"}},
        "monitoring.slack.channel_id: required key is missing",
    ),
    (
        "slack workspace in lowercase",
        {"slack": {"workspace_id": "t0123abcde", "channel_id": "C0123ABCDE"}},
        "monitoring.slack.workspace_id: 't0123abcde' is not a Slack workspace ID; expected uppercase letters "
        "and digits like T0123ABCDE (AWS Chatbot console, Configured clients)",
    ),
    (
        "slack channel given by name",
        {"slack": {"workspace_id": "T0123ABCDE", "channel_id": "#celery-alerts"}},
        "monitoring.slack.channel_id: '#celery-alerts' is not a Slack channel ID; expected letters and "
        "digits like C0123ABCDE (the ID from the channel's details, not its name)",
    ),
    (
        "unknown slack key",
        {"slack": {"workspace_id": "T0123ABCDE", "channel_id": "C0123ABCDE", "channel": "alerts"}},
        "monitoring.slack.channel: unknown key (value 'alerts'); allowed keys here: channel_id, workspace_id",
    ),
    (
        "page level below the warning level",
        {"broker_memory_page_percent": 60},
        "monitoring: broker_memory_page_percent=60 must be above broker_memory_warning_percent=70: the "
        "warning comes first",
    ),
    (
        "page level at 100 %",
        {"broker_memory_page_percent": 100},
        "monitoring.broker_memory_page_percent: 100 is not allowed: input should be less than or equal to 99",
    ),
    (
        "failure rate of zero",
        {"failure_rate_percent": 0},
        "monitoring.failure_rate_percent: 0 is not allowed: input should be greater than 0",
    ),
    (
        "failure rate above 100 %",
        {"failure_rate_percent": 150},
        "monitoring.failure_rate_percent: 150 is not allowed: input should be less than or equal to 100",
    ),
    (
        "no minimum volume",
        {"failure_rate_min_tasks": 0},
        "monitoring.failure_rate_min_tasks: 0 is not allowed: input should be greater than or equal to 1",
    ),
    (
        "backlog alarm faster than scaling from zero",
        {"backlog_without_workers_minutes": 2},
        "monitoring.backlog_without_workers_minutes: 2 is not allowed: input should be greater than or equal "
        "to 5",
    ),
    (
        "publisher silence of one minute",
        {"queue_metrics_missing_minutes": 1},
        "monitoring.queue_metrics_missing_minutes: 1 is not allowed: input should be greater than or equal "
        "to 2",
    ),
    (
        "misspelt key",
        {"notify_email": ["oncall@example.com"]},
        "monitoring.notify_email: unknown key (value ['oncall@example.com']); allowed keys here: "
        "backlog_without_workers_minutes, broker_connections_percent, broker_cpu_percent, "
        "broker_memory_page_percent, broker_memory_warning_percent, broker_replication_lag_s, "
        "failed_tasks_retention_days, failure_rate_min_tasks, failure_rate_percent, keep_failed_messages, "
        "notify_emails, "
        "queue_metrics_missing_minutes, retry_surge_per_5min, slack, tasks_not_starting_minutes, "
        "worker_cpu_percent, worker_memory_percent",
    ),
]


@pytest.mark.parametrize(("monitoring", "message"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_invalid_monitoring_setting_is_rejected_with_its_field_value_and_what_is_allowed(
    monitoring: dict[str, Any], message: str
) -> None:
    assert _problems(monitoring) == [message]


def test_by_default_nobody_is_subscribed() -> None:
    config = MonitoringConfig()
    assert (config.notify_emails, config.slack) == ([], None)


def test_addresses_and_slack_channel_are_accepted_as_given() -> None:
    config = parse_stage_config(
        _stage(
            {
                "notify_emails": ["oncall@example.com", "team+celery@example.co.uk"],
                "slack": {"workspace_id": "T0123ABCDE", "channel_id": "C0123ABCDE"},
            }
        )
    ).monitoring
    assert config.notify_emails == ["oncall@example.com", "team+celery@example.co.uk"]
    assert config.slack is not None
    assert (config.slack.workspace_id, config.slack.channel_id) == ("T0123ABCDE", "C0123ABCDE")
