"""The metric-math subset the rehearsal evaluates scaling alarms with."""

from __future__ import annotations

import pytest

from rehearse.metric_math import MetricMathError, evaluate

FROM_ZERO = "IF(FILL(running, 0) < 1, w0, 0)"


def test_from_zero_expression_is_the_backlog_while_no_task_runs() -> None:
    assert evaluate(FROM_ZERO, {"running": None, "w0": 7.0}) == 7.0
    assert evaluate(FROM_ZERO, {"running": 0.0, "w0": 7.0}) == 7.0


def test_from_zero_expression_is_zero_once_a_task_runs() -> None:
    assert evaluate(FROM_ZERO, {"running": 1.0, "w0": 7.0}) == 0.0


def test_arithmetic_on_a_metric_without_data_has_no_value() -> None:
    assert evaluate("(w0 + w1) / running", {"w0": 4.0, "w1": 2.0, "running": 2.0}) == 3.0
    assert evaluate("(w0 + w1) / running", {"w0": 4.0, "w1": None, "running": 2.0}) is None
    assert evaluate("w0 / running", {"w0": 4.0, "running": 0.0}) is None


def test_unsupported_functions_are_refused() -> None:
    with pytest.raises(MetricMathError, match="not supported"):
        evaluate("ANOMALY_DETECTION_BAND(m1)", {"m1": 1.0})
    with pytest.raises(MetricMathError, match="no metric"):
        evaluate("m9 + 1", {"m1": 1.0})
