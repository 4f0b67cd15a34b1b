"""How every alarm of a stage is made: one description format, one place deciding its actions."""

from __future__ import annotations

from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as cw_actions
from aws_cdk import aws_sns as sns
from constructs import Construct

from infra.metric_math import check_alarm_metrics
from infra.monitoring.runbooks import Runbook, Severity, runbook_link, severity_of

# CloudWatch's limit on AlarmDescription.
MAX_DESCRIPTION_CHARS = 1024


def describe(*, severity: Severity, stage: str, what: str, first_check: str, runbook: Runbook) -> str:
    """An alarm description: severity, what it means, the first thing to check, the runbook section."""
    link = runbook_link(runbook)
    text = f"[{severity.upper()}] celery-fleet {stage}: {what} First check: {first_check} {link}"
    if len(text) > MAX_DESCRIPTION_CHARS:
        raise ValueError(f"alarm description of {len(text)} characters exceeds CloudWatch's 1024: {text!r}")
    return text


class AlarmBook:
    """Creates the stage's alarms and keeps them by severity.

    Every alarm gets an explicit missing-data treatment (required here, never CloudWatch's default)
    and a description from `describe`; its severity is its runbook's (`runbooks.PAGES` lists the
    kinds that page). Warnings notify the topic on ALARM and on OK; pages carry no action of their
    own: the composite alarm built from `pages` notifies once per incident. An alarm that reads more
    metrics than CloudWatch accepts is refused here, at synth, by its construct path.
    """

    def __init__(self, *, stage: str, topic: sns.ITopic) -> None:
        self.stage = stage
        self.topic = topic
        self.pages: list[cloudwatch.Alarm] = []
        self.warnings: list[cloudwatch.Alarm] = []

    def add(
        self,
        scope: Construct,
        construct_id: str,
        *,
        metric: cloudwatch.IMetric,
        threshold: float,
        comparison: cloudwatch.ComparisonOperator,
        evaluation_periods: int,
        missing: cloudwatch.TreatMissingData,
        what: str,
        first_check: str,
        runbook: Runbook,
        datapoints_to_alarm: int | None = None,
    ) -> cloudwatch.Alarm:
        check_alarm_metrics(f"{scope.node.path}/{construct_id}", metric)
        level = severity_of(runbook)
        alarm = cloudwatch.Alarm(
            scope,
            construct_id,
            metric=metric,
            threshold=threshold,
            comparison_operator=comparison,
            evaluation_periods=evaluation_periods,
            datapoints_to_alarm=datapoints_to_alarm,
            treat_missing_data=missing,
            alarm_description=describe(
                severity=level, stage=self.stage, what=what, first_check=first_check, runbook=runbook
            ),
        )
        if level is Severity.PAGE:
            self.pages.append(alarm)
        else:
            action = cw_actions.SnsAction(self.topic)
            alarm.add_alarm_action(action)
            alarm.add_ok_action(action)
            self.warnings.append(alarm)
        return alarm

    def composite(self, scope: Construct, construct_id: str) -> cloudwatch.CompositeAlarm:
        """One alarm in ALARM while any page is: the only paging notification of the stage."""
        composite = cloudwatch.CompositeAlarm(
            scope,
            construct_id,
            alarm_rule=cloudwatch.AlarmRule.any_of(
                *(cloudwatch.AlarmRule.from_alarm(alarm, cloudwatch.AlarmState.ALARM) for alarm in self.pages)
            ),
            alarm_description=(
                f"[PAGE] celery-fleet {self.stage}: at least one paging alarm is in ALARM. The notification "
                "names the alarm(s) that triggered it; open that alarm's runbook section. First check: the "
                "dashboard's alarm row, to see every alarm of the stage at once. "
                f"{runbook_link(Runbook.PAGING)}"
            ),
        )
        action = cw_actions.SnsAction(self.topic)
        composite.add_alarm_action(action)
        composite.add_ok_action(action)
        return composite
