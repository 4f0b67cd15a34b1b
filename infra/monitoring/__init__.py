"""Alarms, the paging composite, the alarm topic and the dashboard of a stage."""

from infra.monitoring.alarms import AlarmBook
from infra.monitoring.construct import Monitoring
from infra.monitoring.runbooks import PAGES, RUNBOOK_FILE, Runbook, Severity

__all__ = ["PAGES", "RUNBOOK_FILE", "AlarmBook", "Monitoring", "Runbook", "Severity"]
