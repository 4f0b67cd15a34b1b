"""Checks that need the broker's sizing as well as the config: run once the node is chosen."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from infra.config import ConfigError, StageConfig

if TYPE_CHECKING:
    from infra.broker.sizing import BrokerSizing


def min_headroom_percent(threshold_percent: int) -> int:
    """The headroom with which auto-sizing keeps the declared peak at or below `threshold_percent`.

    Sizing picks a node whose usable memory holds the peak times (100 + headroom) %, so the peak
    fills at most 100 / (1 + headroom/100) % of it.
    """
    return max(0, math.ceil(100 * 100 / threshold_percent - 100))


def check_broker_plan(config: StageConfig, sizing: BrokerSizing) -> list[str]:
    """Refuse a plan whose own peak would page; return a warning when it would reach the warning level.

    The alarms read the share of usable memory in use, the same figure the sizing fills, so a
    declared peak above the paging threshold pages on-call every time the plan works as intended.
    """
    broker, monitoring = config.broker, config.monitoring
    share = 100 * sizing.predicted_bytes / sizing.usable_bytes
    page, warning = monitoring.broker_memory_page_percent, monitoring.broker_memory_warning_percent
    where = (
        f"node_type={broker.node_type!r}"
        if broker.node_type is not None
        else f"headroom_percent={broker.headroom_percent}"
    )
    fix = (
        "choose a larger broker.node_type"
        if broker.node_type is not None
        else f"raise broker.headroom_percent to at least {min_headroom_percent(page)}"
    )
    if share > page:
        raise ConfigError(
            f"stage {config.name!r}",
            [
                f"broker.{where}: the declared peak (backlog_tasks={broker.backlog_tasks:,}) fills "
                f"{share:.0f} % of {sizing.node_type}'s usable memory, above "
                f"monitoring.broker_memory_page_percent={page}: the planned peak would page on-call. "
                f"{fix[0].upper()}{fix[1:]}, or raise the paging threshold"
            ],
        )
    if share > warning:
        return [
            f"broker.{where}: the declared peak fills {share:.0f} % of {sizing.node_type}'s usable memory, "
            f"above monitoring.broker_memory_warning_percent={warning}: the planned peak will raise the "
            "memory warning"
            + (
                ""
                if broker.node_type is not None
                else f" (headroom_percent={min_headroom_percent(warning)} keeps it below)"
            )
        ]
    return []
