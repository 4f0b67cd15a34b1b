"""Celery's own retry options, filled in for calls to services outside the fleet."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, Final

# For `@app.task(**RETRY_EXTERNAL)`: Celery retries the task when it raises one of these; before
# retry n (0-based) it waits `retry_backoff * 2**n` seconds capped at `retry_backoff_max`, with full
# jitter (a uniform draw in [0, that]) so that a recovering service is not hit by every waiting task
# at once. The eight retries wait at most 1, 2, 4 ... 128 s, 255 s in all; then the task fails.
# Replace `autoretry_for` with the errors your client raises (e.g. `requests.RequestException`):
# `{**RETRY_EXTERNAL, "autoretry_for": (...)}`. `retry_backoff_max` equals configure's default
# `max_countdown_s`, as a countdown beyond the broker's visibility timeout would be delivered twice.
RETRY_EXTERNAL: Final[Mapping[str, Any]] = MappingProxyType(
    {
        "autoretry_for": (ConnectionError, TimeoutError),
        "retry_backoff": 1,
        "retry_backoff_max": 600,
        "retry_jitter": True,
        "max_retries": 8,
    }
)
