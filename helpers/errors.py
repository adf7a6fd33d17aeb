"""Errors a learner meets, each carrying the fix.

Every error prints as two parts: what went wrong, and what to do about it. Notebooks catch
``KitError`` and show it without a 60-line traceback (see ``helpers.errors.explain``).
"""
from __future__ import annotations


class KitError(Exception):
    """Base class: ``problem`` says what went wrong, ``fix`` says what to do."""

    def __init__(self, problem: str, fix: str):
        self.problem = problem
        self.fix = fix
        super().__init__(f"{problem}\n  -> fix: {fix}")


class ModelNotFoundError(KitError):
    """An id that is neither in the catalog, nor a local folder, nor reachable on the hub."""


class OfflineHubError(KitError):
    """A hub model was asked for while the hub cannot be reached."""


class GatedModelError(KitError):
    """A gated hub model was asked for without a token."""


class NoGPUError(KitError):
    """A GPU-only precision or feature was asked for on a machine without one."""


class UnsupportedPrecisionError(KitError):
    """A precision the hardware cannot run (bf16 on a T4, say)."""


class NotEnoughMemoryError(KitError):
    """The plan or the load does not fit in the memory available."""


class DataError(KitError):
    """A data file or input row is malformed; the message names the file, row and field."""


class InputError(KitError, ValueError):
    """A function argument is out of range; the message names the field."""


def explain(error: KitError) -> str:
    """The short form a notebook shows: what went wrong and the fix, no traceback."""
    return f"{type(error).__name__}: {error.problem}\n  fix: {error.fix}"


def try_and_explain(function, *args, **kwargs):
    """Call ``function``; if it raises a KitError, print the short explanation and return None."""
    try:
        return function(*args, **kwargs)
    except KitError as error:
        print(explain(error))
        return None


def install_notebook_handler() -> None:
    """In IPython, show KitErrors as two lines (problem, fix) instead of a long traceback."""
    try:
        from IPython import get_ipython
    except ImportError:
        return
    shell = get_ipython()
    if shell is None:
        return

    def handler(shell, etype, value, tb, tb_offset=None):
        print(explain(value))
        return None

    shell.set_custom_exc((KitError,), handler)
