"""A worker bootstep that refuses to start with time limits that would lose tasks at shutdown.

Each job the prefork pool runs carries its own hard limit: the task's `time_limit` (the app's
`task_time_limit` unless the task sets one), else the worker's `--time-limit`; the soft limit
likewise. While the worker runs, the pool arms the soft limit first and the hard one after it, so
a hard limit below the soft one is in effect raised to the soft one. When the worker stops, the
soft-shutdown wait runs no timers and `pool.stop()` then checks each job against its own hard
limit (billiard/pool.py `TimeoutHandler.handle_timeouts` from `finish_at_shutdown`): a job older
than that is acknowledged as timed out (`task_acks_on_failure_or_timeout`), without a log line,
a `task_failure` signal or a requeue (celery/worker/request.py `on_timeout` under
`state.should_terminate`). A soft limit above the hard one therefore loses every task that had run
longer than the hard limit less the soft-shutdown wait when SIGTERM came.

A `--time-limit` or `--soft-time-limit` that differs from the app's setting is refused too: the
app's value is the one every task gets, so the command line's would be silently ignored.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from celery import bootsteps
from celery.exceptions import ImproperlyConfigured

from celery_fleet.contract import worker_env

if TYPE_CHECKING:
    from celery import Celery

# At most this many tasks are named in the error; the count says how many more.
_NAMED_TASKS = 5


class LimitsCheck(bootsteps.Step):  # type: ignore[misc]
    """Raises `ImproperlyConfigured` at worker start when `limit_problems` finds any."""

    label = "celery_fleet limits check"

    def __init__(self, parent: Any, **kwargs: Any) -> None:
        super().__init__(parent, **kwargs)
        problems = limit_problems(
            parent.app.conf,
            parent.app.tasks.values(),
            worker_time_limit=parent.time_limit,
            worker_soft_time_limit=parent.soft_time_limit,
        )
        if problems:
            raise ImproperlyConfigured(
                "celery_fleet: refusing to start: "
                + " ".join(problems)
                + " Limits come from the worker group's time_limit_s and soft_time_limit_s (the stack sets "
                f"{worker_env.TIME_LIMIT_ENV} and {worker_env.SOFT_TIME_LIMIT_ENV} for configure()); see "
                "docs/runtime.md#time-limits."
            )


def limit_problems(
    conf: Mapping[str, Any],
    tasks: Iterable[Any],
    *,
    worker_time_limit: float | None,
    worker_soft_time_limit: float | None,
) -> list[str]:
    """What is inconsistent between the app's limits, its tasks' and the worker's, one sentence each.

    `worker_*` are the worker's effective limits: its command line's, else the app's settings.
    """
    problems: list[str] = []
    for flag, setting, worker_value in (
        ("--time-limit", "task_time_limit", worker_time_limit),
        ("--soft-time-limit", "task_soft_time_limit", worker_soft_time_limit),
    ):
        app_value = conf.get(setting)
        if app_value is not None and worker_value is not None and float(app_value) != float(worker_value):
            problems.append(
                f"the worker's {flag}={worker_value:g} differs from the app's "
                f"{setting}={float(app_value):g}, which is what every task gets."
            )
    unsafe: list[tuple[bool, str]] = []
    for task in tasks:
        hard = getattr(task, "time_limit", None) or worker_time_limit
        soft = getattr(task, "soft_time_limit", None) or worker_soft_time_limit
        if hard and soft and float(soft) > float(hard):
            # The app's own tasks first: Celery's built-in ones only share the app's limits.
            builtin = str(task.name).startswith("celery.")
            unsafe.append((builtin, f"{task.name} (soft {float(soft):g} s > hard {float(hard):g} s)"))
    if unsafe:
        named = ", ".join(text for _, text in sorted(unsafe)[:_NAMED_TASKS])
        more = f" and {len(unsafe) - _NAMED_TASKS} more" if len(unsafe) > _NAMED_TASKS else ""
        problems.append(
            f"Soft time limit above the hard one for {named}{more}: at shutdown the pool applies the hard "
            f"limit and acknowledges tasks older than it as timed out, so they are lost; give each task a "
            f"hard limit at least its soft one."
        )
    return problems


def install_limits_check(app: Celery) -> None:
    """Add the check to `app`'s worker blueprint (once: the blueprint's steps are a set)."""
    steps: set[type[Any]] = app.steps["worker"]
    steps.add(LimitsCheck)
