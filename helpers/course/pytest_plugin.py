"""pytest plugin (loaded with ``-p helpers.course.pytest_plugin`` from pyproject.toml).

The student copies in ``labs/`` run in quick mode (``OTS_QUICK=1``: same code, fewer steps and
rows) while the solutions run in full, because only the solutions' stored outputs are checked.
A notebook's kernel starts when its first cell is set up, so the variable is set here, first.
(A conftest.py under tests/ would not see the notebooks in solutions/ and labs/.)

The capstone (``06_decision_memo``) writes its memo from the results the other labs saved in the
same run: its items are moved to the end of the run, each solution notebook leaves a marker in the
run's results folder when its last cell is done, and the capstone's solution waits (bounded) for the
markers of the solutions collected in this session. It still runs, naming what is missing, if one
never comes (a failed lab).
"""
from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

CAPSTONE = "06_decision_memo"
WAIT_S = 900.0


def _path(item) -> Path:
    return Path(str(getattr(item, "path", "") or getattr(item, "fspath", "")))


def _markers() -> Path | None:
    results = os.environ.get("OTS_RESULTS")  # bash kit test points it at a fresh folder per run
    return Path(results).parent if results else None


def pytest_collection_modifyitems(session, config, items):
    capstone = [item for item in items if _path(item).stem == CAPSTONE]
    if capstone:
        items[:] = [item for item in items if _path(item).stem != CAPSTONE] + capstone


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    path = _path(item)
    if "labs" in path.parts or (path.suffix == ".ipynb" and os.environ.get("OTS_SOLUTIONS_QUICK") == "1"):
        os.environ["OTS_QUICK"] = "1"
    else:
        os.environ.pop("OTS_QUICK", None)
    markers = _markers()
    if path.stem == CAPSTONE and "solutions" in path.parts and markers is not None and not getattr(item.session, "_ots_waited", False):
        item.session._ots_waited = True
        wanted = {p.stem for p in (_path(i) for i in item.session.items) if p.suffix == ".ipynb" and "solutions" in p.parts} - {CAPSTONE}
        deadline = time.monotonic() + WAIT_S
        while time.monotonic() < deadline and any(not (markers / f"done-{stem}").exists() for stem in wanted):
            time.sleep(2.0)


@pytest.hookimpl(trylast=True)
def pytest_runtest_teardown(item, nextitem):
    path, markers = _path(item), _markers()
    if markers is not None and path.suffix == ".ipynb" and "solutions" in path.parts and (nextitem is None or _path(nextitem) != path):
        markers.mkdir(parents=True, exist_ok=True)
        (markers / f"done-{path.stem}").touch()
