"""Metric math shared by every construct that exposes metrics, and CloudWatch's limit on what an alarm reads.

The metric objects (`Broker.metrics`, `QueueDepthPublisher.metrics`, `TaskEventIngester.metrics`)
combine series with `max_of` and `sum_of`; whoever creates an alarm calls `check_alarm_metrics`
first (`AlarmBook.add`, `BacklogScaling`). CDK refuses such an alarm too, but with "Alarms on math
expressions cannot contain more than 10 individual metrics", which names neither the alarm nor the
count; this error names both.
"""

from __future__ import annotations

from collections.abc import Sequence

from aws_cdk import Duration
from aws_cdk import aws_cloudwatch as cloudwatch

# CloudWatch refuses an alarm whose metric math reads more than 10 metrics (PutMetricAlarm).
MAX_METRICS_PER_ALARM = 10


class AlarmLimitError(ValueError):
    """An alarm reads more metrics than CloudWatch accepts."""


def metrics_read(metric: cloudwatch.IMetric) -> int:
    """How many metrics `metric` reads: 1 for a metric, every metric under a math expression (nested
    expressions included, as CloudFormation receives them flattened)."""
    if isinstance(metric, cloudwatch.MathExpression):
        return sum(metrics_read(inner) for inner in metric.using_metrics.values())
    return 1


def check_alarm_metrics(alarm: str, metric: cloudwatch.IMetric) -> None:
    """Refuse, at synth, an alarm named `alarm` (its construct path) whose `metric` reads too many."""
    count = metrics_read(metric)
    if count > MAX_METRICS_PER_ALARM:
        raise AlarmLimitError(
            f"alarm {alarm!r} reads {count} metrics; CloudWatch allows at most {MAX_METRICS_PER_ALARM} per "
            "alarm: read a pre-summed series (the publisher's per-group metrics) or split the alarm"
        )


def max_of(metrics: Sequence[cloudwatch.IMetric], *, label: str, period: Duration) -> cloudwatch.IMetric:
    """The highest of several time series at each timestamp (the metric itself when there is one)."""
    if len(metrics) == 1:
        return metrics[0]
    ids = {f"m{i}": metric for i, metric in enumerate(metrics)}
    return cloudwatch.MathExpression(
        expression=f"MAX([{', '.join(ids)}])", using_metrics=ids, label=label, period=period
    )


def sum_of(metrics: Sequence[cloudwatch.IMetric], *, label: str, period: Duration) -> cloudwatch.IMetric:
    """The sum of several counts, a missing count read as 0 (the metric itself when there is one)."""
    if len(metrics) == 1:
        return metrics[0]
    ids = {f"m{i}": metric for i, metric in enumerate(metrics)}
    return cloudwatch.MathExpression(
        expression=" + ".join(f"FILL({key}, 0)" for key in ids), using_metrics=ids, label=label, period=period
    )
