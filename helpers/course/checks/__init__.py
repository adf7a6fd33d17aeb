"""The exercises' self-checks, one function per question: ``lab01.q1(my_monthly_api_fees)`` returns None when the
answer is right and otherwise one line saying what is wrong (never the expected value, never a recipe).

Why here and not in the notebook's test cells: a check computes its expected value from **trusted inputs only**,
the kit's data files and functions, or the measured tables a lab declares in ``CONTEXT`` (validated before use),
never from names the notebook can rebind; it names the plausible wrong answers a learner makes (units, swapped
inputs, the wrong period or model, the lesson's example reused, a half fix) so the line teaches; and it is tested
as plain Python (``tests/test_checks.py``: the solution, the blank stub and at least three wrong kinds per
exercise). The generated test files in ``labs/<lab>/tests/`` only call these functions (:func:`say`).

A check's arguments are the notebook's answer names, in the order the exercise asks for them; measured context
(e.g. Lab 02's ``table``) comes last. Each lab module has ``CONTEXT``: measured name -> validator (returns None or
why the value is not what the lab measures); the grader refuses a submission's context that fails it, and refuses
to build an autograder whose tests read any other notebook name (:mod:`helpers.course.trusted`).
"""
from __future__ import annotations

import math
from numbers import Real

from ..feedback import NOT_DONE  # noqa: F401 - one wording of "not done yet" for value and function exercises


def say(message: str | None) -> None:
    """Print a check's message as the one line a learner sees (nothing when it passed)."""
    if message:
        print(f"✗ {message}")


def passes(check, *args) -> bool:
    """Whether ``check(*args)`` accepts the answer: what a claim fed by an exercise asks before using it."""
    try:
        return check(*args) is None
    except Exception:  # noqa: BLE001 - a check that cannot run did not pass
        return False


def shown(value, width: int = 60) -> str:
    """A learner's value in one short line for a check's message: a table or an array by its kind and size (its
    printout would fill several lines), anything else by its repr, cut to ``width`` characters."""
    kind = type(value).__name__
    module = type(value).__module__.split(".")[0]
    if module in ("pandas", "numpy", "torch") and hasattr(value, "shape"):
        shape = tuple(value.shape)
        size = f"{shape[0]} value{'s' if shape[0] != 1 else ''}" if len(shape) == 1 else f"shape {shape}"
        return f"a {module} {kind} of {size} (one number is wanted: pick it out)" if shape else f"a {module} {kind}"
    text = " ".join(repr(value).split())
    return text if len(text) <= width else text[: width - 3] + "..."


def not_done(*values) -> bool:
    return any(value is ... for value in values)


def is_number(value) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool) and math.isfinite(float(value))


def near(value, expected: float, rel: float = 1e-6, abs_: float = 0.0) -> bool:
    """``value`` equals ``expected`` within a relative (and optional absolute) tolerance."""
    if expected is None or not is_number(value):
        return False
    return abs(float(value) - expected) <= max(rel * abs(expected), abs_)


def first_match(value, candidates, rel: float = 1e-6):
    """The message of the first (expected value, message) candidate ``value`` equals, or None: how a check names
    the plausible wrong answer it recognises."""
    for expected, message in candidates:
        try:
            if expected is not None and near(value, expected, rel):
                return message
        except (TypeError, ValueError, ZeroDivisionError):
            continue
    return None


def guarded(check):
    """A check whose own computation fails on a strange value says so in one line instead of a traceback."""
    import functools

    @functools.wraps(check)
    def wrapper(*args):
        try:
            return check(*args)
        except Exception as error:  # noqa: BLE001 - the learner sees one line, never a traceback
            said = " ".join(str(error).split())[:80]
            given = ", ".join(shown(arg, 40) for arg in args[:2])
            return (f"checking {given} raised {type(error).__name__}{': ' + said if said else ''}: "
                    "look at the type and the contents of what you set")
    return wrapper
