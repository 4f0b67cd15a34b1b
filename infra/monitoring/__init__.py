"""Alarms, the paging composite, the alarm topic and the dashboard of a stage."""

from infra.monitoring.alarms import AlarmBook, Severity
from infra.monitoring.construct import Monitoring
from infra.monitoring.runbooks import RUNBOOK_FILE, Runbook

__all__ = ["RUNBOOK_FILE", "AlarmBook", "Monitoring", "Runbook", "Severity"]
