"""ECS task scale-in protection while the worker holds tasks, so scaling in stops only idle workers.

In an ECS task, the worker's main process asks the ECS agent to protect its task as soon as it
holds a task it will run (`celery.worker.state.reserved_requests`: received and not finished,
running or waiting for a pool slot), and to drop the protection once it has held none for
`idle_grace_s`. The agent's endpoint (ECS developer guide, "Task scale-in protection endpoint"):
`PUT ${ECS_AGENT_URI}/task-protection/v1/state` with `{"ProtectionEnabled": true,
"ExpiresInMinutes": N}` (1 to 2,880) or `{"ProtectionEnabled": false}`; the answer is
`{"protection": {"ProtectionEnabled", "ExpirationDate", "TaskArn"}}`, or `{"failure": {"Arn",
"Reason", "Detail"}}`, or `{"error": {"Arn", "Code", "Message"}}` (AccessDenied without
`ecs:UpdateTaskProtection` on the task role, throttling, a control plane out of reach).

What it covers: ECS stops no protected task for a scale-in (Application Auto Scaling lowering the
desired count) or a deployment, so a busy worker keeps running while idle ones are stopped, and a
deployment waits for it. Protection expires by itself after `expires_in_minutes` (renewed at half
that while tasks keep coming), so a worker hung with a task does not keep it forever. It does not
cover a Fargate Spot interruption, a task stopped by hand or for a failed health check, or a worker
whose protection expired: for those the soft shutdown (celery_fleet.configure) gives running tasks
the stop timeout and puts back what is still running.

Every request runs on a thread of its own, never on the consumer's: a slow or failing agent costs
protection (logged, retried on the next check), never consumption.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from typing import Any

from celery import signals

from celery_fleet.contract import worker_env

logger = logging.getLogger("celery_fleet")

PROTECTION_PATH = "/task-protection/v1/state"
# The agent's bounds on ExpiresInMinutes.
MIN_EXPIRES_MINUTES = 1
MAX_EXPIRES_MINUTES = 2880
# Defaults: the longest a hung worker keeps its protection, how often the state is checked, how
# long a worker stays idle before it gives protection up (a burst's gaps between tasks should not
# cost two requests each), and how long one request may take.
DEFAULT_EXPIRES_MINUTES = 60
DEFAULT_CHECK_INTERVAL_S = 5.0
DEFAULT_IDLE_GRACE_S = 10.0
DEFAULT_REQUEST_TIMEOUT_S = 3.0


# The agent listens on a link-local address inside the task: never through an HTTP(S)_PROXY the app
# may have set for its own calls.
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class ProtectionError(RuntimeError):
    """The agent refused or could not set the protection; the message says what it answered."""


def put_protection(
    agent_uri: str, *, enabled: bool, expires_in_minutes: int, timeout_s: float
) -> dict[str, Any]:
    """One PUT to the agent; the `protection` object it answered, or ProtectionError."""
    body: dict[str, Any] = {"ProtectionEnabled": enabled}
    if enabled:
        body["ExpiresInMinutes"] = expires_in_minutes
    request = urllib.request.Request(
        agent_uri.rstrip("/") + PROTECTION_PATH,
        data=json.dumps(body).encode(),
        method="PUT",
        headers={"Content-Type": "application/json"},
    )
    try:
        with _DIRECT.open(request, timeout=timeout_s) as response:
            answer = json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as error:
        raise ProtectionError(f"HTTP {error.code}: {_describe(error.read())}") from None
    except (OSError, ValueError) as error:
        raise ProtectionError(f"{type(error).__name__}: {error}") from None
    protection = answer.get("protection") if isinstance(answer, dict) else None
    if not isinstance(protection, dict):
        raise ProtectionError(_describe(json.dumps(answer).encode()))
    return protection


def _describe(raw: bytes) -> str:
    try:
        answer = json.loads(raw)
    except ValueError:
        return raw[:200].decode(errors="replace")
    for kind in ("error", "failure"):
        detail = answer.get(kind) if isinstance(answer, dict) else None
        if isinstance(detail, dict):
            code = detail.get("Code") or detail.get("Reason")
            return f"{kind} {code}: {detail.get('Message') or detail.get('Detail') or ''}".strip()
    return raw[:200].decode(errors="replace")


def _held_tasks() -> set[str]:
    # The main process's own bookkeeping: a request leaves it when it is acknowledged or rejected.
    from celery.worker import state  # noqa: PLC0415

    # The consumer adds and removes requests on its own thread: a set that changed size while being
    # copied is copied again.
    for _ in range(10):
        try:
            return {request.id for request in list(state.reserved_requests)}
        except RuntimeError:
            continue
    return {request.id for request in list(state.reserved_requests)}


class ProtectionKeeper:
    """Keeps the task protected while `held()` (the ids of the tasks the worker holds) is not empty.

    Renewal needs a task received within the last `expires_in_minutes`: a worker that has held the
    same tasks that long (hung) lets its protection expire, as the module docstring says.
    """

    def __init__(
        self,
        agent_uri: str,
        *,
        expires_in_minutes: int = DEFAULT_EXPIRES_MINUTES,
        check_interval_s: float = DEFAULT_CHECK_INTERVAL_S,
        idle_grace_s: float = DEFAULT_IDLE_GRACE_S,
        request_timeout_s: float = DEFAULT_REQUEST_TIMEOUT_S,
        held: Callable[[], set[str]] = _held_tasks,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not MIN_EXPIRES_MINUTES <= expires_in_minutes <= MAX_EXPIRES_MINUTES:
            raise ValueError(
                f"expires_in_minutes={expires_in_minutes}: the ECS agent takes {MIN_EXPIRES_MINUTES} to "
                f"{MAX_EXPIRES_MINUTES} minutes"
            )
        if check_interval_s <= 0 or idle_grace_s < 0 or request_timeout_s <= 0:
            raise ValueError(
                f"check_interval_s={check_interval_s} and request_timeout_s={request_timeout_s} must be "
                f"positive, idle_grace_s={idle_grace_s} not negative"
            )
        self.agent_uri = agent_uri
        self.expires_in_minutes = expires_in_minutes
        self.check_interval_s = check_interval_s
        self.idle_grace_s = idle_grace_s
        self.request_timeout_s = request_timeout_s
        self._held = held
        self._first_seen: dict[str, float] = {}
        self._clock = clock
        # What the agent last confirmed: None until the first answer.
        self.protected: bool | None = None
        self._renew_at = 0.0
        self._idle_since: float | None = None
        self._failing = False
        self._expiring = False
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="celery-fleet-protection", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()

    def nudge(self, **_: Any) -> None:
        """Check now (a task just arrived): protection should not wait for the next check."""
        self._wake.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.check()
            self._wake.wait(self.check_interval_s)
            self._wake.clear()

    def check(self) -> None:
        """Set or drop the protection as the worker's state asks; never raises."""
        now = self._clock()
        try:
            held = self._held()
        except RuntimeError:
            # The consumer kept changing its requests while they were read: the next check reads again.
            return
        self._first_seen = {task: self._first_seen.get(task, now) for task in held}
        if held:
            self._idle_since = None
            if self.protected is not True:
                self._put(enabled=True, now=now)
            elif now >= self._renew_at:
                newest = max(self._first_seen.values())
                if now - newest < self.expires_in_minutes * 60:
                    self._put(enabled=True, now=now)
                elif not self._expiring:
                    self._expiring = True
                    logger.warning(
                        "celery_fleet: this worker has held the same %d task(s) for over %d minutes; its "
                        "ECS task scale-in protection is left to expire",
                        len(held),
                        self.expires_in_minutes,
                    )
            return
        self._expiring = False
        if self._idle_since is None:
            self._idle_since = now
        if self.protected is not False and now - self._idle_since >= self.idle_grace_s:
            self._put(enabled=False, now=now)

    def _put(self, *, enabled: bool, now: float) -> None:
        try:
            put_protection(
                self.agent_uri,
                enabled=enabled,
                expires_in_minutes=self.expires_in_minutes,
                timeout_s=self.request_timeout_s,
            )
        except ProtectionError as error:
            # Unknown now: the next check asks again. Consumption goes on either way.
            self.protected = None
            if not self._failing:
                logger.warning(
                    "celery_fleet: could not %s ECS task scale-in protection (%s); the worker keeps "
                    "consuming and will retry",
                    "set" if enabled else "drop",
                    error,
                )
            self._failing = True
            return
        if self._failing:
            logger.warning("celery_fleet: ECS task scale-in protection requests work again")
        self._failing = False
        self.protected = enabled
        # Renewed at half its life, so a worker that keeps busy never runs unprotected.
        self._renew_at = now + self.expires_in_minutes * 30.0


