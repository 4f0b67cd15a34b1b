"""What a failure line says of an exception: its chain as Python prints it, each exception line
cleaned of what the redaction hook hid, and the frame of the application's code it came from.

The chain is taken when the task raises (its traceback objects do not outlive Celery's failure
handling) and rendered when the line is written, with the redacted text.
"""

from __future__ import annotations

import os
import sys
import sysconfig
from collections.abc import Callable
from traceback import StackSummary, extract_tb

Chain = list[tuple[BaseException, StackSummary, str]]
"""An exception and its causes, outermost first: (exception, its frames, the sentence that links it
to the next one)."""

_MAX_CHAIN = 8


def safe_str(exc: BaseException) -> str:
    """`str(exc)`, or a placeholder naming its type when that raises."""
    try:
        return str(exc)
    except Exception:
        return f"<unprintable {type(exc).__name__}>"


def exception_chain(exc: BaseException) -> Chain:
    """`exc` and its causes, outermost cause first as Python prints them: (exception, frames, the
    sentence that links it to the next one)."""
    chain: Chain = []
    seen: set[int] = set()
    current: BaseException | None = exc
    link = ""
    while current is not None and id(current) not in seen and len(chain) < _MAX_CHAIN:
        seen.add(id(current))
        chain.insert(0, (current, extract_tb(current.__traceback__, limit=64), link))
        if current.__cause__ is not None:
            current, link = current.__cause__, _CAUSE
        elif current.__context__ is not None and not current.__suppress_context__:
            current, link = current.__context__, _CONTEXT
        else:
            current = None
    return chain


_CAUSE = "\nThe above exception was the direct cause of the following exception:\n\n"
_CONTEXT = "\nDuring handling of the above exception, another exception occurred:\n\n"


def render_traceback(chain: Chain, scrub: Callable[[str], str]) -> str:
    """The traceback as Python prints it, each exception line passed through `scrub`."""
    parts: list[str] = []
    for exc, stack, link in chain:
        if stack:
            parts.append("Traceback (most recent call last):\n")
            # As Python prints frames, without 3.11's caret lines: they cost a parse of each line.
            for frame in stack:
                parts.append(f'  File "{frame.filename}", line {frame.lineno}, in {frame.name}\n')
                if frame.line:
                    parts.append(f"    {frame.line.strip()}\n")
        kind = type(exc)
        name = kind.__qualname__
        if kind.__module__ not in ("builtins", "__main__"):
            name = f"{kind.__module__}.{name}"
        message = scrub(safe_str(exc))
        parts.append(f"{name}: {message}\n" if message else f"{name}\n")
        # The link printed after an exception introduces the one raised while handling it.
        if link:
            parts.append(link)
    return "".join(parts)


def _library_prefixes() -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Directories of Python and Celery's own code, and of installed third-party packages."""
    paths = sysconfig.get_paths()
    own = {paths[name] for name in ("stdlib", "platstdlib") if name in paths}
    for module_name in ("celery", "billiard", "kombu", "vine", "celery_fleet"):
        module = sys.modules.get(module_name)
        location = getattr(module, "__file__", None)
        if isinstance(location, str):
            own.add(os.path.dirname(location))
    installed = {paths[name] for name in ("purelib", "platlib") if name in paths}
    return tuple(os.path.join(p, "") for p in own), tuple(os.path.join(p, "") for p in installed)


_LIBRARIES: list[tuple[tuple[str, ...], tuple[str, ...]]] = []


def user_frame(exc: BaseException) -> str:
    """`path:function` of the innermost frame of `exc`'s traceback in the application's code: not
    Python's, Celery's or celery_fleet's, and preferably not an installed package's. "" if none."""
    try:
        if not _LIBRARIES:
            _LIBRARIES.append(_library_prefixes())
        own, installed = _LIBRARIES[0]
        tb = exc.__traceback__
        best = fallback = None
        while tb is not None:
            code = tb.tb_frame.f_code
            filename = code.co_filename
            if not filename.startswith("<") and not filename.startswith(own):
                fallback = code
                if not filename.startswith(installed):
                    best = code
            tb = tb.tb_next
        chosen = best or fallback
        if chosen is None:
            return ""
        return f"{_relative(chosen.co_filename)}:{chosen.co_qualname}"
    except Exception:
        return ""


def _relative(filename: str) -> str:
    # Relative to the import root it was found under, so the same code gives the same path anywhere.
    path = tuple(sys.path)
    if not _ROOTS or _ROOTS[0][0] != path:
        _ROOTS[:] = [(path, [os.path.join(p, "") for p in path if p and os.path.isabs(p)])]
    matching = [root for root in _ROOTS[0][1] if filename.startswith(root)]
    if matching:
        return filename[len(max(matching, key=len)) :]
    return os.path.basename(filename)


_ROOTS: list[tuple[tuple[str, ...], list[str]]] = []
