"""The safe calculator: arithmetic and voucher formulas work; anything else is refused, never run."""

from __future__ import annotations

import builtins
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sandbox.calculator import MAX_EXPRESSION_CHARS, MAX_MAGNITUDE, CalculationError, calculate


@pytest.mark.parametrize("expression, value", [
    ("1+2", 3),
    ("7 - 10", -3),
    ("6*7", 42),
    ("10/4", 2.5),
    ("7//2", 3),
    ("7 % 3", 1),
    ("2**10", 1024),
    ("-3 + +5", 2),
    ("((1 + 2) * (3 + 4))", 21),
    ("0.1 + 0.2", 0.3),
    ("3 × 4", 12),
    ("8 ÷ 2", 4),
    ("1,234.50 + 1", 1235.5),           # thousands separators in prices
    ("1,000,000 / 2", 500000),
    ("min(3, 1, 2)", 1),
    ("max(2, 9, 4)", 9),
    ("abs(-2.5)", 2.5),
    ("round(2.345, 1)", 2.3),
    ("ceil(1.2)", 2),
    ("floor(-1.2)", -2),
    ("sum(1, 2, 3.5)", 6.5),
    ("1_000 + 1", 1001),
])
def test_arithmetic(expression, value):
    assert calculate(expression) == pytest.approx(value)


def test_integer_results_stay_integers():
    assert calculate("2 + 3") == 5 and isinstance(calculate("2 + 3"), int)


@pytest.mark.parametrize("expression, value", [
    # fixed voucher: total - face value
    ("(120.5 + 89) - 34", 175.5),
    # percentage voucher with a cap: max(total * (1 - rate), total - cap)
    ("max(1000 * (1 - 0.2), 1000 - 150)", 850),
    ("max(300 * (1 - 0.2), 300 - 150)", 240),
    ("(120.5 + 89) * (1 - 0.2)", 167.6),
    ("round(max(500 * (1 - 0.13), 500 - 69), 2)", 435),
    ("min(179 - (150 + 23.5), 10)", 5.5),
])
def test_voucher_formulas(expression, value):
    assert calculate(expression) == pytest.approx(value)


@pytest.fixture
def no_side_effects(monkeypatch):
    """Fail loudly if anything the calculator is handed gets opened or run."""
    calls = []

    def forbidden(*args, **_kwargs):
        calls.append(args)
        raise AssertionError("the calculator executed code")
    monkeypatch.setattr(os, "system", forbidden)
    monkeypatch.setattr(builtins, "open", forbidden)
    monkeypatch.setattr(builtins, "eval", forbidden)
    monkeypatch.setattr(builtins, "exec", forbidden)
    yield calls
    assert calls == []


def test_a_payload_never_runs(tmp_path):
    canary = tmp_path / "pwned"
    for payload in (f"__import__('os').system('touch {canary}')",
                    f"__import__('pathlib').Path('{canary}').touch()",
                    f"open('{canary}', 'w').write('x')"):
        with pytest.raises(CalculationError):
            calculate(payload)
    assert not canary.exists()


HOSTILE = [
    "__import__('os').system('x')",
    "__import__('os').system('touch /tmp/pwned')",
    "().__class__.__bases__[0].__subclasses__()",
    "(1).real",
    "(1).__class__",
    "lambda: 1",
    "(lambda x: x)(1)",
    "[x for x in (1, 2)]",
    "{x for x in (1, 2)}",
    "{x: 1 for x in (1, 2)}",
    "sum(x for x in (1, 2))",
    "open('/etc/passwd')",
    "eval('1+1')",
    "exec('x=1')",
    "getattr(1, 'real')",
    "globals()",
    "print(1)",
    "max(1, 2, key=abs)",
    "max(*[1, 2])",
    "x",
    "price * 2",
    "nan",
    "inf",
    "True + 1",
    "None",
    "'a' * 3",
    "b'1'",
    "f'{1}'",
    "1j * 2",
    "1 if 1 else 2",
    "1 < 2",
    "not 1",
    "~1",
    "1 << 70",
    "1 & 3",
    "a = 1",
    "1; 2",
    "(x := 5)",
    "[1, 2]",
    "1, 2",
    "{1: 2}",
]


@pytest.mark.parametrize("expression", HOSTILE)
def test_hostile_expressions_are_refused_without_running(expression, no_side_effects):
    with pytest.raises(CalculationError) as info:
        calculate(expression)
    message = str(info.value)
    assert message and len(message) < 300
    assert "Traceback" not in message


@pytest.mark.parametrize("expression, fragment", [
    ("9**9**9", "exponent"),
    ("2**1000", "exponent"),
    ("10**-400", "exponent"),
    ("10**64", "beyond"),
    ("2**64", "beyond"),
    ("999999999999999 * 999999999999999", "beyond"),
    ("1e300", "beyond"),
    ("1e15 + 1", "beyond"),
    ("1/0", "division by zero"),
    ("5 % 0", "division by zero"),
    ("5 // 0.0", "division by zero"),
    ("(-8) ** 0.5", "finite"),
    ("max()", "max"),
    ("abs(1, 2)", "abs"),
    ("", "empty"),
    ("   ", "empty"),
    ("1 +", "not an arithmetic expression"),
    ("1" * 10_000, "too long"),
    ("1+" * 5_000 + "1", "too long"),
    ("(" * 5_000 + "1" + ")" * 5_000, "too long"),
])
def test_refusals_are_readable(expression, fragment, no_side_effects):
    with pytest.raises(CalculationError) as info:
        calculate(expression)
    assert fragment in str(info.value)


def test_limits_are_enforced_at_the_boundary():
    at_limit = "1+" * ((MAX_EXPRESSION_CHARS - 1) // 2) + "1"
    assert len(at_limit) <= MAX_EXPRESSION_CHARS
    assert calculate(at_limit) == at_limit.count("1")
    with pytest.raises(CalculationError):
        calculate("1" * (MAX_EXPRESSION_CHARS + 1))
    assert calculate(f"{int(MAX_MAGNITUDE)}") == MAX_MAGNITUDE
    with pytest.raises(CalculationError):
        calculate(f"{int(MAX_MAGNITUDE)} + 1")


def test_deep_nesting_within_the_length_limit_is_handled():
    assert calculate("(" * 200 + "1" + ")" * 200) == 1
    assert calculate("-" * 499 + "1") == -1
    assert calculate("abs(" * 99 + "-1" + ")" * 99) == 1


def test_non_string_input_is_refused():
    with pytest.raises(CalculationError):
        calculate(None)  # type: ignore[arg-type]
    with pytest.raises(CalculationError):
        calculate(12)  # type: ignore[arg-type]


@settings(max_examples=200, deadline=None, database=None)
@given(st.integers(min_value=-10**12, max_value=10**12), st.integers(min_value=-10**12, max_value=10**12))
def test_addition_property(a, b):
    assert calculate(f"{a}+{b}") == a + b


@settings(max_examples=100, deadline=None, database=None)
@given(st.integers(min_value=-10**6, max_value=10**6), st.integers(min_value=1, max_value=10**6))
def test_division_and_floor_division_property(a, b):
    assert calculate(f"{a}/{b}") == pytest.approx(a / b, abs=1e-9)
    assert calculate(f"{a}//{b}") == a // b
    assert calculate(f"{a}%{b}") == a % b
