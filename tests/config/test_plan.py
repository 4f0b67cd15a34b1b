"""The broker plan against the memory alarms: a declared peak that would page is refused at synth."""

from __future__ import annotations

from typing import Any

import pytest
from aws_cdk import App

from infra.broker.sizing import size_broker
from infra.config import ConfigError, StageConfig, parse_stage_config
from infra.config.plan import check_broker_plan, min_headroom_percent
from stacks.stage import build_stage


def _config(**broker: Any) -> StageConfig:
    # A measured bytes_per_task, so that the figures follow from this test, not from the sizing model.
    broker = {"bytes_per_task": 521, **broker}
    raw = {"name": "plan", "broker": broker, "workers": {"groups": {"default": {"queues": ["default"]}}}}
    return parse_stage_config(raw, source="test.toml")


def test_headroom_that_leaves_the_peak_above_the_paging_threshold_is_refused() -> None:
    config = _config(backlog_tasks=9_000_000, headroom_percent=0)
    with pytest.raises(ConfigError) as caught:
        check_broker_plan(config, size_broker(config.broker))
    assert caught.value.problems == [
        "broker.headroom_percent=0: the declared peak (backlog_tasks=9,000,000) fills 93 % of "
        "cache.m7g.large's usable memory, above monitoring.broker_memory_page_percent=85: the planned peak "
        "would page on-call. Raise broker.headroom_percent to at least 18, or raise the paging threshold"
    ]


def test_headroom_that_leaves_the_peak_above_the_warning_threshold_warns() -> None:
    config = _config(backlog_tasks=8_000_000, headroom_percent=0)
    assert check_broker_plan(config, size_broker(config.broker)) == [
        "broker.headroom_percent=0: the declared peak fills 82 % of cache.m7g.large's usable memory, above "
        "monitoring.broker_memory_warning_percent=70: the planned peak will raise the memory warning "
        "(headroom_percent=43 keeps it below)"
    ]


@pytest.mark.parametrize("threshold", [70, 85, 99])
def test_the_suggested_headroom_keeps_the_peak_at_the_threshold(threshold: int) -> None:
    headroom = min_headroom_percent(threshold)
    assert 100 * 100 / (100 + headroom) <= threshold < 100 * 100 / (100 + headroom - 1)


def test_default_headroom_stays_below_the_default_warning() -> None:
    config = _config(backlog_tasks=9_000_000)
    assert check_broker_plan(config, size_broker(config.broker)) == []


def test_synth_refuses_the_plan_before_building_anything() -> None:
    app = App()
    with pytest.raises(ConfigError, match=r"would page on-call"):
        build_stage(app, _config(backlog_tasks=9_000_000, headroom_percent=0))
    assert app.node.children == []
