"""``calculator``: arithmetic parsed with ``ast`` and evaluated node by node, never
``eval``. Bounded: expression length, node count, exponent and result size."""

from __future__ import annotations

import ast
import math
import operator
from collections.abc import Callable
from typing import Any

from workers.tools.base import ToolError

MAX_CHARS = 500
MAX_NODES = 200
MAX_EXPONENT = 1000
MAX_INT_BITS = 4096  # about 1,200 decimal digits

BINARY: dict[type[ast.operator], Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
UNARY: dict[type[ast.unaryop], Callable[[Any], Any]] = {
    ast.UAdd: operator.pos,
    ast.USub: operator.neg,
}


def _checked(value: int | float) -> int | float:
    if isinstance(value, int) and value.bit_length() > MAX_INT_BITS:
        raise ToolError("the result is too large")
    if isinstance(value, float) and not math.isfinite(value):
        raise ToolError("the result is not a finite number")
    return value


def _power(base: int | float, exponent: int | float) -> int | float:
    if abs(exponent) > MAX_EXPONENT:
        raise ToolError(f"exponents are limited to {MAX_EXPONENT}")
    whole = isinstance(base, int) and isinstance(exponent, int)
    if whole and exponent > 0 and abs(base) > 1 and exponent * math.log2(abs(base)) > MAX_INT_BITS:
        raise ToolError("the result is too large")
    try:
        result = base**exponent
    except OverflowError:
        raise ToolError("the result is too large") from None
    if isinstance(result, complex):
        raise ToolError("the result is not a real number")
    return result


def _eval(node: ast.AST) -> int | float:
    if isinstance(node, ast.Expression):
        return _eval(node.body)
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        return _checked(node.value)
    if isinstance(node, ast.UnaryOp) and type(node.op) in UNARY:
        return UNARY[type(node.op)](_eval(node.operand))
    if isinstance(node, ast.BinOp) and type(node.op) in BINARY:
        left, right = _eval(node.left), _eval(node.right)
        if isinstance(node.op, ast.Pow):
            return _checked(_power(left, right))
        try:
            result = BINARY[type(node.op)](left, right)
        except ZeroDivisionError:
            raise ToolError("division by zero") from None
        except OverflowError:
            raise ToolError("the result is too large") from None
        whole = isinstance(left, int) and isinstance(right, int)
        if isinstance(node.op, ast.Div) and whole and left % right == 0:
            result = left // right  # exact: 10 / 2 is 5, not 5.0
        return _checked(result)
    raise ToolError(f"not arithmetic: {type(node).__name__} is not allowed")


def evaluate(expression: str) -> int | float:
    """The value of an arithmetic expression; ``^`` means power, as people write it."""
    text = expression.strip().replace("^", "**").replace("×", "*").replace("÷", "/")
    if not text:
        raise ToolError("the expression is empty")
    if len(text) > MAX_CHARS:
        raise ToolError(f"the expression is longer than {MAX_CHARS} characters")
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError:
        raise ToolError(f"not an arithmetic expression: {expression!r}") from None
    if sum(1 for _ in ast.walk(tree)) > MAX_NODES:
        raise ToolError(f"the expression has more than {MAX_NODES} parts")
    return _eval(tree)


def calculator(arguments: dict[str, Any], context: Any) -> str:
    expression = arguments.get("expression")
    if not isinstance(expression, str):
        raise ToolError("'expression' must be a string")
    value = evaluate(expression)
    if isinstance(value, float):
        return repr(round(value, 12)) if abs(value) < 1e15 else repr(value)
    return str(value)
