"""`configure`: the production settings a fleet worker runs with, and why each is there.

docs/runtime.md explains every value at more length; the comments here say what breaks without it.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from celery.signals import before_task_publish

from celery_fleet.broker import broker_url_from_env
from celery_fleet.celery_support import check_celery
from celery_fleet.contract import container, worker_env
from celery_fleet.health import DEFAULT_HEALTH_FILE
from celery_fleet.heartbeat import install_heartbeat
from celery_fleet.limits import install_limits_check
from celery_fleet.publish import PublishStamper
from celery_fleet.reserve import DEFAULT_LIMIT_PERCENT, install_memory_reserve, uninstall_memory_reserve
from celery_fleet.worker_lost import DEFAULT_MAX_WORKER_DEATHS, install_poison_guard, uninstall_poison_guard

if TYPE_CHECKING:
    from celery import Celery

    from celery_fleet.events import Redact
    from celery_fleet.keep import MessageStore

FARGATE_MAX_STOP_TIMEOUT_S = float(container.FARGATE_MAX_STOP_TIMEOUT_S)
# Time kept back after the soft shutdown for cancelling what still runs, putting those messages back
# on their queues, closing the broker connection and reaping the pool's children.
DEFAULT_SHUTDOWN_MARGIN_S = 30.0
# Added on top of the longest time a message can stay delivered-but-unacknowledged.
DEFAULT_VISIBILITY_MARGIN_S = 300.0
DEFAULT_MAX_TASK_RUNTIME_S = 3600.0
# As long as RETRY_EXTERNAL's longest back-off (retry_backoff_max).
DEFAULT_MAX_COUNTDOWN_S = 600.0

# Broker connection health. kombu 5.7 also uses health_check_interval for its own check of the BRPOP
# connection: a half-open one (ElastiCache failover, NAT timeout) is dropped after
# brpop_timeout (1 s) + 2 * interval instead of waiting forever.
HEALTH_CHECK_INTERVAL_S = 10
# A blocking command (a publish from the API, an ack) on a dead connection fails after this long
# instead of hanging; BRPOP itself runs in the event loop and is not bound by it.
SOCKET_TIMEOUT_S = 10.0
SOCKET_CONNECT_TIMEOUT_S = 5.0
# Linux keeps an idle TCP connection 2 hours before its first keepalive probe; these notice a
# vanished peer in about 60 + 3 * 10 s.
KEEPALIVE_IDLE_S = 60
KEEPALIVE_INTERVAL_S = 10
KEEPALIVE_PROBES = 3
# Connections each process keeps for publishing (kombu's default, stated here because connection
# counts on the broker must be planned: one pool per API process and per worker child).
BROKER_POOL_LIMIT = 10

DEFAULT_HEARTBEAT_INTERVAL_S = 10.0

# before_task_publish is process-wide; one uid so a second configure replaces the first handler.
_PUBLISH_DISPATCH_UID = "celery_fleet.publish"


@dataclass(frozen=True)
class FleetSettings:
    """What `configure` applied: the Celery settings it wrote and the figures it derived."""

    settings: Mapping[str, Any]
    visibility_timeout_s: float
    soft_shutdown_timeout_s: float
    max_delay_s: float
    health_file: str | None


def configure(
    app: Celery,
    *,
    max_task_runtime_s: float | None = None,
    max_countdown_s: float = DEFAULT_MAX_COUNTDOWN_S,
    visibility_margin_s: float = DEFAULT_VISIBILITY_MARGIN_S,
    stop_timeout_s: float = FARGATE_MAX_STOP_TIMEOUT_S,
    shutdown_margin_s: float = DEFAULT_SHUTDOWN_MARGIN_S,
    max_worker_deaths: int | None = DEFAULT_MAX_WORKER_DEATHS,
    publish_memory_limit_percent: float | None = DEFAULT_LIMIT_PERCENT,
    result_backend: str | None = None,
    task_events: bool = True,
    redact: Redact | None = None,
    argument_reprs: bool = False,
    repr_max_chars: int | None = None,
    healthcheck: bool = True,
    scale_in_protection: bool = True,
    heartbeat_interval_s: float = DEFAULT_HEARTBEAT_INTERVAL_S,
    health_file: str | None = None,
    failed_message_store: MessageStore | None = None,
    environ: Mapping[str, str] | None = None,
    **overrides: Any,
) -> FleetSettings:
    """Apply celery-fleet's production settings to `app`; call once, where the app is created.

    Behaviour by default:

    * late acknowledgement, requeue when a pool child dies, one message reserved per child;
    * a task whose pool child dies under it `max_worker_deaths` (3) times is failed as a poison
      message instead of delivered again (`celery_fleet.worker_lost`); `None` requeues forever;
    * sending a task raises `BrokerFullError` once the broker's memory reaches
      `publish_memory_limit_percent` (95 %) of its maxmemory, keeping the rest for the workers to
      take and acknowledge what is queued (`celery_fleet.reserve`); `None` never refuses;
    * no result backend (`task_ignore_result`); pass `result_backend=` to keep one, which also turns
      on `task_track_started`;
    * time limits have one source: in a fleet worker, the group's `time_limit_s` and
      `soft_time_limit_s`, which the stack sets as `CELERY_FLEET_TIME_LIMIT_S` and
      `CELERY_FLEET_SOFT_TIME_LIMIT_S` beside the same `--time-limit`/`--soft-time-limit`, become
      `task_time_limit` and `task_soft_time_limit`; elsewhere `max_task_runtime_s` (default: env
      `CELERY_FLEET_MAX_TASK_RUNTIME_S`, else 1 h) is `task_time_limit`. Passing a
      `max_task_runtime_s` the group's limit contradicts is an error, and the worker refuses to
      start when its command line's limits differ from the app's or a task's soft limit exceeds its
      hard one (`celery_fleet.limits`): either would lose long tasks at shutdown;
    * the broker's visibility timeout is `max_countdown_s` (600 s) + the longest run +
      `visibility_margin_s` (300 s): a message is unacknowledged from delivery through its countdown
      and its run, and one held longer is delivered again to another worker. The longest run is the
      larger of `max_task_runtime_s` and `CELERY_FLEET_MAX_TASK_RUNTIME_S`, which the stack sets to
      the longest time limit of any worker group on the broker: every client sweeps the one shared
      unacked set with its own visibility timeout, so each must cover the longest task of all;
    * on SIGTERM (with `REMAP_SIGTERM=SIGQUIT` in the container) running tasks get
      `stop_timeout_s - shutdown_margin_s` (90 s) to finish; what still runs then is put back on
      its queue before ECS's SIGKILL;
    * broker URL from the environment (`broker_url_from_env`), reconnecting forever;
    * every published task carries its send time in the `celery_fleet_sent_at` header;
    * messages are slim: bodies stored as UTF-8 JSON rather than base64 (so the broker's list
      compression works on them), no `argsrepr`/`kwargsrepr` display headers (`argument_reprs=True`
      keeps them, cut to `repr_max_chars` if given), no headers that only say a feature is unused,
      no `reply_to` unless the result backend is rpc://; workers with or without celery_fleet read
      both kinds of message;
    * task outcomes go to stdout as JSON lines (`celery_fleet.events`, `task_events=False` to skip),
      failed tasks' arguments passed through `redact` first;
    * the message of every task that failed for good is kept for replay (`celery_fleet.keep`) in
      `failed_message_store`, by default the bucket the stack names in
      `CELERY_FLEET_FAILED_MESSAGES_BUCKET`; with neither, nothing is kept;
    * the worker touches `health_file` every `heartbeat_interval_s` while it consumes
      (`celery-fleet-healthcheck` reads it);
    * in an ECS task, the worker holds ECS task scale-in protection while it has tasks and gives it
      up when idle, so scaling in stops idle workers only (`celery_fleet.protection`;
      `scale_in_protection=False` to skip).

    Any Celery setting can be overridden by passing it by name (`worker_prefetch_multiplier=4`);
    a `broker_transport_options` override is merged key by key over the derived options. Values
    written here win over what the app set before (including `config_from_object`); a value set on
    `app.conf` after this call wins over it.

    Before anything is applied, an installed Celery that lacks an internal celery_fleet relies on is
    refused with `UnsupportedCeleryError` (`celery_fleet.celery_support`: the internals and the
    supported range).
    """
    check_celery()
    env = os.environ if environ is None else environ
    fleet_runtime_s = _env_seconds(env, worker_env.MAX_TASK_RUNTIME_ENV)
    max_task_runtime_s, group_soft_limit_s = _time_limits(env, max_task_runtime_s, fleet_runtime_s)
    _require_positive(
        max_task_runtime_s=max_task_runtime_s,
        stop_timeout_s=stop_timeout_s,
        heartbeat_interval_s=heartbeat_interval_s,
    )
    _require_non_negative(
        max_countdown_s=max_countdown_s,
        visibility_margin_s=visibility_margin_s,
        shutdown_margin_s=shutdown_margin_s,
    )
    if shutdown_margin_s >= stop_timeout_s:
        raise ValueError(
            f"shutdown_margin_s={shutdown_margin_s} leaves no soft shutdown within "
            f"stop_timeout_s={stop_timeout_s}: use a margin below the stop timeout (default "
            f"{DEFAULT_SHUTDOWN_MARGIN_S:.0f} s of {FARGATE_MAX_STOP_TIMEOUT_S:.0f} s)."
        )
    _check_delivery_guards(max_worker_deaths, publish_memory_limit_percent)
    if repr_max_chars is not None and repr_max_chars < 0:
        raise ValueError(f"repr_max_chars={repr_max_chars} must be 0 or more (None keeps the reprs).")
    if repr_max_chars is not None and not argument_reprs:
        raise ValueError(
            f"repr_max_chars={repr_max_chars} needs argument_reprs=True: the argsrepr/kwargsrepr "
            "headers are left out by default."
        )
    _reject_unknown_settings(overrides)

    longest_run_s = max(max_task_runtime_s, fleet_runtime_s or 0.0)
    visibility_timeout_s = max_countdown_s + longest_run_s + visibility_margin_s
    soft_shutdown_timeout_s = stop_timeout_s - shutdown_margin_s
    transport_options = _transport_options(visibility_timeout_s)
    transport_options.update(overrides.pop("broker_transport_options", None) or {})
    _check_overrides_fit(
        overrides,
        transport_options,
        max_task_runtime_s=max_task_runtime_s,
        longest_run_s=longest_run_s,
        max_countdown_s=max_countdown_s,
        soft_limit_s=group_soft_limit_s,
    )

    settings: dict[str, Any] = {
        "broker_url": overrides.pop("broker_url", None) or broker_url_from_env(env),
        # Ack after the task ran, so a worker that dies mid-task leaves the message to be redelivered
        # (at-least-once): tasks must be idempotent.
        "task_acks_late": True,
        # A pool child killed mid-task (the kernel's OOM killer, a crash) delivers the message again
        # instead of failing it with WorkerLostError; celery_fleet.worker_lost bounds how often.
        "task_reject_on_worker_lost": True,
        # Long tasks: a child that holds a second message delays it behind its current task.
        "worker_prefetch_multiplier": 1,
        "task_time_limit": max_task_runtime_s,
        "task_soft_time_limit": group_soft_limit_s,
        "task_ignore_result": result_backend is None,
        "result_backend": result_backend,
        # STARTED is only visible through a result backend.
        "task_track_started": result_backend is not None,
        "worker_soft_shutdown_timeout": soft_shutdown_timeout_s,
        # An idle worker stops at once. Waiting anyway would keep ETA tasks it holds no better: the
        # wait is a blocking sleep in the signal handler (WorkController.wait_for_soft_shutdown), so
        # no ETA fires during it, and kombu puts held messages back on their queue when the channel
        # closes either way (tests/runtime/test_shutdown.py). It would cost every scale-in 90 s.
        "worker_enable_soft_shutdown_on_idle": False,
        "broker_transport_options": transport_options,
        "broker_connection_retry_on_startup": True,
        # Reconnect forever: the health check, not a crash loop, decides when a worker is replaced.
        "broker_connection_max_retries": None,
        # Let tasks running when the broker connection drops finish. On Redis the ack is a delete of
        # the delivery tag from the unacked hash, which works from the new connection: measured
        # (tests/runtime/test_broker_restart.py), each such task then runs once, where cancelling
        # it re-ran it after the visibility timeout (75 min by default), and, after a failover to
        # an empty primary, lost it with the unacked hash.
        "worker_cancel_long_running_tasks_on_connection_loss": False,
        "broker_pool_limit": BROKER_POOL_LIMIT,
    }
    settings.update(overrides)
    app.conf.update(settings)
    _install_delivery_guards(app, max_worker_deaths, publish_memory_limit_percent)

    max_delay_s = float(transport_options["visibility_timeout"]) - longest_run_s
    _connect_publish_stamper(
        PublishStamper(
            max_delay_s=max_delay_s,
            argument_reprs=argument_reprs,
            repr_max_chars=repr_max_chars,
            # Only the rpc:// backend sends results to the publisher's reply_to queue.
            keep_reply_to=(result_backend or "").startswith("rpc"),
        )
    )

    resolved_health_file: str | None = None
    if healthcheck:
        resolved_health_file = health_file or env.get(worker_env.HEALTH_FILE_ENV) or DEFAULT_HEALTH_FILE
        install_heartbeat(app, path=resolved_health_file, interval_s=heartbeat_interval_s)

    from celery_fleet import protection  # noqa: PLC0415

    if scale_in_protection:
        protection.install_from_env(env)
    else:
        protection.uninstall()

    # Before the task events: in the main process both act on one signal, and the failure line
    # carries the key the keeper has just written.
    from celery_fleet import keep  # noqa: PLC0415

    if failed_message_store is not None:
        keep.install(app, store=failed_message_store)
    else:
        keep.install_from_env(app, env)

    if task_events:
        # Imported here so that an app running with task_events=False never loads the emitter.
        from celery_fleet import events  # noqa: PLC0415

        events.install_checked(app, redact=redact)

    return FleetSettings(
        settings=MappingProxyType(settings),
        visibility_timeout_s=float(transport_options["visibility_timeout"]),
        soft_shutdown_timeout_s=float(settings["worker_soft_shutdown_timeout"]),
        max_delay_s=max_delay_s,
        health_file=resolved_health_file,
    )


def _transport_options(visibility_timeout_s: float) -> dict[str, Any]:
    keepalive: dict[int, int] = {}
    # TCP_KEEPIDLE and friends are Linux (and recent macOS) names; elsewhere the OS defaults apply.
    for name, value in (
        ("TCP_KEEPIDLE", KEEPALIVE_IDLE_S),
        ("TCP_KEEPINTVL", KEEPALIVE_INTERVAL_S),
        ("TCP_KEEPCNT", KEEPALIVE_PROBES),
    ):
        if hasattr(socket, name):
            keepalive[getattr(socket, name)] = value
    return {
        "visibility_timeout": int(visibility_timeout_s),
        "health_check_interval": HEALTH_CHECK_INTERVAL_S,
        "socket_keepalive": True,
        "socket_keepalive_options": keepalive,
        "socket_timeout": SOCKET_TIMEOUT_S,
        "socket_connect_timeout": SOCKET_CONNECT_TIMEOUT_S,
        # One retry of a command that timed out rides through a failover's stall. A timed-out
        # LPUSH that did reach Redis is then sent twice: one more duplicate under at-least-once.
        "retry_on_timeout": True,
        # kombu's virtual transports base64 every body by default, which adds a third and leaves
        # nothing for the broker's list compression to find. None stores the body as it was
        # serialized; consumers decode each message by its own body_encoding property, so workers
        # read these messages and old base64 ones alike (tests/runtime/test_interop.py).
        "body_encoding": None,
    }


# Transport options that change kombu's Redis key names. The queue-depth publisher (a Lambda that
# reads the broker directly) assumes the defaults, so a change would make every queue look empty.
_PUBLISHER_KEY_LAYOUT = frozenset({"global_keyprefix", "sep", "unacked_key", "unacked_index_key"})


def _check_overrides_fit(
    overrides: Mapping[str, Any],
    transport_options: Mapping[str, Any],
    *,
    max_task_runtime_s: float,
    longest_run_s: float,
    max_countdown_s: float,
    soft_limit_s: float | None,
) -> None:
    time_limit = overrides.get("task_time_limit")
    if time_limit is not None and time_limit > max_task_runtime_s:
        raise ValueError(
            f"task_time_limit={time_limit} exceeds max_task_runtime_s={max_task_runtime_s}: the "
            f"visibility timeout is sized from max_task_runtime_s, so pass max_task_runtime_s="
            f"{time_limit} instead."
        )
    soft_limit = overrides.get("task_soft_time_limit", soft_limit_s)
    hard_limit = time_limit if time_limit is not None else max_task_runtime_s
    if soft_limit is not None and soft_limit > hard_limit:
        raise ValueError(
            f"task_soft_time_limit={soft_limit} exceeds the hard limit task_time_limit={hard_limit}: at "
            f"shutdown the pool applies the hard limit and acknowledges longer tasks as timed out, so "
            f"they would be lost. Use a soft limit at most the hard one."
        )
    fixed = sorted(set(transport_options) & _PUBLISHER_KEY_LAYOUT)
    if fixed:
        raise ValueError(
            f"broker_transport_options {', '.join(fixed)} would move the keys the queue-depth publisher "
            "reads (kombu's default key prefix, priority separator and unacked hash): leave them out."
        )
    needed = longest_run_s + max_countdown_s
    visibility = transport_options["visibility_timeout"]
    if visibility < needed:
        raise ValueError(
            f"broker_transport_options visibility_timeout={visibility} is below the longest run "
            f"({longest_run_s}) + max_countdown_s = {needed}: messages would be delivered twice. Leave "
            f"it out to have it derived, or lower those limits."
        )


def _check_delivery_guards(max_worker_deaths: int | None, publish_memory_limit_percent: float | None) -> None:
    if max_worker_deaths is not None and (isinstance(max_worker_deaths, bool) or max_worker_deaths < 1):
        raise ValueError(
            f"max_worker_deaths={max_worker_deaths} must be 1 or more (None requeues a task whose worker "
            f"dies without limit)."
        )
    if publish_memory_limit_percent is not None and not 0 < publish_memory_limit_percent <= 100:
        raise ValueError(
            f"publish_memory_limit_percent={publish_memory_limit_percent} must be above 0 and at most 100 "
            f"(None never refuses a publish)."
        )


def _install_delivery_guards(
    app: Celery, max_worker_deaths: int | None, publish_memory_limit_percent: float | None
) -> None:
    """The checks that keep a task from being lost: at start, on a lost child, at publish."""
    install_limits_check(app)
    if max_worker_deaths is None:
        uninstall_poison_guard()
    else:
        install_poison_guard(app, max_deaths=max_worker_deaths)
    if publish_memory_limit_percent is None:
        uninstall_memory_reserve(app)
    else:
        install_memory_reserve(app, limit_percent=publish_memory_limit_percent)


def _time_limits(
    env: Mapping[str, str], max_task_runtime_s: float | None, fleet_runtime_s: float | None
) -> tuple[float, float | None]:
    """The app's hard and soft task limits: the worker group's when the stack gave them."""
    hard, soft = worker_env.TIME_LIMIT_ENV, worker_env.SOFT_TIME_LIMIT_ENV
    group_limit_s = _env_seconds(env, hard)
    group_soft_limit_s = _env_seconds(env, soft)
    if group_limit_s is None:
        if group_soft_limit_s is not None:
            raise ValueError(f"{soft} is set without {hard}: set both or neither.")
        if max_task_runtime_s is None:
            return fleet_runtime_s or DEFAULT_MAX_TASK_RUNTIME_S, None
        return max_task_runtime_s, None
    if max_task_runtime_s is not None and float(max_task_runtime_s) != group_limit_s:
        raise ValueError(
            f"max_task_runtime_s={max_task_runtime_s} contradicts {hard}={group_limit_s:g}, "
            f"the worker group's time_limit_s: tasks would get {max_task_runtime_s} while the worker "
            f"runs with --time-limit={group_limit_s:g}. Leave max_task_runtime_s out (the group's "
            f"limit applies) or change the group's time_limit_s."
        )
    if group_soft_limit_s is not None and group_soft_limit_s > group_limit_s:
        raise ValueError(
            f"{soft}={group_soft_limit_s:g} exceeds {hard}={group_limit_s:g}: "
            f"the soft limit must not be above the hard one."
        )
    return group_limit_s, group_soft_limit_s


def _env_seconds(env: Mapping[str, str], name: str) -> float | None:
    raw = env.get(name, "").strip()
    if not raw:
        return None
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{name}={raw!r} is not a number of seconds.") from None
    if not value > 0:
        raise ValueError(f"{name}={raw!r} must be greater than 0.")
    return value


def _reject_unknown_settings(overrides: Mapping[str, Any]) -> None:
    # Imported here, after check_celery(): a Celery without it gets the check's error, not an ImportError.
    from celery.app.defaults import DEFAULTS  # noqa: PLC0415

    unknown = sorted(name for name in overrides if name not in DEFAULTS)
    if unknown:
        raise TypeError(
            f"configure() got unknown keyword(s) {', '.join(unknown)}: extra keywords must be Celery "
            f"setting names in lower case (e.g. worker_prefetch_multiplier)."
        )


def _require_positive(**values: float) -> None:
    for name, value in values.items():
        if not value > 0:
            raise ValueError(f"{name}={value} must be greater than 0.")


def _require_non_negative(**values: float) -> None:
    for name, value in values.items():
        if not value >= 0:
            raise ValueError(f"{name}={value} must be 0 or more.")


def _connect_publish_stamper(stamper: PublishStamper) -> None:
    before_task_publish.disconnect(dispatch_uid=_PUBLISH_DISPATCH_UID)
    before_task_publish.connect(stamper, weak=False, dispatch_uid=_PUBLISH_DISPATCH_UID)
