"""configure's slim messages, read back from the real message in Redis: what goes, what stays."""

from __future__ import annotations

import json
from typing import Any

import celery_fleet
import pytest
import redis
from celery import Celery, group, signature
from celery_fleet.contract.queue_metrics import SENT_AT_HEADER
from celery_fleet.publish import PublishStamper

from tests.support.redis_server import RedisServer

QUEUE = "celery"


def configured_app(server: RedisServer, **kwargs: Any) -> Celery:
    app = Celery("slim-publisher", set_as_current=False)
    celery_fleet.configure(app, broker_url=server.url, task_events=False, healthcheck=False, **kwargs)
    return app


def stored(client: redis.Redis) -> list[dict[str, Any]]:
    """Every queued message, oldest first."""
    return [json.loads(raw) for raw in reversed(client.lrange(QUEUE, 0, -1))]


def test_body_is_stored_as_json_not_base64(redis_server: RedisServer) -> None:
    configured_app(redis_server).send_task("sample.anything", args=[1, "ü"], kwargs={"k": None})
    (message,) = stored(redis_server.client())
    assert message["properties"]["body_encoding"] is None
    assert json.loads(message["body"]) == [[1, "ü"], {"k": None}, {}]


def test_unused_features_and_reprs_are_left_out(redis_server: RedisServer) -> None:
    configured_app(redis_server).send_task("sample.anything", args=[1])
    (message,) = stored(redis_server.client())
    assert set(message["headers"]) == {"task", "id", "root_id", "ignore_result", SENT_AT_HEADER}
    assert "reply_to" not in message["properties"]
    assert message["properties"]["correlation_id"] == message["headers"]["id"]


def test_features_in_use_are_kept(redis_server: RedisServer) -> None:
    app = configured_app(redis_server)
    callback = signature("sample.after", app=app)
    app.send_task("sample.later", countdown=5, time_limit=20, link=callback, retries=2)
    group(signature("sample.member", args=[n], app=app) for n in range(2)).apply_async()
    later, *members = stored(redis_server.client())
    assert later["headers"]["eta"]
    assert later["headers"]["timelimit"] == [20, None]
    assert later["headers"]["retries"] == 2
    assert json.loads(later["body"])[2]["callbacks"][0]["task"] == "sample.after"
    assert {m["headers"]["group"] for m in members} == {members[0]["headers"]["group"]}
    assert [m["headers"]["group_index"] for m in members] == [0, 1]


def test_reply_to_is_kept_for_the_rpc_result_backend(redis_server: RedisServer) -> None:
    configured_app(redis_server, result_backend="rpc://").send_task("sample.anything")
    (message,) = stored(redis_server.client())
    assert message["properties"]["reply_to"]


def test_reprs_come_back_with_argument_reprs(redis_server: RedisServer) -> None:
    configured_app(redis_server, argument_reprs=True).send_task("sample.anything", args=[7])
    (message,) = stored(redis_server.client())
    assert (message["headers"]["argsrepr"], message["headers"]["kwargsrepr"]) == ("[7]", "{}")


def test_repr_max_chars_without_argument_reprs_is_refused() -> None:
    with pytest.raises(ValueError, match=r"repr_max_chars=20 needs argument_reprs=True"):
        celery_fleet.configure(
            Celery(set_as_current=False), broker_url="redis://127.0.0.1:1/0", repr_max_chars=20
        )


def test_body_encoding_can_be_set_back(redis_server: RedisServer) -> None:
    app = configured_app(redis_server, broker_transport_options={"body_encoding": "base64"})
    app.send_task("sample.anything", args=[1])
    (message,) = stored(redis_server.client())
    assert message["properties"]["body_encoding"] == "base64"


def test_a_false_ignore_result_stays_because_a_worker_would_not_default_to_it(
    redis_server: RedisServer,
) -> None:
    configured_app(redis_server).send_task("sample.anything", ignore_result=False)
    (message,) = stored(redis_server.client())
    assert message["headers"]["ignore_result"] is False


def test_the_send_stamp_is_rounded_up_to_10_microseconds() -> None:
    headers: dict[str, Any] = {"task": "sample.anything", "id": "x"}
    PublishStamper(max_delay_s=10, clock=lambda: 1796172675.6633575)(headers=headers)
    assert headers[SENT_AT_HEADER] == 1796172675.66336
    assert repr(headers[SENT_AT_HEADER]) == "1796172675.66336"
