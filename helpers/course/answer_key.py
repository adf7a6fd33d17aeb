"""The instructor's answer key: the expected value of every exercise whose answer does not depend on the learner's own
measurements, computed from the kit's data (prices, scenario, catalog). A class copy does not have this file
(``helpers.course.release`` leaves it out): its checks compare with the salted digests :func:`write_digests` stores in
``helpers/course/checks/digests.json``, written by ``bash kit build-labs`` and tested to be current.

Exercises read against the learner's own tables (Lab 02 q3, Lab 03 q2, Lab 04 q1-q2, Lab 05 q2, Lab 06 q1) have no
fixed answer to keep: their checks compute from the measured context the notebook declares.
"""
from __future__ import annotations

import json

from .checks import digest
from .checks import lab01, lab02, lab03, lab04

# the tolerance each check accepts (relative), as the hidden tests do
TOLERANCE = {"01q1": 1e-4, "01q2": 0.005, "01q3 swing": 1e-4, "02q1": 1e-4, "04q3": 1e-3}


def lab01_fees() -> float:
    from .. import tco

    return tco.api_cost(tco.Workload(*lab01.Q1_WORKLOAD), lab01.Q1_MODEL).monthly["API fees"]


def lab01_break_even() -> float | None:
    return lab01.break_even(lab01.Q2_MODEL)


def lab01_lever() -> tuple[str, float]:
    from .. import tco

    frame = tco.tornado(tco.default_inputs(), lab01.Q3_RANGES)
    return str(frame.index[0]), float(frame["swing"].iloc[0])


def lab02_gb() -> float:
    return lab02.memory_gb(**lab02.Q1)


def lab02_largest() -> str:
    from ..quantize import largest_model_that_fits

    return largest_model_that_fits(lab02.Q2["gpu"], lab02.Q2["precision"], lab02.Q2["context"])


def lab03_lora() -> int:
    return lab03.lora_count(lab03.Q1["model"], lab03.Q1["r"], lab03.Q1["targets"])


def lab04_speedup() -> float:
    return lab04.speedup("qwen2.5-7b", "bf16", "nf4")


def answers() -> dict:
    """Question -> expected value (what the digests are made from, and what the tests compare with)."""
    lever, swing = lab01_lever()
    return {"01q1": lab01_fees(), "01q2": lab01_break_even(), "01q3 lever": lever, "01q3 swing": swing,
            "02q1": lab02_gb(), "02q2": lab02_largest(), "03q1": lab03_lora(), "04q3": lab04_speedup()}


def digests() -> dict:
    out = {}
    for question, value in answers().items():
        if question in TOLERANCE and value is not None:
            out[question] = digest.number_digest(question, value, TOLERANCE[question])
        else:
            out[question] = digest.exact_digest(question, value)
    return out


def write_digests() -> bool:
    """Write ``digests.json`` from the key; True if it changed."""
    text = json.dumps(digests(), indent=1, sort_keys=True) + "\n"
    changed = not digest.DIGESTS.exists() or digest.DIGESTS.read_text() != text
    if changed:
        digest.DIGESTS.write_text(text)
        digest._table.cache_clear()
    return changed
