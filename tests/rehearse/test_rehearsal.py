"""The rehearsal of shipped stages (and one with beat) from their cloud assemblies: every check passes."""

from __future__ import annotations

import pytest

from rehearse.run import Options, Report, rehearse
from tests.rehearse.conftest import Synthesize, requires_root

pytestmark = [pytest.mark.slow, requires_root()]

# Every rehearsal checks at least these, whatever the stage holds.
ALWAYS = (
    "broker AUTH token",
    "broker TLS only",
    "broker parameter group applied",
    "broker refuses plain text",
    "producer",
    "publisher with a backlog and no worker",
    "workload drained",
    "publisher after the backlog drained",
    "task events succeeded",
    "task events failed",
    "task events retried",
    "failure records",
    "metrics read were published",
)


def _failures(report: Report) -> str:
    return "\n".join(check.line() for check in report.checks if not check.passed)


def _names(report: Report) -> list[str]:
    return [check.name for check in report.checks]


def _per_service(report: Report, suffix: str) -> list[str]:
    return [name for name in _names(report) if name.endswith(suffix)]


def test_dev_passes_every_check(assembly_of: Synthesize) -> None:
    report = rehearse(Options(stage="dev", assembly=assembly_of("dev")))
    assert report.passed, _failures(report)
    assert set(ALWAYS) <= set(_names(report))
    # dev's two worker groups scale from zero: both from-zero alarms fire on the backlog.
    assert len([n for n in _names(report) if n.startswith("scale from zero")]) == 2
    assert len(_per_service(report, "health check while consuming")) == 2
    assert len(_per_service(report, "health check after stopping")) == 2
    assert len([n for n in _names(report) if n.startswith("IAM ") and "execution role" in n]) == 2


def test_prod_passes_every_check(assembly_of: Synthesize) -> None:
    report = rehearse(Options(stage="prod", assembly=assembly_of("prod")))
    assert report.passed, _failures(report)
    assert set(ALWAYS) <= set(_names(report))
    assert len(_per_service(report, "stops on SIGTERM")) == 2


def test_a_stage_with_beat_passes_every_check(assembly_of: Synthesize) -> None:
    report = rehearse(Options(config="tests/rehearse/beat.toml", assembly=assembly_of("beat")))
    assert report.passed, _failures(report)
    assert set(ALWAYS) <= set(_names(report))
    beat = [n for n in _names(report) if "Beat" in n and n.endswith("keeps running")]
    assert beat, _names(report)
