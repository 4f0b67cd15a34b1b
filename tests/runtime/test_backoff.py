"""Retries back off exponentially with full jitter, within Celery's documented bounds.

Before retry n (0-based) Celery waits `get_exponential_backoff_interval(factor, n, maximum,
full_jitter)` seconds (celery/app/autoretry.py): a uniform integer draw in
[0, min(maximum, factor * 2**n)]. Checked with Celery's own function for the RETRY_EXTERNAL
options, and on real retries published by a real worker.
"""

from __future__ import annotations

import random

import pytest
import redis
from celery import Celery
from celery.utils.time import get_exponential_backoff_interval
from celery_fleet import RETRY_EXTERNAL

from tests.runtime.conftest import WorkerFactory
from tests.runtime.workers import FLAKY_RETRY, text, wait_for

DRAWS = 400


def bound(factor: int, retries: int, maximum: int) -> int:
    return int(min(maximum, factor * 2**retries))


@pytest.mark.parametrize("retries", range(RETRY_EXTERNAL["max_retries"]))
def test_retry_external_delays_stay_within_their_bound(retries: int) -> None:
    factor, maximum = RETRY_EXTERNAL["retry_backoff"], RETRY_EXTERNAL["retry_backoff_max"]
    random.seed(retries)
    delays = [
        get_exponential_backoff_interval(factor, retries, maximum, full_jitter=True) for _ in range(DRAWS)
    ]
    assert all(0 <= delay <= bound(factor, retries, maximum) for delay in delays)
    # Full jitter spreads the retries over the whole interval rather than all at its end.
    assert min(delays) == 0
    assert max(delays) > bound(factor, retries, maximum) // 2


def test_retry_external_never_waits_longer_than_its_maximum() -> None:
    maximum = RETRY_EXTERNAL["retry_backoff_max"]
    assert get_exponential_backoff_interval(RETRY_EXTERNAL["retry_backoff"], 30, maximum) == maximum


@pytest.mark.slow
def test_real_retries_are_published_with_bounded_countdowns(
    workers: WorkerFactory, publisher: Celery, ledger_client: redis.Redis
) -> None:
    failures = FLAKY_RETRY["max_retries"]
    factor, maximum = FLAKY_RETRY["retry_backoff"], FLAKY_RETRY["retry_backoff_max"]
    task_id = publisher.send_task("fleet.flaky", args=[failures]).id
    worker = workers("worker", concurrency=1)
    key = f"attempts:{task_id}"
    wait_for(lambda: ledger_client.llen(key) == failures + 1, 30, "every attempt", worker)

    attempts = [text(entry).split(":") for entry in ledger_client.lrange(key, 0, -1)]
    assert [int(retries) for retries, _ in attempts] == list(range(failures + 1))
    assert attempts[0][1] == "", "the first attempt was published without a countdown"
    for retries, delay in attempts[1:]:
        # The delay of retry n+1's message is eta - sent_at: its countdown less the instant between
        # computing the ETA and stamping the message. A countdown of 0 is sent without an ETA.
        countdown = round(float(delay)) if delay else 0
        assert 0 <= countdown <= bound(factor, int(retries) - 1, maximum)
    assert f"Task fleet.flaky[{task_id}] succeeded" in worker.log()
