"""The Celery releases celery_fleet supports, and the internals of Celery it relies on.

celery_fleet reaches past Celery's documented API in a few places, each listed in `INTERNALS` with
what needs it: it wraps a request's pool error callback, reads a request's revoked and cancelled
flags, unwraps the pool's exception wrapper found by its class name, reads the worker's shutdown
flags and held requests, and kombu's Redis channel. Each was read in the Celery of
`SUPPORTED_CELERY`. Another release may rename any of them, and most would fail silently (a lost
worker not counted, a stalled consumer reported healthy), so `celery_fleet.configure` and
`celery_fleet.events.install` call `check_celery()` first: a missing internal is an
`UnsupportedCeleryError` naming it, the installed versions and the supported range.

Nothing here imports Celery at module import: the check imports what it looks up.
"""

from __future__ import annotations

import importlib
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

logger = logging.getLogger("celery_fleet")

# The Celery releases celery_fleet was analysed and tested with (requirements-dev.txt pins one). The
# requirement in runtime/pyproject.toml is `celery[redis]` with this range: a test ties them.
CELERY_LOWEST: Final = (5, 7)
CELERY_BELOW: Final = (5, 8)
SUPPORTED_CELERY: Final = f">={'.'.join(map(str, CELERY_LOWEST))},<{'.'.join(map(str, CELERY_BELOW))}"

# billiard's wrapper of an exception raised in a pool child, as the main process receives it.
POOL_EXCEPTION_WRAPPER: Final = "ExceptionWithTraceback"


class UnsupportedCeleryError(RuntimeError):
    """The installed Celery lacks an internal celery_fleet relies on."""


@dataclass(frozen=True, slots=True)
class Internal:
    """One thing celery_fleet uses that Celery does not document: `module:attribute.path`, found by
    importing the module and following the attributes; `holds`, when given, must accept what was
    found (for what only an instance shows)."""

    path: str
    why: str
    holds: Callable[[Any], bool] | None = None
    # How the error names it, when that is not the path (an instance attribute).
    shown_as: str | None = None

    @property
    def name(self) -> str:
        return self.shown_as or self.path.replace(":", ".")

    def present(self) -> bool:
        module_name, _, attributes = self.path.partition(":")
        try:
            found: Any = importlib.import_module(module_name)
            for attribute in attributes.split("."):
                found = getattr(found, attribute)
            return self.holds is None or bool(self.holds(found))
        except Exception:
            return False


def _wraps_with_exc(cls: Any) -> bool:
    return bool(cls.__name__ == POOL_EXCEPTION_WRAPPER and cls(_PROBE, "").exc is _PROBE)


def _redis_own(method: Any) -> bool:
    # The virtual transport's base methods answer too (its `_size` says 0): only Redis's own counts.
    return bool(getattr(method, "__module__", None) == "kombu.transport.redis")


def _keeps_raw_payload(cls: Any) -> bool:
    return hasattr(cls({"properties": {"delivery_tag": "probe"}}), "_raw")


_PROBE = ValueError("probe")
_REQUEST = "celery.worker.request:Request"
_REDIS_CHANNEL = "kombu.transport.redis:Channel"

