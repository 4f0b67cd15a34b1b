"""A broker that answers, slowly: each poll's I/O ends by its deadline (real redis-server behind a
loopback proxy that drips its replies a byte at a time)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest
import redis
from queue_depth.deadline import Deadline, DeadlineConnection
from queue_depth.logic import PUBLISH_MARGIN_S, poll_budget_s, read_queue_stats
from redis.backoff import NoBackoff
from redis.retry import Retry

from tests.support.redis_server import RedisServer

# Far below the socket timeout used here (2 s): no single recv ever times out, only the deadline can.
DRIP_INTERVAL_S = 0.05


class DripProxy:
    """Forwards requests to redis-server at once and its replies one byte per DRIP_INTERVAL_S."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.stopped = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.stopped.is_set():
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            threading.Thread(target=self._pipe, args=(client, upstream, 0.0), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client, DRIP_INTERVAL_S), daemon=True).start()

    def _pipe(self, source: socket.socket, target: socket.socket, interval_s: float) -> None:
        try:
            while not self.stopped.is_set():
                data = source.recv(65536)
                if not data:
                    break
                if not interval_s:
                    target.sendall(data)
                    continue
                for index in range(len(data)):
                    if self.stopped.is_set():
                        return
                    target.sendall(data[index : index + 1])
                    time.sleep(interval_s)
        except OSError:
            pass
        finally:
            for sock in (source, target):
                sock.close()

    def close(self) -> None:
        self.stopped.set()
        self.listener.close()


@pytest.fixture
def drip(redis_server: RedisServer) -> Iterator[DripProxy]:
    proxy = DripProxy(redis_server.port)
    yield proxy
    proxy.close()


def test_a_poll_against_a_dripping_broker_ends_at_its_deadline(
    redis_server: RedisServer, drip: DripProxy
) -> None:
    # Cached scripts on the real server first, so the slow poll is an ordinary one.
    read_queue_stats(redis_server.client(), ["alpha"], 0.0)
    deadline = Deadline()
    pool = redis.ConnectionPool(
        connection_class=DeadlineConnection,
        host="127.0.0.1",
        port=drip.port,
        socket_timeout=2.0,
        socket_connect_timeout=2.0,
        retry=Retry(NoBackoff(), 2),
        deadline=deadline,
    )
    client = redis.Redis(connection_pool=pool)
    deadline.expire_in(0.5)

    with pytest.raises(redis.TimeoutError):
        read_queue_stats(client, ["alpha"], 0.0)

    pool.disconnect()


def test_a_deadline_already_passed_fails_before_connecting(redis_server: RedisServer) -> None:
    deadline = Deadline()
    client = redis.Redis(
        connection_pool=redis.ConnectionPool(
            connection_class=DeadlineConnection, port=redis_server.port, deadline=deadline
        )
    )
    deadline.expire_in(0)

    with pytest.raises(redis.TimeoutError):
        client.ping()


def test_without_a_running_poll_the_connection_has_no_deadline(redis_server: RedisServer) -> None:
    client = redis.Redis(
        connection_pool=redis.ConnectionPool(
            connection_class=DeadlineConnection, port=redis_server.port, deadline=Deadline()
        )
    )

    assert client.ping() is True


def test_a_ten_second_poll_gets_the_rest_of_its_slot_less_the_time_to_publish() -> None:
    assert poll_budget_s(100.0, 100.0, 10, deadline=1000.0) == 10 - PUBLISH_MARGIN_S
    assert poll_budget_s(100.0, 103.0, 10, deadline=1000.0) == 7 - PUBLISH_MARGIN_S


def test_a_poll_never_runs_past_the_invocations_deadline() -> None:
    assert poll_budget_s(100.0, 100.0, 60, deadline=127.0) == 27.0
