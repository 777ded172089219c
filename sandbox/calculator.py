"""A safe arithmetic evaluator for voucher and budget sums: parses with `ast`, never evaluates code."""

from __future__ import annotations

import ast
import math
import operator
import re

MAX_EXPRESSION_CHARS = 500
MAX_MAGNITUDE = 1e15
_THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}(?!\d))")


class CalculationError(ValueError):
    pass


_BINARY = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
           ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Pow: operator.pow}
_UNARY = {ast.UAdd: operator.pos, ast.USub: operator.neg}
MAX_ROUND_DIGITS = 15  # beyond MAX_MAGNITUDE's digits rounding changes nothing; huge ones take minutes


def _round(value: float, ndigits: float | None = None) -> float:
    """`round` with its digits bounded: `round(5, -10**15)` would hold the interpreter for minutes."""
    if ndigits is None:
        return round(value)
    if isinstance(ndigits, float) and not ndigits.is_integer():
        raise CalculationError("round() takes a whole number of digits")
    if abs(ndigits) > MAX_ROUND_DIGITS:
        raise CalculationError(f"round() takes between -{MAX_ROUND_DIGITS} and {MAX_ROUND_DIGITS} digits")
    return round(value, int(ndigits))


_FUNCTIONS = {"min": min, "max": max, "abs": abs, "round": _round, "ceil": math.ceil, "floor": math.floor,
              "sum": lambda *xs: sum(xs)}


def _check(value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise CalculationError("the result is not a finite number")
    if abs(value) > MAX_MAGNITUDE:
        raise CalculationError(f"numbers beyond {MAX_MAGNITUDE:g} are not supported")
    return value


def _eval(node: ast.AST) -> float:
    if isinstance(node, ast.Expression):
        return _eval(node.body)
    if isinstance(node, ast.Constant) and isinstance(node.value, int | float) and not isinstance(node.value, bool):
        return _check(node.value)
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        left, right = _eval(node.left), _eval(node.right)
        if isinstance(node.op, ast.Pow) and (abs(right) > 64 or abs(left) > 1e6):
            raise CalculationError("exponent too large")
        try:
            return _check(_BINARY[type(node.op)](left, right))
        except ZeroDivisionError as exc:
            raise CalculationError("division by zero") from exc
        except OverflowError as exc:  # 1e6 ** 64: beyond a float, so beyond MAX_MAGNITUDE too
            raise CalculationError(f"numbers beyond {MAX_MAGNITUDE:g} are not supported") from exc
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _check(_UNARY[type(node.op)](_eval(node.operand)))
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in _FUNCTIONS and not node.keywords:
        if len(node.args) > 50:
            raise CalculationError("too many arguments")
        args = [_eval(a) for a in node.args]
        try:
            return _check(_FUNCTIONS[node.func.id](*args))
        except (TypeError, OverflowError) as exc:
            raise CalculationError(f"bad arguments to {node.func.id}()") from exc
    if isinstance(node, ast.Tuple | ast.List):
        raise CalculationError("give one expression, not a list")
    raise CalculationError(f"unsupported element {type(node).__name__}: only numbers, + - * / // % **, "
                           f"parentheses and {', '.join(sorted(_FUNCTIONS))}() are allowed")


def calculate(expression: str) -> float:
    if not isinstance(expression, str) or not expression.strip():
        raise CalculationError("empty expression")
    if len(expression) > MAX_EXPRESSION_CHARS:
        raise CalculationError(f"expression too long ({len(expression)} chars; at most {MAX_EXPRESSION_CHARS})")
    # "1,234.50" is a price, not a tuple; commas between arguments (", ") stay.
    text = expression.replace("×", "*").replace("÷", "/")
    if not re.search(r"[A-Za-z_]\s*\(", text):
        text = _THOUSANDS.sub("", text)
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as exc:
        raise CalculationError(f"not an arithmetic expression: {exc.msg}") from exc
    value = _eval(tree)
    return round(value, 10) if isinstance(value, float) else value
