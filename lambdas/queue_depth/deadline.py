"""Redis connections whose every socket operation ends by a deadline: a slow broker cannot hold a poll.

A socket timeout bounds one recv, not a reply: a broker (or a path to it) that drips a byte per
second never trips a 2-second timeout and held one poll for 104 s. These connections give each
recv and send only the time left until the poll's deadline, so the whole exchange, retries and
reconnects included, ends by it with redis-py's TimeoutError.
"""

from __future__ import annotations

import socket
import time
from typing import Any

import redis


class Deadline:
    """A moment on the monotonic clock by which broker I/O must end; None while no poll runs."""

    def __init__(self) -> None:
        self.at: float | None = None

    def expire_in(self, seconds: float) -> None:
        self.at = time.monotonic() + max(0.0, seconds)

    def clear(self) -> None:
        self.at = None

    def remaining(self) -> float | None:
        return None if self.at is None else self.at - time.monotonic()


class _DeadlineSocket:
    """A connected socket (plain or TLS) whose recv and send stop at the deadline."""

    def __init__(self, sock: socket.socket, deadline: Deadline) -> None:
        self._sock = sock
        self._deadline = deadline
        self._timeout = sock.gettimeout()

    def settimeout(self, timeout: float | None) -> None:
        self._timeout = timeout
        self._sock.settimeout(timeout)

    def gettimeout(self) -> float | None:
        return self._timeout

    def _bound(self) -> None:
        remaining = self._deadline.remaining()
        if remaining is None:
            self._sock.settimeout(self._timeout)
            return
        if remaining <= 0:
            raise TimeoutError("poll deadline passed")
        self._sock.settimeout(remaining if self._timeout is None else min(self._timeout, remaining))

    def recv(self, size: int, *args: Any) -> bytes:
        self._bound()
        return self._sock.recv(size, *args)

    def recv_into(self, buffer: Any, *args: Any) -> int:
        self._bound()
        return self._sock.recv_into(buffer, *args)

    def sendall(self, data: Any, *args: Any) -> None:
        self._bound()
        self._sock.sendall(data, *args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


class _DeadlineMixin:
    deadline: Deadline

    def __init__(self, *, deadline: Deadline, **kwargs: Any) -> None:
        self.deadline = deadline
        super().__init__(**kwargs)

    def _connect(self) -> Any:
        remaining = self.deadline.remaining()
        if remaining is not None and remaining <= 0:
            # redis-py turns a socket.timeout from _connect into its own TimeoutError.
            raise TimeoutError("poll deadline passed before connecting")
        return _DeadlineSocket(super()._connect(), self.deadline)  # type: ignore[misc]


class DeadlineConnection(_DeadlineMixin, redis.Connection):
    """redis:// with a poll deadline."""


class DeadlineSSLConnection(_DeadlineMixin, redis.SSLConnection):
    """rediss:// with a poll deadline (the TLS handshake itself is bounded by the socket timeout)."""


class DeadlineUnixConnection(_DeadlineMixin, redis.UnixDomainSocketConnection):
    """unix:// with a poll deadline."""


CONNECTION_CLASSES: dict[str, type[redis.Connection] | type[redis.UnixDomainSocketConnection]] = {
    "redis": DeadlineConnection,
    "rediss": DeadlineSSLConnection,
    "unix": DeadlineUnixConnection,
}
