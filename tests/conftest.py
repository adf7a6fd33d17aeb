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



def pytest_configure(config):
    config.addinivalue_line("markers", "full: a long test whose path CI already covers another way; runs under `bash kit test --full`")


def pytest_collection_modifyitems(config, items):
    """Tests marked ``full`` run under ``bash kit test --full`` (OTS_FULL=1), and say so where they are skipped."""
    if os.environ.get("OTS_FULL") == "1":
        return
    skip = pytest.mark.skip(reason="long; its path runs in CI another way: `bash kit test --full` runs it")
    for item in items:
        if "full" in item.keywords:
            item.add_marker(skip)
