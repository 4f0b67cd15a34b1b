"""The quality gates, run by the same command as every other test.

cfn-lint checks every template each shipped stage synthesizes; cdk-nag runs inside synth (see
tests/support/synth.py: an unacknowledged finding fails it); ruff and mypy check the project's Python.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.synth import ROOT, stage_config, synth

STAGES = sorted(p.stem for p in (ROOT / "config").glob("*.toml"))
PYTHON_SOURCES = [
    "app.py", "infra", "stacks", "lambdas", "runtime", "tests", "bench", "sample_app", "tools", "cli",
    "rehearse",
]  # fmt: skip


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=ROOT, capture_output=True, text=True, check=False)


@pytest.mark.parametrize("stage", STAGES)
def test_cfn_lint_finds_nothing_in_the_stage_templates(stage: str, tmp_path: Path) -> None:
    # synth() runs cdk-nag too: reaching cfn-lint means no unacknowledged finding.
    templates = synth(stage_config(stage), tmp_path).template_files()
    assert templates
    cfn_lint = str(Path(sys.executable).with_name("cfn-lint"))
    result = _run(cfn_lint, "--config-file", ".cfnlintrc.yaml", *map(str, templates))
    assert result.returncode == 0, result.stdout + result.stderr


def test_ruff_lint_is_clean() -> None:
    sources = [s for s in PYTHON_SOURCES if (ROOT / s).exists()]
    result = _run(sys.executable, "-m", "ruff", "check", *sources)
    assert result.returncode == 0, result.stdout + result.stderr


def test_ruff_format_is_clean() -> None:
    sources = [s for s in PYTHON_SOURCES if (ROOT / s).exists()]
    result = _run(sys.executable, "-m", "ruff", "format", "--check", *sources)
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_is_clean() -> None:
    sources = [s for s in PYTHON_SOURCES if (ROOT / s).exists()]
    result = _run(sys.executable, "-m", "mypy", *sources)
    assert result.returncode == 0, result.stdout + result.stderr


def test_synth_is_deterministic(tmp_path: Path) -> None:
    first = synth(stage_config("dev"), tmp_path / "first", nag=False).template_files()
    second = synth(stage_config("dev"), tmp_path / "second", nag=False).template_files()
    assert [p.name for p in first] == [p.name for p in second]
    for a, b in zip(first, second, strict=True):
        assert a.read_text() == b.read_text(), a.name
