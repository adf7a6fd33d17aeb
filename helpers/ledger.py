"""The claims ledger: the source articles' claims, and each lab's verdict with its evidence.

``seed_claims()`` reads ``datasets/claims/seed_claims.csv``. Labs call ``record(...)`` to write
a verdict; the ledger is a CSV in the user cache (``OTS_LEDGER`` overrides the path), one row
per (claim, lab), so re-running a lab replaces its rows instead of duplicating them. Writes take a
lock and replace the file whole (two labs recording at once both keep their rows); quick-mode runs
(CI's student copies) record into ``claims_ledger.quick.csv`` and read it over the full ledger.
"""
from __future__ import annotations

import csv
import datetime as dt
import io
import os
from functools import lru_cache
from pathlib import Path

from .data import load_rows
from .errors import InputError
from .paths import cache_dir, exclusive, quick_mode, quick_variant, write_atomically

VERDICTS = ("holds", "holds only if", "does not hold", "cannot tell yet")
COLUMNS = ["claim", "lab", "verdict", "evidence", "recorded"]


@lru_cache(maxsize=1)
def seed_claims() -> dict[str, dict]:
    return {row["id"]: row for row in load_rows("claims/seed_claims.csv", required=["id", "claim", "lab"], sourced=False)}


def verdict_from_fit(fits_everywhere: bool, fits_somewhere: bool, condition: str) -> str:
    """The ledger verdict for a claim about something fitting: holds / holds only if <condition> / does not hold."""
    if fits_everywhere:
        return "holds"
    return f"holds only if {condition}" if fits_somewhere else "does not hold"


def ledger_path(quick: bool | None = None) -> Path:
    """The ledger this run writes to: the learner's, or its quick-mode sibling (``quick`` defaults to the mode)."""
    override = os.environ.get("OTS_LEDGER")
    path = Path(override).expanduser() if override else cache_dir() / "claims_ledger.csv"
    return quick_variant(path) if (quick_mode() if quick is None else quick) else path


def _read(path: Path) -> list[dict]:
    if not path.exists():
        return []
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def record(claim: str, verdict: str, evidence: str, lab: str, path: Path | None = None) -> dict:
    """Write (or replace) the verdict of ``lab`` on ``claim``. ``verdict`` starts with one of VERDICTS."""
    if claim not in seed_claims():
        raise InputError(f"unknown claim {claim!r}", fix=f"use one of: {', '.join(seed_claims())}")
    if not any(verdict.startswith(v) for v in VERDICTS):
        raise InputError(f"verdict {verdict!r} is not one of the ledger's verdicts", fix=f"start it with one of: {', '.join(VERDICTS)}")
    if not evidence.strip():
        raise InputError("a verdict needs evidence", fix="say which computed or measured numbers support it")
    path = path or ledger_path()
    row = {"claim": claim, "lab": lab, "verdict": verdict, "evidence": evidence, "recorded": dt.date.today().isoformat()}
    with exclusive(path):
        rows = [r for r in _read(path) if not (r["claim"] == claim and r["lab"] == lab)]
        rows.append(row)
        rows.sort(key=lambda r: (int(r["claim"][1:]), r["lab"]))
        text = io.StringIO(newline="")
        writer = csv.DictWriter(text, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
        write_atomically(path, text.getvalue())
    return row


def table(path: Path | None = None, only_lab: str | None = None):
    """The ledger joined with the claims' text, as a DataFrame (claims without a verdict included)."""
    import pandas as pd

    if path is None and quick_mode():  # the full ledger with the quick run's verdicts over it
        verdicts = {(r["claim"], r["lab"]): r for p in (ledger_path(quick=False), ledger_path(quick=True)) for r in _read(p)}
    else:
        verdicts = {(r["claim"], r["lab"]): r for r in _read(path or ledger_path())}
    rows = []
    for cid, claim in seed_claims().items():
        found = [r for (c, _), r in verdicts.items() if c == cid]
        for r in found or [{"lab": claim["lab"], "verdict": "not tested yet", "evidence": ""}]:
            if only_lab and r["lab"] != only_lab:
                continue
            rows.append({"claim": cid, "says": claim["claim"], "lab": r["lab"], "verdict": r["verdict"], "evidence": r["evidence"]})
    return pd.DataFrame(rows).set_index("claim")
