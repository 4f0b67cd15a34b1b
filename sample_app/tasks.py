"""Sample tasks: a request that fans out to sub-tasks, and a call to a flaky outside service."""

from __future__ import annotations

import hashlib
import zlib
from typing import Any

from celery import group
from celery_fleet import RETRY_EXTERNAL

from sample_app.app import app

MIN_ITEMS = 10
MAX_ITEMS = 20
# fetch_external fails this many times at most before it succeeds (below RETRY_EXTERNAL's eight).
MAX_FAILURES = 3


class ServiceUnavailableError(ConnectionError):
    """The outside service answered 503 or not at all: worth retrying later."""


@app.task  # type: ignore[untyped-decorator]  # Celery has no type hints
def handle_request(request_id: str, n_items: int) -> dict[str, Any]:
    """What an API call starts: one sub-task per item, sent together as a group."""
    if not MIN_ITEMS <= n_items <= MAX_ITEMS:
        raise ValueError(f"n_items={n_items}: a request has {MIN_ITEMS} to {MAX_ITEMS} items")
    fan_out = group(process_item.s(request_id, item) for item in range(n_items))
    fan_out.apply_async()
    return {"request_id": request_id, "items": n_items}


@app.task  # type: ignore[untyped-decorator]
def process_item(request_id: str, item: int) -> str:
    """A short, deterministic piece of work: the item's digest (a retry gives the same answer)."""
    return hashlib.sha256(f"{request_id}:{item}".encode()).hexdigest()[:16]


@app.task(bind=True, **{**RETRY_EXTERNAL, "autoretry_for": (ServiceUnavailableError,)})  # type: ignore[untyped-decorator]
def fetch_external(self: Any, url: str) -> dict[str, Any]:
    """Fetch `url` from a service that fails now and then; Celery retries it with back-off.

    No network: the first `failures_before_success(url)` attempts fail, deterministically per URL,
    which is what a flaky service looks like to this task.
    """
    attempt = self.request.retries
    if attempt < failures_before_success(url):
        raise ServiceUnavailableError(f"{url}: service unavailable (attempt {attempt + 1})")
    return {"url": url, "attempts": attempt + 1, "status": 200}


def failures_before_success(url: str) -> int:
    """How many times fetching `url` fails before it works: 0 to MAX_FAILURES, fixed per URL."""
    return zlib.crc32(url.encode()) % (MAX_FAILURES + 1)
