"""The metrics a dashboard body plots, read as CloudWatch reads its metric arrays."""

from __future__ import annotations

from rehearse.run import _dashboard_metrics


def test_repeats_expand_to_the_previous_metric() -> None:
    body = {
        "widgets": [
            {
                "properties": {
                    "metrics": [
                        ["CeleryFleet/dev", "WaitingTasks", "Queue", "default", {"stat": "Maximum"}],
                        ["...", "Queue", "bulk"],
                        [".", "InFlightTasks", ".", "."],
                        [{"expression": "m1 + m2", "label": "sum"}],
                    ]
                }
            }
        ]
    }
    assert list(_dashboard_metrics(body)) == [
        ("CeleryFleet/dev", "WaitingTasks", frozenset({("Queue", "default")})),
        ("CeleryFleet/dev", "WaitingTasks", frozenset({("Queue", "bulk")})),
        ("CeleryFleet/dev", "InFlightTasks", frozenset({("Queue", "bulk")})),
    ]