_Handler = Callable[..., None]
_INSTALLED: list[tuple[ProtectionKeeper, _Handler, _Handler]] = []


def install_from_env(env: Mapping[str, str], **options: Any) -> ProtectionKeeper | None:
    """In an ECS task (ECS_AGENT_URI set), keep a ProtectionKeeper running in the worker's main
    process from `worker_ready` to shutdown; elsewhere nothing. Returns the keeper, if any."""
    uninstall()
    agent_uri = env.get(worker_env.ECS_AGENT_URI_ENV)
    if not agent_uri:
        return None
    keeper = ProtectionKeeper(agent_uri, **options)

    def start(**_: Any) -> None:
        keeper.start()

    def stop(**_: Any) -> None:
        keeper.stop()

    # worker_ready and task_received are sent in the main process only, after the pool has forked.
    signals.worker_ready.connect(start, weak=False)
    signals.task_received.connect(keeper.nudge, weak=False)
    signals.worker_shutting_down.connect(stop, weak=False)
    _INSTALLED.append((keeper, start, stop))
    return keeper


def uninstall() -> None:
    """Disconnect what install_from_env connected (configure() calls it again on each call)."""
    while _INSTALLED:
        keeper, start, stop = _INSTALLED.pop()
        signals.worker_ready.disconnect(start)
        signals.task_received.disconnect(keeper.nudge)
        signals.worker_shutting_down.disconnect(stop)
        keeper.stop()
