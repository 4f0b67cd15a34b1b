"""The sample app's tasks run in eager mode (`task_always_eager`), as its users' unit tests would."""

from __future__ import annotations

import hashlib
import importlib
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import pytest
from celery.signals import task_success
from celery_fleet import events


@pytest.fixture(scope="module")
def sample(monkeypatch_module: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    # Eager tasks never reach the broker; configure still wants to know where it is.
    monkeypatch_module.setenv("CELERY_FLEET_BROKER_URL", "memory://")
    tasks = importlib.import_module("sample_app.tasks")
    tasks.app.conf.task_always_eager = True
    yield tasks
    tasks.app.conf.task_always_eager = False
    events.uninstall()


@pytest.fixture(scope="module")
def monkeypatch_module() -> Iterator[pytest.MonkeyPatch]:
    with pytest.MonkeyPatch.context() as patch:
        yield patch


def test_handle_request_fans_out_one_process_item_per_item(sample: ModuleType) -> None:
    processed: list[Any] = []

    def collect(sender: Any = None, result: Any = None, **_: Any) -> None:
        if sender.name == "sample_app.tasks.process_item":
            processed.append(result)

    task_success.connect(collect, weak=False)
    try:
        assert sample.handle_request.delay("req-1", 12).get() == {"request_id": "req-1", "items": 12}
    finally:
        task_success.disconnect(collect)
    expected = [hashlib.sha256(f"req-1:{item}".encode()).hexdigest()[:16] for item in range(12)]
    assert sorted(processed) == sorted(expected)


@pytest.mark.parametrize("n_items", [9, 21])
def test_handle_request_refuses_item_counts_outside_10_to_20(sample: ModuleType, n_items: int) -> None:
    with pytest.raises(ValueError, match=f"n_items={n_items}: a request has 10 to 20 items"):
        sample.handle_request.apply(args=["req-2", n_items], throw=True)


def test_fetch_external_succeeds_after_its_retries(sample: ModuleType) -> None:
    urls = [f"https://service.example/items/{n}" for n in range(12)]
    failures = [sample.failures_before_success(url) for url in urls]
    assert set(failures) == set(range(sample.MAX_FAILURES + 1)), "the URLs cover every failure count"
    for url, failed in zip(urls, failures, strict=True):
        assert sample.fetch_external.delay(url).get() == {"url": url, "attempts": failed + 1, "status": 200}


def test_fetch_external_uses_celery_backoff_options(sample: ModuleType) -> None:
    task = sample.fetch_external
    assert task.autoretry_for == (sample.ServiceUnavailableError,)
    options = (task.retry_backoff, task.retry_backoff_max, task.retry_jitter, task.max_retries)
    assert options == (1, 600, True, 8)


def test_sub_tasks_are_routed_to_the_bulk_queue(sample: ModuleType) -> None:
    route = sample.app.amqp.router.route
    assert route({}, "sample_app.tasks.process_item")["queue"].name == "bulk"
    assert route({}, "sample_app.tasks.fetch_external")["queue"].name == "bulk"
    assert route({}, "sample_app.tasks.handle_request")["queue"].name == "default"
