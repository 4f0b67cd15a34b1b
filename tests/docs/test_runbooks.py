"""docs/runbooks.md covers every alarm of every stage, and each section says what to do."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import pytest

from infra.monitoring.runbooks import PAGES, RUNBOOK_FILE, Runbook
from tests.docs.markdown import github_anchor, local_links, sections
from tests.support.synth import ROOT

RUNBOOKS = (ROOT / RUNBOOK_FILE).read_text(encoding="utf-8")
ALARM_TYPES = ("AWS::CloudWatch::Alarm", "AWS::CloudWatch::CompositeAlarm")
LINK = re.compile(r"Runbook: docs/runbooks\.md#([^\s]+)")
# What a person needs at 3 a.m., in this order, in every alarm's section.
PARTS = ("**Symptom.**", "**Likely causes", "**Check.**", "**Recover.**")

Templates = Mapping[str, Mapping[str, Mapping[str, Any]]]


def _alarm_descriptions(templates: Templates) -> dict[str, str]:
    """'stage/stack/logical id' -> AlarmDescription of every alarm of every stage."""
    return {
        f"{stage}/{stack}/{logical_id}": resource["Properties"].get("AlarmDescription", "")
        for stage, stacks in templates.items()
        for stack, template in stacks.items()
        for logical_id, resource in template.get("Resources", {}).items()
        if resource["Type"] in ALARM_TYPES
    }


def test_every_alarm_of_every_stage_names_a_runbook_section(templates: Templates) -> None:
    descriptions = _alarm_descriptions(templates)
    assert descriptions
    assert [alarm for alarm, text in descriptions.items() if not LINK.search(text)] == []


def test_every_runbook_section_an_alarm_names_exists(templates: Templates) -> None:
    anchors = sections(RUNBOOKS)
    missing = {
        alarm: match.group(1)
        for alarm, text in _alarm_descriptions(templates).items()
        if (match := LINK.search(text)) and match.group(1) not in anchors
    }
    assert missing == {}, f"add these sections to {RUNBOOK_FILE}"


@pytest.mark.parametrize("anchor", [r.value for r in Runbook])
def test_each_runbook_section_has_symptom_causes_checks_and_recovery(anchor: str) -> None:
    text = sections(RUNBOOKS)[anchor]
    positions = [text.find(part) for part in PARTS]
    assert -1 not in positions, dict(zip(PARTS, positions, strict=True))
    assert positions == sorted(positions)


def test_the_paging_alarm_section_names_exactly_the_kinds_that_page() -> None:
    # infra/monitoring/runbooks.py's PAGES decides which alarms page; the person paged reads this list.
    symptom = sections(RUNBOOKS)[Runbook.PAGING.value].split("**Likely causes")[0]
    assert local_links(symptom) == [page.value for page in PAGES]


def test_links_between_runbook_sections_resolve() -> None:
    anchors = sections(RUNBOOKS)
    assert [link for link in local_links(RUNBOOKS) if link not in anchors] == []


@pytest.mark.parametrize(
    ("heading", "anchor"),
    [
        ("Broker engine CPU high", "broker-engine-cpu-high"),
        ("Queue-depth publisher errors", "queue-depth-publisher-errors"),
        ("`celery_fleet` events: what, why?", "celery_fleet-events-what-why"),
    ],
)
def test_anchors_are_computed_as_github_does(heading: str, anchor: str) -> None:
    assert github_anchor(heading) == anchor


def test_repeated_headings_get_numbered_anchors() -> None:
    assert list(sections("## Check\na\n## Check\nb\n")) == ["check", "check-1"]
