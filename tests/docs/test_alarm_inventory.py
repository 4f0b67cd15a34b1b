"""docs/alarms.md is what the current code deploys, so a pull request that changes an alarm shows it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from infra.monitoring.runbooks import PAGES
from tools.alarm_inventory import COMMAND, INVENTORY, composite_children, render, runbook_anchor, severity

Templates = Mapping[str, Mapping[str, Mapping[str, Any]]]


def test_committed_inventory_matches_the_synthesized_stages(templates: Templates) -> None:
    committed = INVENTORY.read_text(encoding="utf-8") if INVENTORY.exists() else ""
    assert render(templates) == committed, f"docs/alarms.md is stale: run `{COMMAND}` and commit the result"


def test_inventory_lists_every_alarm_of_every_stage(templates: Templates) -> None:
    text = render(templates)
    for stage, stacks in templates.items():
        assert f"## Stage `{stage}`" in text
        for template in stacks.values():
            for logical_id, resource in template.get("Resources", {}).items():
                if resource["Type"] in ("AWS::CloudWatch::Alarm", "AWS::CloudWatch::CompositeAlarm"):
                    assert f"| `{logical_id}` |" in text


def test_the_alarms_that_page_in_every_stage_are_those_of_the_one_paging_list(templates: Templates) -> None:
    for stage, stacks in templates.items():
        for template in stacks.values():
            resources = template.get("Resources", {})
            paged_by = composite_children(template)
            for logical_id, alarm in resources.items():
                if alarm["Type"] != "AWS::CloudWatch::Alarm":
                    continue
                level = severity(logical_id, alarm, resources, paged_by)
                if level != "scaling":
                    assert (level == "page") == (runbook_anchor(alarm) in PAGES), f"{stage}: {logical_id}"


def test_inventory_lists_the_kinds_that_page() -> None:
    text = render({})
    assert ", ".join(f"[{page.value}](runbooks.md#{page.value})" for page in PAGES) in text


def test_inventory_shows_a_threshold_change() -> None:
    properties: dict[str, Any] = {
        "AlarmDescription": "[WARNING] x Runbook: docs/runbooks.md#retry-surge",
        "Namespace": "CeleryFleet/dev",
        "MetricName": "Retried",
        "Statistic": "Sum",
        "Period": 300,
        "EvaluationPeriods": 1,
        "ComparisonOperator": "GreaterThanThreshold",
        "Threshold": 500,
        "TreatMissingData": "notBreaching",
    }
    alarm = {"Type": "AWS::CloudWatch::Alarm", "Properties": properties}
    changed = {"Type": "AWS::CloudWatch::Alarm", "Properties": {**properties, "Threshold": 2000}}
    before = render({"dev": {"Stack": {"Resources": {"RetrySurge": alarm}}}})
    after = render({"dev": {"Stack": {"Resources": {"RetrySurge": changed}}}})
    assert "| > 500 |" in before
    assert "| > 2,000 |" in after
