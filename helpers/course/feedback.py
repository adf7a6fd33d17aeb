"""Function exercises' "not done yet": :func:`stub_result` runs the learner's function and reports a stub (one that
returns None, or is still ``...``) as not done, and an exception as one line naming it. The checks that use it, and
the one-line messages a learner sees, live in :mod:`helpers.course.checks`.
"""
from __future__ import annotations

NOT_DONE = "not done yet"


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
