"""Answers the public checks compare with, without holding them: a salted hash per question (``digests.json``, written
by ``bash kit build-labs`` from the instructor's answer key, which a class copy does not have).

A number is hashed by the bin it falls in on a logarithmic grid one tolerance wide, so a learner's value within the
check's tolerance of the answer lands in the same bin or a neighbour; a whole number or a text is hashed exactly.
Nothing in a class copy computes an answer from no input: calling the checks' functions yields no expected value
(``tests/test_release.py`` calls them all). The named wrong kinds still read as before: a check maps the learner's
value back through the mistake it names (a year of fees divided by 12) and asks whether that is the answer.
"""
from __future__ import annotations

import hashlib
import json
import math
from functools import lru_cache
from pathlib import Path

DIGESTS = Path(__file__).with_name("digests.json")
SALT = "own-the-stack/checks/v1"


def _hash(question: str, token: str) -> str:
    return hashlib.sha256(f"{SALT}|{question}|{token}".encode()).hexdigest()[:32]


def _bin(value: float, rel: float) -> str:
    if value == 0:
        return "0"
    return f"{'-' if value < 0 else '+'}{math.floor(math.log(abs(value)) / math.log1p(rel))}"


def number_digest(question: str, value: float, rel: float) -> dict:
    return {"kind": "number", "rel": rel, "digest": _hash(question, _bin(float(value), rel))}


def exact_digest(question: str, value) -> dict:
    if value is None:
        return {"kind": "none"}
    return {"kind": "exact", "digest": _hash(question, json.dumps(value, sort_keys=True))}


@lru_cache(maxsize=1)
def _table() -> dict:
    try:
        return json.loads(DIGESTS.read_text())
    except (OSError, ValueError):
        return {}


def known(question: str) -> bool:
    return question in _table()


def is_none(question: str) -> bool:
    """Whether the answer to ``question`` is None (e.g. self-hosting never breaks even)."""
    return _table().get(question, {}).get("kind") == "none"


def is_answer(question: str, value) -> bool:
    """Whether ``value`` is the answer to ``question``, within the question's tolerance for a number."""
    entry = _table().get(question)
    if entry is None or value is None or entry["kind"] == "none":
        return False
    if entry["kind"] == "exact":
        try:
            return _hash(question, json.dumps(value, sort_keys=True)) == entry["digest"]
        except (TypeError, ValueError):
            return False
    try:
        number = float(value)
    except (TypeError, ValueError):
        return False
    if not math.isfinite(number) or isinstance(value, bool):
        return False
    rel = entry["rel"]
    if number == 0:
        return _hash(question, "0") == entry["digest"]
    sign, index = ("-" if number < 0 else "+"), math.floor(math.log(abs(number)) / math.log1p(rel))
    return any(_hash(question, f"{sign}{index + step}") == entry["digest"] for step in (-1, 0, 1))


def undo(value, mistakes) -> str | None:
    """The message of the first (undo, message) pair whose ``undo(value)`` is the answer: how a check names a mistake
    (``(lambda v: v / 12, "that is a year")``) without knowing the answer. ``mistakes`` holds (question, undo, message)."""
    for question, back, message in mistakes:
        try:
            if is_answer(question, back(value)):
                return message
        except (TypeError, ValueError, ZeroDivisionError, OverflowError):
            continue
    return None
