"""CloudWatch metric math, the subset scaling alarms here use: IF, FILL, comparisons, arithmetic."""

from __future__ import annotations

import ast
import operator
from collections.abc import Callable, Mapping
from typing import Any

_BINARY: dict[type[ast.operator], Callable[[float, float], float]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
}
_COMPARE: dict[type[ast.cmpop], Callable[[float, float], bool]] = {
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
}


class MetricMathError(ValueError):
    """An expression outside the supported subset."""


def evaluate(expression: str, values: Mapping[str, float | None]) -> float | None:
    """The expression's value for one period; a metric without data is None (as CloudWatch's gap)."""
    text = expression.replace("&&", " and ").replace("||", " or ")
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError as error:
        raise MetricMathError(f"{expression!r}: {error.msg}") from None
    value = _eval(tree.body, values, expression)
    return None if value is None else float(value)


def _eval(  # noqa: PLR0911, PLR0912 (one case per node type)
    node: ast.AST, values: Mapping[str, float | None], expression: str
) -> Any:
    if isinstance(node, ast.Constant) and isinstance(node.value, int | float):
        return float(node.value)
    if isinstance(node, ast.Name):
        if node.id not in values:
            raise MetricMathError(f"{expression!r}: {node.id} is no metric of the alarm")
        return values[node.id]
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        left, right = _eval(node.left, values, expression), _eval(node.right, values, expression)
        if left is None or right is None:
            return None
        if isinstance(node.op, ast.Div) and right == 0:
            return None
        return _BINARY[type(node.op)](left, right)
    if isinstance(node, ast.Compare) and len(node.ops) == 1 and type(node.ops[0]) in _COMPARE:
        left, right = _eval(node.left, values, expression), _eval(node.comparators[0], values, expression)
        if left is None or right is None:
            return None
        return 1.0 if _COMPARE[type(node.ops[0])](left, right) else 0.0
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
        name, args = node.func.id.upper(), node.args
        if name == "FILL" and len(args) == 2:
            value = _eval(args[0], values, expression)
            return _eval(args[1], values, expression) if value is None else value
        if name == "IF" and len(args) in {2, 3}:
            condition = _eval(args[0], values, expression)
            if condition is None:
                return None
            if condition:
                return _eval(args[1], values, expression)
            return _eval(args[2], values, expression) if len(args) == 3 else None
        if name in {"MAX", "MIN", "SUM"}:
            items = [v for v in (_eval(a, values, expression) for a in args) if v is not None]
            if not items:
                return None
            if name == "SUM":
                return sum(items)
            return max(items) if name == "MAX" else min(items)
    raise MetricMathError(f"{expression!r}: {ast.dump(node)[:80]} is not supported by the rehearsal")
