"""Fixtures: the ingest Lambda against moto's CloudWatch Logs."""

from __future__ import annotations

from collections.abc import Iterator
from types import ModuleType
from typing import Any

import pytest

from tests.lambdas.task_events.support import load_handler, mocked_aws


@pytest.fixture
def logs(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """A moto CloudWatch Logs client with the failed-tasks log group created."""
    with mocked_aws(monkeypatch) as client:
        yield client


@pytest.fixture
def handler_module(logs: Any) -> ModuleType:
    """The handler module after a cold start under moto."""
    return load_handler()
