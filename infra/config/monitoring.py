"""Task events, alarms, dashboard and notifications."""

from __future__ import annotations

from pydantic import Field

from infra.config.base import ConfigModel
from infra.config.common import RetentionDays


class MonitoringConfig(ConfigModel):
    """How task outcomes are kept and who hears about problems.

    By default failed-task records (arguments, traceback) are kept 90 days in their own log group.
    """

    failed_tasks_retention_days: RetentionDays = Field(
        default=90, description="Days failed-task records (arguments, traceback) are kept."
    )
