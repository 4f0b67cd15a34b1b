"""`never_raise`: what celery_fleet does in a Celery signal must never break the task or the worker.

Receivers run inside task tracing, in the worker's consumer and in the pool's result callbacks; an
error there would fail a task that succeeded or reach Celery's own handling. A receiver method under
`@never_raise` hands any `Exception` to its object's `_failed` (which counts it and reports the first
one on stderr) and returns None, as a receiver that finished would.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, Protocol, TypeVar, cast


class CountsErrors(Protocol):
    """An object whose receivers run under `never_raise`: it is told of every error they hit."""

    def _failed(self, exc: BaseException) -> None: ...


_Receiver = TypeVar("_Receiver", bound=Callable[..., None])


def never_raise(receiver: _Receiver) -> _Receiver:
    """`receiver` (a method of a `CountsErrors`) with every `Exception` it raises passed to
    `self._failed` instead."""

    @functools.wraps(receiver)
    def guarded(self: CountsErrors, *args: Any, **kwargs: Any) -> None:
        try:
            receiver(self, *args, **kwargs)
        except Exception as exc:
            self._failed(exc)

    return cast(_Receiver, guarded)
