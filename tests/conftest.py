"""Shared fixtures. The suite runs on the CPU tier, offline, whatever machine it is on."""
import os

os.environ.setdefault("OTS_PLAN", "tier=cpu")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def embedded():
    """The embedded model and tokenizer, loaded once through the same loader as hub models."""
    from helpers.models import load_model

    return load_model("smollm2-135m", precision="fp32", device="cpu")


def pytest_runtest_setup(item):
    """Student copies in labs/ run in quick mode (same code, fewer steps and rows); solutions run in full.

    The kernel of a notebook starts when its first cell is set up, so the variable is set here,
    before pytest's own setup for that item runs.
    """
    path = str(getattr(item, "fspath", ""))
    if "/labs/" in path:
        os.environ["OTS_QUICK"] = "1"
    else:
        os.environ.pop("OTS_QUICK", None)


pytest_runtest_setup.tryfirst = True
