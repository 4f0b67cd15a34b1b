"""Fixtures shared by every test: real redis-server processes."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.support.redis_server import RedisServer

# jsii warns on every synth that Node 20 is past its end of life; the CDK still works on it and the
# warning would bury real output. README asks for Node 22+.
os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    """A fresh redis-server with default settings, for one test."""
    with RedisServer() as server:
        yield server