INTERNALS: Final[tuple[Internal, ...]] = (
    Internal(f"{_REQUEST}.on_failure", "the pool's error callback, wrapped on each request to count lost "
             "workers (celery_fleet.worker_lost) and report those Celery fires no signal for (events)"),
    Internal(f"{_REQUEST}._already_revoked", "tells a revoked or terminated task from a lost worker"),
    Internal(f"{_REQUEST}._already_cancelled", "tells a task the worker cancelled from a lost worker"),
    Internal(f"{_REQUEST}.acknowledged", "a delivery already acknowledged is not requeued on a death"),
    Internal(f"{_REQUEST}.acknowledge", "acknowledges a dead child's delivery once it is republished "
             "with its death count"),
    Internal(f"{_REQUEST}.request_dict", "the delivery's headers: death count, send stamp, replay of"),
    Internal(f"{_REQUEST}.time_start", "the attempt's start, for outcomes the main process reports"),
    Internal(f"{_REQUEST}.message", "the delivery, republished after a death and kept after a failure"),
    Internal(f"{_REQUEST}.task", "the task of a request the pool reports on"),
    Internal("celery.app.task:Task.retry_on_worker_lost", "a task that sets it keeps Celery's own retry "
             "on a lost worker, and the poison guard stands aside"),
    Internal("celery.worker.state:should_stop", "a worker stopping cancels its children's tasks: "
             "requeued, not counted as deaths"),
    Internal("celery.worker.state:should_terminate", "as should_stop, for a terminating worker"),
    Internal("celery.worker.state:reserved_requests", "the tasks the worker holds, for ECS task "
             "scale-in protection (celery_fleet.protection)"),
    Internal("celery.worker.consumer.tasks:Tasks", "the consumer step the heartbeat starts after, named "
             "by its path in `requires` (celery_fleet.heartbeat)"),
    Internal("celery.app.defaults:DEFAULTS", "Celery's setting names: configure() refuses a keyword that "
             "is none of them"),
    Internal(f"billiard.einfo:{POOL_EXCEPTION_WRAPPER}", "the pool's wrapper of a child's exception, "
             "matched by class name and unwrapped through its `exc`", holds=_wraps_with_exc),
    Internal("billiard.einfo:ExceptionInfo.exception", "the exception of a failure the pool reports"),
    Internal("billiard.einfo:ExceptionInfo.traceback", "the traceback text of a failure line"),
    Internal(f"{_REDIS_CHANNEL}._size", "counts a queue's waiting tasks: a consumer with room that "
             "fetches none fails the health check (celery_fleet.heartbeat)", holds=_redis_own),
    Internal(f"{_REDIS_CHANNEL}.conn_or_acquire", "the connection the heartbeat PINGs the broker on"),
    Internal(f"{_REDIS_CHANNEL}.client", "the Redis client: kept messages, broker memory"),
    Internal(f"{_REDIS_CHANNEL}.unacked_key", "the hash of delivered messages a failed task's message is "
             "kept from (celery_fleet.keep)"),
    Internal("kombu.transport.redis:QoS.can_consume", "whether the consumer has room to fetch"),
    Internal("kombu.transport.virtual:Message", "a delivery's payload as the broker held it, kept when "
             "the unacked entry is gone (celery_fleet.keep)", holds=_keeps_raw_payload,
             shown_as="kombu.transport.virtual.Message._raw"),
)  # fmt: skip


def check_celery() -> None:
    """Raise `UnsupportedCeleryError` when the installed Celery lacks one of `INTERNALS`.

    A Celery outside `SUPPORTED_CELERY` that has them all is only warned about: pip's requirement
    already refuses it, so it was installed on purpose.
    """
    missing = [internal for internal in INTERNALS if not internal.present()]
    versions = _versions()
    if missing:
        needs = "; ".join(f"{internal.name} ({internal.why})" for internal in missing)
        raise UnsupportedCeleryError(
            f"celery_fleet cannot run on the installed Celery {versions}: it relies on "
            f"{'this internal' if len(missing) == 1 else 'these internals'}, missing from it: {needs}. "
            f"celery_fleet supports celery{SUPPORTED_CELERY}: pip install 'celery[redis]{SUPPORTED_CELERY}'."
        )
    if not supported(_version("celery")):
        logger.warning(
            "celery_fleet: the installed Celery %s is outside the supported celery%s; every internal "
            "celery_fleet relies on is present, but its behaviour there was never tested",
            versions,
            SUPPORTED_CELERY,
        )


def supported(version: str) -> bool:
    """Whether a Celery version string (`5.7.0`, `5.7.1rc1`) lies in `SUPPORTED_CELERY`."""
    match = re.match(r"(\d+)\.(\d+)", version)
    if match is None:
        return False
    release = (int(match[1]), int(match[2]))
    return CELERY_LOWEST <= release < CELERY_BELOW


def unwrap_pool_exception(exc: object) -> object:
    """The exception a pool child raised, from the wrapper the pool sends it back in."""
    inner = getattr(exc, "exc", None)
    return inner if type(exc).__name__ == POOL_EXCEPTION_WRAPPER and inner is not None else exc


def _version(module_name: str) -> str:
    try:
        return str(importlib.import_module(module_name).__version__)
    except Exception:
        return "(unknown version)"


def _versions() -> str:
    return f"{_version('celery')} (billiard {_version('billiard')}, kombu {_version('kombu')})"
