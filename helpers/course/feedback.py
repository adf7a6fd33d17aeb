"""Self-checks that teach: one short line for the first thing that is wrong, nothing when all is right.

A public check is a list of (condition, message) pairs, in order; conditions are callables so a later one
may use what an earlier one guaranteed. otter shows a failed check as the line printed here instead of a
traceback per assert::

    from helpers.course.feedback import first_failure
    first_failure(
        (lambda: lora_params is not ..., "not done yet: set lora_params"),
        (lambda: isinstance(lora_params, int), lambda: f"a whole number of parameters, got {lora_params!r}"),
    )

"Not done yet" covers function stubs too: :func:`stub_result` runs the learner's function and reports a
stub (one that returns None) as not done, and an exception as one line naming it.
"""
from __future__ import annotations

NOT_DONE = "not done yet"


def first_failure(*checks) -> None:
    """Print the message of the first check whose condition is false (or raises), then stop; print nothing if all pass."""
    for condition, message in checks:
        try:
            ok = bool(condition())
        except Exception as error:  # noqa: BLE001 - a check that cannot run is a failed check, in one line
            print(f"✗ {_text(message)} ({type(error).__name__}: {error})")
            return
        if not ok:
            print(f"✗ {_text(message)}")
            return


def stub_result(function, *args):
    """``function(*args)``, or a one-line reason why it is not done: ``(value, None)`` or ``(None, reason)``."""
    if function is ... or not callable(function):
        return None, f"{NOT_DONE}: write the function"
    try:
        value = function(*args)
    except Exception as error:  # noqa: BLE001
        return None, f"calling it with {', '.join(map(repr, args))} raised {type(error).__name__}: {error}"
    if value is None:
        return None, f"{NOT_DONE}: the function returns nothing (write its body and return the result)"
    return value, None


def _text(message) -> str:
    """The message; one that cannot be formed from the learner's value (its f-string raised) says so in one line."""
    try:
        return message() if callable(message) else str(message)
    except Exception as error:  # noqa: BLE001 - never a traceback from the check's own wording
        return f"this value cannot be checked ({type(error).__name__}): look at its type and shape"
