"""pytest plugin (loaded with ``-p helpers.course.pytest_plugin`` from pyproject.toml).

The student copies in ``labs/`` run in quick mode (``OTS_QUICK=1``: same code, fewer steps and
rows) while the solutions run in full, because only the solutions' stored outputs are checked.
A notebook's kernel starts when its first cell is set up, so the variable is set here, first.
(A conftest.py under tests/ would not see the notebooks in solutions/ and labs/.)
"""
from __future__ import annotations

import os

import pytest


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    path = str(getattr(item, "path", "") or getattr(item, "fspath", ""))
    if f"{os.sep}labs{os.sep}" in path:
        os.environ["OTS_QUICK"] = "1"
    else:
        os.environ.pop("OTS_QUICK", None)
