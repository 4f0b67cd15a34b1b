"""Each shipped stage is synthesized once per session; tests read its templates."""

from __future__ import annotations

import pytest

from tests.support.synth import Synthesized, config_with, stage_config, synth


@pytest.fixture(scope="session")
def dev(tmp_path_factory: pytest.TempPathFactory) -> Synthesized:
    return synth(stage_config("dev"), tmp_path_factory.mktemp("cdk-dev"))


@pytest.fixture(scope="session")
def prod(tmp_path_factory: pytest.TempPathFactory) -> Synthesized:
    return synth(stage_config("prod"), tmp_path_factory.mktemp("cdk-prod"))


@pytest.fixture(scope="session")
def prod_high_resolution(tmp_path_factory: pytest.TempPathFactory) -> Synthesized:
    """prod with `workers.high_resolution_metrics` on: polls and scaling alarms every 10 s."""
    config = config_with("prod", {"workers": {"high_resolution_metrics": True}})
    return synth(config, tmp_path_factory.mktemp("cdk-prod-high-resolution"))
