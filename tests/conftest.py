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

