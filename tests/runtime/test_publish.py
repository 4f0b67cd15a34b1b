"""What configure adds to every published message, read back from the real message in Redis."""

from __future__ import annotations

import json
import logging
import time
from typing import Any

import celery_fleet
import pytest
import redis
from celery import Celery
from celery_fleet.contract.queue_metrics import SENT_AT_HEADER
from celery_fleet.publish import PublishStamper, eta_delay_s

from tests.support.redis_server import RedisServer

QUEUE = "celery"


def stored_message(client: redis.Redis) -> dict[str, Any]:
    """The oldest message on the queue, as the queue-depth publisher reads it (raw list element)."""
    element = client.lindex(QUEUE, -1)
    assert element is not None, "nothing was published"
    parsed: dict[str, Any] = json.loads(element)
    return parsed


def configured_app(server: RedisServer, **kwargs: Any) -> Celery:
    app = Celery("publisher", set_as_current=False)
    celery_fleet.configure(app, broker_url=server.url, task_events=False, healthcheck=False, **kwargs)
    return app


def test_published_message_carries_its_send_time(redis_server: RedisServer) -> None:
    app = configured_app(redis_server)
    before = time.time()
    app.send_task("sample.anything", args=[1])
    after = time.time()
    sent_at = stored_message(redis_server.client())["headers"][SENT_AT_HEADER]
    assert isinstance(sent_at, float)
    assert before <= sent_at <= after


def test_reprs_are_kept_whole_when_asked_for(redis_server: RedisServer) -> None:
    app = configured_app(redis_server, argument_reprs=True)
    app.send_task("sample.anything", args=["x" * 200], kwargs={"payload": "y" * 200})
    headers = stored_message(redis_server.client())["headers"]
    assert headers["argsrepr"] == repr(["x" * 200])
    assert len(headers["kwargsrepr"]) > 200


def test_reprs_are_cut_to_repr_max_chars(redis_server: RedisServer) -> None:
    app = configured_app(redis_server, argument_reprs=True, repr_max_chars=20)
    app.send_task("sample.anything", args=["x" * 200], kwargs={"payload": "y" * 200})
    message = stored_message(redis_server.client())
    assert message["headers"]["argsrepr"] == "['" + "x" * 15 + "..."
    assert len(message["headers"]["kwargsrepr"]) == 20
    # The arguments themselves travel untouched in the body.
    assert len(message["body"]) > 400


def test_countdown_beyond_the_visibility_timeout_is_logged_as_an_error(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    app = configured_app(redis_server, max_task_runtime_s=60, max_countdown_s=100, visibility_margin_s=20)
    with caplog.at_level(logging.ERROR, logger="celery_fleet"):
        app.send_task("sample.later", countdown=110)
        assert not caplog.records, "within max_countdown_s + margin"
        app.send_task("sample.too_late", countdown=130)
    assert len(caplog.records) == 1
    assert "sample.too_late" in caplog.text
    assert "beyond the 120 s the broker's visibility timeout allows" in caplog.text
    # Logged, not refused: Celery swallows errors from publish signal handlers.
    assert redis_server.client().llen(QUEUE) == 2


def test_retry_republish_is_stamped_again() -> None:
    stamper = PublishStamper(max_delay_s=10, clock=lambda: 200.0)
    headers: dict[str, Any] = {SENT_AT_HEADER: 100.0}
    stamper(sender="t", headers=headers)
    assert headers[SENT_AT_HEADER] == 200.0


def test_eta_delay_reads_aware_and_naive_etas() -> None:
    assert eta_delay_s("1970-01-01T00:01:40+00:00", now=40.0) == 60.0
    assert eta_delay_s("1970-01-01T00:01:40", now=40.0) == 60.0
    assert eta_delay_s(None, now=40.0) is None
    assert eta_delay_s("not a date", now=40.0) is None
