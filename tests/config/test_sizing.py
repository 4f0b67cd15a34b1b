"""Broker sizing: the smallest node that holds the declared backlog, or a synth error with the numbers."""

from __future__ import annotations

import pytest

from infra.broker.sizing import (
    BASELINE_BYTES,
    DEFAULT_MESSAGE_BYTES,
    MARGIN_PERCENT,
    MEASURED_CURVE,
    NODE_TYPES,
    SizingError,
    bytes_per_task,
    modelled_bytes_per_task,
    size_broker,
    uncompressed_bytes_per_task,
)
from infra.config import BrokerConfig


def _broker(**values: object) -> BrokerConfig:
    return BrokerConfig.model_validate({"backlog_tasks": 1_000_000, **values})


def test_default_is_a_small_task_as_configure_sends_it_within_300_bytes() -> None:
    assert bytes_per_task(_broker()) == modelled_bytes_per_task(DEFAULT_MESSAGE_BYTES)
    assert bytes_per_task(_broker()) <= 300


@pytest.mark.parametrize(("message_bytes", "measured"), MEASURED_CURVE)
def test_the_model_holds_every_measured_point_with_its_margin(message_bytes: int, measured: int) -> None:
    assert modelled_bytes_per_task(message_bytes) >= min(
        measured * (100 + MARGIN_PERCENT) / 100, uncompressed_bytes_per_task(message_bytes)
    )


def test_a_larger_message_never_costs_less() -> None:
    costs = [modelled_bytes_per_task(size) for size in range(200, 12_000, 10)]
    assert costs == sorted(costs)


def test_between_measured_sizes_the_model_interpolates() -> None:
    # Halfway between (1290, 523) and (1518, 623): 573 B, plus the 20 % margin.
    assert modelled_bytes_per_task(1404) == 688


def test_beyond_the_measured_curve_an_uncompressed_list_is_assumed() -> None:
    largest = max(size for size, _ in MEASURED_CURVE)
    assert modelled_bytes_per_task(largest + 1) == uncompressed_bytes_per_task(largest + 1)
    assert uncompressed_bytes_per_task(10_000) == 10_816


def test_a_declared_message_size_reads_the_curve() -> None:
    assert bytes_per_task(_broker(message_bytes=1290)) == modelled_bytes_per_task(1290)


def test_a_measured_bytes_per_task_overrides_the_model() -> None:
    assert bytes_per_task(_broker(bytes_per_task=900, message_bytes=5000)) == 900


def test_prediction_is_backlog_times_bytes_per_task_plus_baseline() -> None:
    sizing = size_broker(_broker(bytes_per_task=1000, headroom_percent=0))
    assert sizing.predicted_bytes == BASELINE_BYTES + 1_000_000_000
    assert sizing.required_bytes == sizing.predicted_bytes


def test_headroom_is_added_to_the_prediction() -> None:
    sizing = size_broker(_broker(bytes_per_task=1000, headroom_percent=50))
    assert sizing.required_bytes == sizing.predicted_bytes * 3 // 2


def test_the_smallest_node_that_holds_the_backlog_is_chosen() -> None:
    sizing = size_broker(_broker(backlog_tasks=1_500_000))
    fitting = [n for n in NODE_TYPES if not n.burstable and n.usable_bytes >= sizing.required_bytes]
    assert sizing.node_type == fitting[0].name
    smaller = [n for n in NODE_TYPES if not n.burstable and n.usable_bytes < fitting[0].usable_bytes]
    assert all(n.usable_bytes < sizing.required_bytes for n in smaller)


def test_usable_memory_leaves_elasticache_reserved_quarter() -> None:
    node = next(n for n in NODE_TYPES if n.name == "cache.r7g.large")
    assert node.usable_bytes == 14_037_181_030 * 3 // 4


def test_burstable_nodes_are_skipped_unless_allowed() -> None:
    assert size_broker(_broker(backlog_tasks=1000)).node_type == "cache.m7g.large"
    assert size_broker(_broker(backlog_tasks=1000, allow_burstable_nodes=True)).node_type == "cache.t4g.micro"


def test_users_million_task_backlog_outgrows_their_old_250_mb_broker() -> None:
    sizing = size_broker(_broker(backlog_tasks=1_000_000, headroom_percent=0))
    assert sizing.predicted_bytes > 250 * 1024**2


def test_explicit_node_type_that_fits_is_kept() -> None:
    assert size_broker(_broker(node_type="cache.r7g.xlarge")).node_type == "cache.r7g.xlarge"


def test_explicit_node_type_too_small_fails_with_the_numbers() -> None:
    with pytest.raises(SizingError) as caught:
        size_broker(_broker(node_type="cache.t4g.micro", backlog_tasks=2_000_000, bytes_per_task=522))
    message = str(caught.value)
    assert message.startswith(
        "broker.node_type='cache.t4g.micro' holds 0.38 GiB usable (25 % of maxmemory reserved)"
    )
    assert (
        "backlog_tasks=2,000,000 x 522 B/task + 64 MiB baseline = 1.03 GiB, +50 % headroom = 1.55 GiB needed"
        in message
    )


def test_unknown_node_type_lists_the_known_ones() -> None:
    with pytest.raises(
        SizingError, match=r"broker.node_type='cache.x9.huge' is not a known node type; known: "
    ):
        size_broker(_broker(node_type="cache.x9.huge"))


def test_a_backlog_no_node_holds_fails_naming_the_largest() -> None:
    with pytest.raises(
        SizingError, match=r"no node type holds the backlog: .* the largest, cache.r7g.16xlarge"
    ):
        size_broker(_broker(backlog_tasks=1_000_000_000, bytes_per_task=20_000))


def test_summary_states_node_and_memory() -> None:
    summary = size_broker(_broker(backlog_tasks=1_500_000)).summary()
    assert summary.startswith(size_broker(_broker(backlog_tasks=1_500_000)).node_type)
    assert "GiB at peak backlog" in summary
