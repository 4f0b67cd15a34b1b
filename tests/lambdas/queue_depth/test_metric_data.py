"""metric_data and the PutMetricData batching: pure functions of a poll's figures."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from celery_fleet.contract.queue_metrics import (
    GROUP_DIMENSION,
    IN_FLIGHT_TASKS,
    OLDEST_TASK_AGE,
    QUEUE_DIMENSION,
    WAITING_TASKS,
)
from queue_depth.logic import (
    MAX_ITEMS_PER_CALL,
    QueueStats,
    batches,
    metric_data,
    publish,
)

from tests.lambdas.queue_depth.conftest import NAMESPACE, metric_count, observe_put_metric_data

POLLED_AT = 1_800_000_000.0


def stats(**overrides: Any) -> QueueStats:
    fields: dict[str, Any] = {
        "polled_at": POLLED_AT,
        "waiting": {"alpha": 7, "beta": 0},
        "oldest_age_s": {"alpha": 42.5},
        # One of the three in flight belongs to no configured queue.
        "in_flight": 3,
        "in_flight_by_queue": {"alpha": 2, "beta": 0},
    }
    return QueueStats(**(fields | overrides))


def by_name_and_queue(data: list[dict[str, Any]]) -> dict[tuple[str, str | None], dict[str, Any]]:
    return {
        (datum["MetricName"], datum["Dimensions"][0]["Value"] if "Dimensions" in datum else None): datum
        for datum in data
    }


def test_waiting_tasks_per_queue_are_counts_with_the_queue_dimension() -> None:
    data = by_name_and_queue(metric_data(stats()))

    alpha = data[(WAITING_TASKS, "alpha")]
    assert (alpha["Value"], alpha["Unit"]) == (7.0, "Count")
    assert alpha["Dimensions"] == [{"Name": QUEUE_DIMENSION, "Value": "alpha"}]
    assert data[(WAITING_TASKS, "beta")]["Value"] == 0.0


def test_oldest_age_is_in_seconds_and_only_for_queues_that_have_one() -> None:
    data = by_name_and_queue(metric_data(stats()))

    age = data[(OLDEST_TASK_AGE, "alpha")]
    assert (age["Value"], age["Unit"]) == (42.5, "Seconds")
    assert (OLDEST_TASK_AGE, "beta") not in data


def test_broker_wide_in_flight_is_published_once_without_a_queue_dimension() -> None:
    data = metric_data(stats())

    broker_wide = [d for d in data if d["MetricName"] == IN_FLIGHT_TASKS and "Dimensions" not in d]
    assert len(broker_wide) == 1
    assert (broker_wide[0]["Value"], broker_wide[0]["Unit"]) == (3.0, "Count")


def test_in_flight_per_queue_is_published_for_every_queue_zero_included() -> None:
    data = by_name_and_queue(metric_data(stats()))

    alpha, beta = data[(IN_FLIGHT_TASKS, "alpha")], data[(IN_FLIGHT_TASKS, "beta")]
    assert (alpha["Value"], alpha["Unit"]) == (2.0, "Count")
    assert alpha["Dimensions"] == [{"Name": QUEUE_DIMENSION, "Value": "alpha"}]
    assert beta["Value"] == 0.0


def test_in_flight_per_queue_is_left_out_when_the_poll_could_not_attribute_it() -> None:
    data = by_name_and_queue(metric_data(stats(in_flight_by_queue=None)))

    assert [key for key in data if key[0] == IN_FLIGHT_TASKS] == [(IN_FLIGHT_TASKS, None)]
    assert data[(WAITING_TASKS, "alpha")]["Value"] == 7.0


def test_every_item_carries_the_poll_time_and_the_requested_resolution() -> None:
    data = metric_data(stats(), storage_resolution=1)

    assert {datum["Timestamp"] for datum in data} == {datetime.fromtimestamp(POLLED_AT, tz=UTC)}
    assert {datum["StorageResolution"] for datum in data} == {1}


def test_standard_resolution_by_default() -> None:
    assert {datum["StorageResolution"] for datum in metric_data(stats())} == {60}


def many_queues(count: int, polled_at: float = POLLED_AT) -> QueueStats:
    queues = [f"queue-{n:04d}" for n in range(count)]
    return stats(
        polled_at=polled_at,
        waiting=dict.fromkeys(queues, 1),
        oldest_age_s=dict.fromkeys(queues, 5.0),
        in_flight_by_queue=dict.fromkeys(queues, 0),
    )


def test_batches_stay_within_the_item_limit_in_as_few_calls_as_possible() -> None:
    data = metric_data(many_queues(800))  # 3 per queue and the broker-wide in flight: 2401 items

    sizes = [len(batch) for batch in batches(data)]

    assert sizes == [MAX_ITEMS_PER_CALL, MAX_ITEMS_PER_CALL, 401]


def test_batches_split_early_when_long_queue_names_would_pass_the_request_size_limit() -> None:
    long_names = [f"{n:04d}-" + "q" * 1000 for n in range(200)]
    data = metric_data(
        stats(
            waiting=dict.fromkeys(long_names, 1),
            oldest_age_s={},
            in_flight_by_queue=dict.fromkeys(long_names, 0),
        )
    )

    sizes = [len(batch) for batch in batches(data)]

    assert sum(sizes) == len(data)
    assert len(sizes) == 2
    assert max(sizes) < MAX_ITEMS_PER_CALL


def test_publish_sends_every_item_to_cloudwatch_in_batched_calls(cloudwatch: Any) -> None:
    calls = observe_put_metric_data(cloudwatch)
    # Polled now: moto's statistics are read back over a window around the present.
    data = metric_data(many_queues(400, polled_at=time.time()))  # 1201 items

    call_count = publish(cloudwatch.put_metric_data, NAMESPACE, data)

    assert call_count == len(calls.requests) == 2
    assert metric_count(cloudwatch) == len(data)


def _group_points(data: list[dict[str, Any]]) -> dict[tuple[str, str], float]:
    return {
        (d["MetricName"], d["Dimensions"][0]["Value"]): d["Value"]
        for d in data
        if d.get("Dimensions", [{}])[0].get("Name") == GROUP_DIMENSION
    }


def test_each_worker_group_gets_its_queues_summed() -> None:
    data = metric_data(stats(), groups={"both": ["alpha", "beta"], "quiet": ["beta"]})

    assert _group_points(data) == {
        (WAITING_TASKS, "both"): 7.0,
        (IN_FLIGHT_TASKS, "both"): 2.0,
        (WAITING_TASKS, "quiet"): 0.0,
        (IN_FLIGHT_TASKS, "quiet"): 0.0,
    }


def test_a_group_with_a_queue_left_out_of_the_poll_gets_no_waiting_point() -> None:
    data = metric_data(stats(waiting={"alpha": 7}), groups={"both": ["alpha", "beta"]})

    assert _group_points(data) == {(IN_FLIGHT_TASKS, "both"): 2.0}


def test_no_group_in_flight_point_when_the_poll_could_not_attribute_in_flight_tasks() -> None:
    data = metric_data(stats(in_flight_by_queue=None), groups={"both": ["alpha", "beta"]})

    assert _group_points(data) == {(WAITING_TASKS, "both"): 7.0}
