"""When an invocation polls (poll_times) and what run_polls does per poll, on a controlled clock.

The broker is a real redis-server (stopped for real where it must be unreachable); CloudWatch is moto.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
import redis
from celery import Celery
from celery_fleet.contract.queue_metrics import HIGH_RESOLUTION_PERIOD_S, WAITING_TASKS
from queue_depth.logic import InvocationReport, poll_times, run_polls
from redis.backoff import NoBackoff
from redis.retry import Retry

from tests.lambdas.queue_depth.conftest import NAMESPACE, observe_put_metric_data, published, send
from tests.support.redis_server import RedisServer

# The start of the current minute: near now, so that moto's statistics window finds the points.
MINUTE = float(int(time.time()) // 60 * 60)


def test_standard_resolution_polls_once() -> None:
    assert poll_times(MINUTE + 2.5, 60) == [MINUTE + 2.5]


def test_ten_second_polls_start_now_then_follow_the_ten_second_boundaries_of_the_minute() -> None:
    assert poll_times(MINUTE + 1.5, 10) == [MINUTE + 1.5, *(MINUTE + s for s in (10, 20, 30, 40, 50))]


def test_an_invocation_on_the_minute_polls_six_times_ten_seconds_apart() -> None:
    assert poll_times(MINUTE, 10) == [MINUTE + s for s in (0, 10, 20, 30, 40, 50)]


def test_an_invocation_in_mid_minute_polls_into_the_next_minute() -> None:
    assert poll_times(MINUTE + 47, 10) == [MINUTE + 47, *(MINUTE + s for s in (50, 60, 70, 80, 90))]


def test_invocations_a_minute_apart_give_every_ten_second_period_one_poll() -> None:
    for offset in (0.0, 0.4, 9.99, 33.3, 59.9):
        first = poll_times(MINUTE + offset, 10)
        second = poll_times(MINUTE + offset + 60, 10)
        periods = [int(t // HIGH_RESOLUTION_PERIOD_S) for t in first + second]
        assert periods == list(range(periods[0], periods[0] + 12))


def test_the_last_poll_comes_at_most_fifty_seconds_after_the_start() -> None:
    for offset in (0.0, 0.4, 9.99, 33.3, 59.9):
        times = poll_times(MINUTE + offset, 10)
        assert times[-1] - times[0] <= 50


@dataclass
class Clock:
    """Wall-clock time the test controls: sleeping moves it; hooks run when it passes a time."""

    now: float
    slept: list[float] = field(default_factory=list)
    hooks: dict[float, Callable[[], object]] = field(default_factory=dict)

    def time(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds
        for at in sorted(self.hooks):
            if at <= self.now:
                self.hooks.pop(at)()


def run(
    server: RedisServer,
    put_metric_data: Any,
    clock: Clock,
    *,
    interval_s: int = 10,
    deadline: float = float("inf"),
    on_broker_error: Callable[[float, redis.RedisError], None] | None = None,
) -> tuple[InvocationReport, list[float]]:
    errors: list[float] = []

    def record_error(polled_at: float, error: redis.RedisError) -> None:
        errors.append(polled_at)
        if on_broker_error is not None:
            on_broker_error(polled_at, error)

    # No retries: a stopped broker fails the poll at once (redis-py's default retries for seconds).
    client = redis.Redis(
        host="127.0.0.1", port=server.port, socket_connect_timeout=1, retry=Retry(NoBackoff(), 0)
    )
    report = run_polls(
        redis_client=client,
        queues=["alpha"],
        put_metric_data=put_metric_data,
        namespace=NAMESPACE,
        interval_s=interval_s,
        clock=clock.time,
        sleep=clock.sleep,
        deadline=deadline,
        on_broker_error=record_error,
    )
    client.close()
    return report, errors


def test_each_poll_publishes_once_at_its_time_with_high_resolution(
    redis_server: RedisServer, celery_app: Celery, cloudwatch: Any
) -> None:
    send(celery_app, "alpha", count=4)
    calls = observe_put_metric_data(cloudwatch)
    clock = Clock(now=MINUTE + 3)

    report, _ = run(redis_server, cloudwatch.put_metric_data, clock)

    assert (report.published_polls, report.put_metric_data_calls) == (6, 6)
    stamps = [request["MetricData"][0]["Timestamp"].timestamp() for request in calls.requests]
    assert stamps == [MINUTE + s for s in (3, 10, 20, 30, 40, 50)]
    assert {d["StorageResolution"] for r in calls.requests for d in r["MetricData"]} == {1}
    assert published(cloudwatch)[(WAITING_TASKS, "alpha")].samples == 6


def test_standard_resolution_polls_once_and_does_not_sleep(
    redis_server: RedisServer, celery_app: Celery, cloudwatch: Any
) -> None:
    calls = observe_put_metric_data(cloudwatch)
    clock = Clock(now=MINUTE + 3)

    report, _ = run(redis_server, cloudwatch.put_metric_data, clock, interval_s=60)

    assert (report.published_polls, len(calls.requests), clock.slept) == (1, 1, [0.0])
    assert {d["StorageResolution"] for d in calls.requests[0]["MetricData"]} == {60}


def test_polls_planned_after_the_deadline_are_skipped(
    redis_server: RedisServer, celery_app: Celery, cloudwatch: Any
) -> None:
    calls = observe_put_metric_data(cloudwatch)

    report, _ = run(redis_server, cloudwatch.put_metric_data, Clock(now=MINUTE), deadline=MINUTE + 25)

    assert (report.published_polls, report.skipped_polls, len(calls.requests)) == (3, 3, 3)


def test_a_poll_that_cannot_reach_the_broker_publishes_nothing_and_the_next_one_does(
    redis_server: RedisServer, celery_app: Celery, cloudwatch: Any
) -> None:
    send(celery_app, "alpha", count=2)
    calls = observe_put_metric_data(cloudwatch)
    clock = Clock(now=MINUTE)
    # The broker goes away before the poll at :20 and is back (empty: no persistence) for :30.
    clock.hooks = {MINUTE + 20: redis_server.stop, MINUTE + 30: redis_server.start}

    report, errors = run(redis_server, cloudwatch.put_metric_data, clock)

    assert (report.published_polls, report.failed_polls) == (5, 1)
    assert errors == [MINUTE + 20]
    published_at = [request["MetricData"][0]["Timestamp"].timestamp() for request in calls.requests]
    assert MINUTE + 20 not in published_at
    depths = [request["MetricData"][0]["Value"] for request in calls.requests]
    assert depths == [2.0, 2.0, 0.0, 0.0, 0.0]


def test_polls_whose_period_passed_while_the_broker_timed_out_are_skipped(
    redis_server: RedisServer, cloudwatch: Any
) -> None:
    calls = observe_put_metric_data(cloudwatch)
    clock = Clock(now=MINUTE)
    redis_server.stop()

    def slow_failure(polled_at: float, error: redis.RedisError) -> None:
        # A broker that times out instead of refusing: the failed poll ends 25 s later.
        if polled_at == MINUTE:
            clock.now += 25
            redis_server.start()

    report, errors = run(redis_server, cloudwatch.put_metric_data, clock, on_broker_error=slow_failure)

    assert errors == [MINUTE]
    # :10's period passed during the failure; :20's was still running at :25, so it polls then.
    assert (report.failed_polls, report.skipped_polls, report.published_polls) == (1, 1, 4)
    assert [r["MetricData"][0]["Timestamp"].timestamp() for r in calls.requests] == [
        MINUTE + 25,
        MINUTE + 30,
        MINUTE + 40,
        MINUTE + 50,
    ]


@pytest.mark.parametrize("interval_s", [10, 30])
def test_any_interval_below_a_minute_publishes_high_resolution(
    redis_server: RedisServer, cloudwatch: Any, interval_s: int
) -> None:
    calls = observe_put_metric_data(cloudwatch)

    run(redis_server, cloudwatch.put_metric_data, Clock(now=MINUTE), interval_s=interval_s)

    assert len(calls.requests) == 60 // interval_s
    assert {d["StorageResolution"] for r in calls.requests for d in r["MetricData"]} == {1}
