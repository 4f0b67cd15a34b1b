"""The CloudWatch Logs JSON filter-pattern subset subscription filters use here.

Supported: `{ SELECTOR OP VALUE }` with `$.a.b` and `$.a[0]` selectors; `=` and `!=` against a
quoted string (a `*` at either end is a wildcard), a number, `true`/`false` or `null`; `<`, `<=`,
`>`, `>=` against a number; `SELECTOR IS TRUE|FALSE|NULL`, `SELECTOR NOT EXISTS`; `&&`, `||` and
parentheses. An empty pattern matches every event. A message that is not a JSON object matches no
JSON pattern (as in CloudWatch Logs). Anything else is refused with a FilterPatternError, so an
unsupported pattern never passes silently.
"""

from __future__ import annotations

import fnmatch
import json
import re
from collections.abc import Callable
from typing import Any

Predicate = Callable[[Any], bool]

_TOKEN = re.compile(
    r"""\s*(?:
        (?P<string>"(?:[^"\\]|\\.)*")
      | (?P<op>&&|\|\||!=|<=|>=|=|<|>|\(|\)|\{|\})
      | (?P<selector>\$(?:\.[A-Za-z0-9_\-@]+|\[\d+\])*)
      | (?P<word>[A-Za-z]+)
      | (?P<number>-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)
    )""",
    re.VERBOSE,
)
_MISSING = object()


class FilterPatternError(ValueError):
    """A pattern outside the supported subset, or not a valid one."""


def compile_pattern(pattern: str) -> Callable[[str], bool]:
    """A function telling whether a log message matches `pattern`."""
    text = pattern.strip()
    if not text:
        return lambda message: True
    if not (text.startswith("{") and text.endswith("}")):
        raise FilterPatternError(
            f"{pattern!r}: only JSON filter patterns ({{ $.field = ... }}) are supported"
        )
    parser = _Parser(_tokens(text[1:-1]), pattern)
    predicate = parser.expression()
    parser.expect_end()

    def matches(message: str) -> bool:
        try:
            document = json.loads(message)
        except ValueError:
            return False
        return isinstance(document, dict) and predicate(document)

    return matches


def _tokens(text: str) -> list[tuple[str, str]]:
    tokens: list[tuple[str, str]] = []
    position = 0
    text = text.rstrip()
    while position < len(text):
        match = _TOKEN.match(text, position)
        if match is None or match.end() == position:
            raise FilterPatternError(f"cannot read the filter pattern at {text[position : position + 20]!r}")
        kind = match.lastgroup or ""
        tokens.append((kind, match.group(kind)))
        position = match.end()
    return tokens


def _select(document: Any, selector: str) -> Any:
    value = document
    for name, index in re.findall(r"\.([A-Za-z0-9_\-@]+)|\[(\d+)\]", selector[1:]):
        if name:
            if not isinstance(value, dict) or name not in value:
                return _MISSING
            value = value[name]
        else:
            if not isinstance(value, list) or int(index) >= len(value):
                return _MISSING
            value = value[int(index)]
    return value


def _either(first: Predicate, second: Predicate) -> Predicate:
    return lambda document: first(document) or second(document)


def _both(first: Predicate, second: Predicate) -> Predicate:
    return lambda document: first(document) and second(document)


class _Parser:
    def __init__(self, tokens: list[tuple[str, str]], pattern: str) -> None:
        self.tokens = tokens
        self.position = 0
        self.pattern = pattern

    def _peek(self) -> tuple[str, str] | None:
        return self.tokens[self.position] if self.position < len(self.tokens) else None

    def _next(self) -> tuple[str, str]:
        token = self._peek()
        if token is None:
            raise FilterPatternError(f"{self.pattern!r}: ends too early")
        self.position += 1
        return token

    def expect_end(self) -> None:
        if self._peek() is not None:
            raise FilterPatternError(f"{self.pattern!r}: unexpected {self._peek()}")

    def expression(self) -> Predicate:
        left = self._conjunction()
        while self._peek() == ("op", "||"):
            self._next()
            left = _either(left, self._conjunction())
        return left

    def _conjunction(self) -> Predicate:
        left = self._term()
        while self._peek() == ("op", "&&"):
            self._next()
            left = _both(left, self._term())
        return left

    def _term(self) -> Predicate:
        kind, value = self._next()
        if (kind, value) == ("op", "("):
            inner = self.expression()
            if self._next() != ("op", ")"):
                raise FilterPatternError(f"{self.pattern!r}: a parenthesis is not closed")
            return inner
        if kind != "selector":
            raise FilterPatternError(f"{self.pattern!r}: expected a $.selector, found {value!r}")
        selector = value
        kind, operator = self._next()
        if kind == "word":
            return self._word_test(selector, operator.upper())
        if kind != "op" or operator not in {"=", "!=", "<", "<=", ">", ">="}:
            raise FilterPatternError(f"{self.pattern!r}: expected a comparison after {selector}")
        return self._comparison(selector, operator, self._next())

    def _word_test(self, selector: str, word: str) -> Predicate:
        if word == "IS":
            _, what = self._next()
            expected = {"TRUE": True, "FALSE": False, "NULL": None}.get(what.upper(), _MISSING)
            if expected is _MISSING:
                raise FilterPatternError(f"{self.pattern!r}: IS takes TRUE, FALSE or NULL")
            return lambda doc: _select(doc, selector) is expected
        if word == "NOT":
            _, what = self._next()
            if what.upper() != "EXISTS":
                raise FilterPatternError(f"{self.pattern!r}: NOT must be followed by EXISTS")
            return lambda doc: _select(doc, selector) is _MISSING
        raise FilterPatternError(f"{self.pattern!r}: unknown keyword {word}")

    def _comparison(self, selector: str, operator: str, operand: tuple[str, str]) -> Predicate:
        kind, raw = operand
        if kind == "string":
            if operator not in {"=", "!="}:
                raise FilterPatternError(f"{self.pattern!r}: strings compare with = or != only")
            expected = json.loads(raw)
            glob = fnmatch.translate(expected) if "*" in expected else None

            def equal_string(value: Any) -> bool:
                if not isinstance(value, str):
                    return False
                return re.fullmatch(glob, value) is not None if glob else value == expected

            return self._negatable(selector, operator, equal_string)
        if kind == "number":
            number = float(raw)
            compare: dict[str, Callable[[float], bool]] = {
                "=": lambda v: v == number,
                "!=": lambda v: v != number,
                "<": lambda v: v < number,
                "<=": lambda v: v <= number,
                ">": lambda v: v > number,
                ">=": lambda v: v >= number,
            }
            test = compare[operator]

            def numeric(doc: Any) -> bool:
                value = _select(doc, selector)
                return isinstance(value, int | float) and not isinstance(value, bool) and test(float(value))

            return numeric
        if kind == "word" and raw.lower() in {"true", "false", "null"} and operator in {"=", "!="}:
            literal = {"true": True, "false": False, "null": None}[raw.lower()]
            return self._negatable(selector, operator, lambda value: value is literal)
        raise FilterPatternError(f"{self.pattern!r}: cannot compare {selector} with {raw!r}")

    @staticmethod
    def _negatable(selector: str, operator: str, equal: Callable[[Any], bool]) -> Predicate:
        if operator == "=":
            return lambda doc: equal(_select(doc, selector))
        return lambda doc: (value := _select(doc, selector)) is not _MISSING and not equal(value)
