"""What a failure line shows of a task's arguments, and how text is cleaned of what was hidden.

The application's redaction hook (`Redact`) sees the arguments first; every value it changed is then
cut out of the exception message and the exception lines of the traceback as well. Reprs are
bounded before the line's own byte caps apply.
"""

from __future__ import annotations

import reprlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

Redact = Callable[[str, Sequence[Any], Mapping[str, Any]], tuple[Sequence[Any], Mapping[str, Any]]]
"""`redact(task_name, args, kwargs) -> (args, kwargs)`: what a failure line may show of the arguments.

Called once per failure line, before the arguments are turned into bounded reprs. Every argument
value the hook changed is also cut out of the exception message and of the exception lines of the
traceback (a `ValueError(f"bad password {password}")` does not show the password the hook hid). If
the hook raises, the line shows none of them (`REDACTION_FAILED`), never the unredacted values.
Text that never was an argument (a secret read from a database) cannot be found this way: keep it
out of exception messages.
"""

REDACTION_FAILED = "<redaction failed>"
# What replaces an argument value the hook hid, wherever it appears in text.
REDACTED = "<redacted>"
# Shorter values are left in text: hiding every "1" or "ok" would garble messages, not protect them.
_MIN_SECRET_CHARS = 3
_MAX_SECRETS = 64

_repr = reprlib.Repr()
_repr.maxlevel = 3
_repr.maxstring = 160
_repr.maxother = 160
_repr.maxlist = _repr.maxtuple = _repr.maxset = _repr.maxdict = 16


@dataclass(frozen=True, slots=True)
class Shown:
    """A failure line's `args` and `kwargs` text, and the cleaning its other text goes through."""

    args: str
    kwargs: str
    scrub: Callable[[str], str]


def shown_arguments(
    redact: Redact | None,
    name: str,
    args: Any,
    kwargs: Any,
    *,
    on_error: Callable[[BaseException], None],
) -> Shown:
    """What a failure line shows of the arguments; a hook that raises hides them all (`on_error`
    hears of it)."""
    args = args if args is not None else ()
    kwargs = kwargs if kwargs is not None else {}
    if redact is None:
        return Shown(bounded_repr(args), bounded_repr(kwargs), _no_scrub)
    try:
        shown_args, shown_kwargs = redact(name, args, kwargs)
        secrets: list[str] = []
        _changed(args, shown_args, secrets, 0)
        _changed(kwargs, shown_kwargs, secrets, 0)
    except Exception as exc:
        on_error(exc)
        return Shown(REDACTION_FAILED, REDACTION_FAILED, _hide_all)
    return Shown(bounded_repr(shown_args), bounded_repr(shown_kwargs), _scrubber(secrets))


def bounded_repr(value: Any) -> str:
    """`repr(value)` cut to a few levels and items; never raises."""
    try:
        return _repr.repr(value)
    except Exception:
        return f"<unreprable {type(value).__name__}>"


def _no_scrub(text: str) -> str:
    return text


def _hide_all(text: str) -> str:
    return REDACTION_FAILED if text else text


def _scrubber(secrets: list[str]) -> Callable[[str], str]:
    if not secrets:
        return _no_scrub
    # Longest first: a secret that contains another is cut whole.
    ordered = sorted(set(secrets), key=len, reverse=True)

    def scrub(text: str) -> str:
        for secret in ordered:
            if secret in text:
                text = text.replace(secret, REDACTED)
        return text

    return scrub


def _changed(original: Any, shown: Any, secrets: list[str], depth: int) -> None:
    """Collect in `secrets` the text of every value of `original` the hook changed in `shown`."""
    if len(secrets) >= _MAX_SECRETS or original is shown:
        return
    if depth < 4 and isinstance(original, Mapping) and isinstance(shown, Mapping):
        for key, value in original.items():
            if key in shown:
                _changed(value, shown[key], secrets, depth + 1)
            else:
                _leaves(value, secrets, depth + 1)
        return
    if (
        depth < 4
        and isinstance(original, list | tuple)
        and isinstance(shown, list | tuple)
        and len(original) == len(shown)
    ):
        for value, shown_value in zip(original, shown, strict=True):
            _changed(value, shown_value, secrets, depth + 1)
        return
    try:
        same = bool(original == shown)
    except Exception:
        same = False
    if not same:
        _leaves(original, secrets, depth)


def _leaves(value: Any, secrets: list[str], depth: int) -> None:
    if len(secrets) >= _MAX_SECRETS:
        return
    if isinstance(value, str):
        text = value
    elif isinstance(value, bytes):
        text = value.decode("utf-8", "replace")
    elif isinstance(value, int | float) and not isinstance(value, bool):
        text = str(value)
    elif depth < 4 and isinstance(value, Mapping):
        for item in list(value.values())[:_MAX_SECRETS]:
            _leaves(item, secrets, depth + 1)
        return
    elif depth < 4 and isinstance(value, list | tuple | set | frozenset):
        for item in list(value)[:_MAX_SECRETS]:
            _leaves(item, secrets, depth + 1)
        return
    else:
        return
    if len(text) >= _MIN_SECRET_CHARS:
        secrets.append(text)
