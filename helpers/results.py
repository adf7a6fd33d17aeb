"""The learner's results store: each lab saves its key measurements, later labs read them back.

One JSON file in the user cache (``OTS_RESULTS`` overrides the path), one section per lab:

    {"02": {"decode tokens/s fp32": {"value": 41.2, "unit": "tokens/s", "recorded": "2026-11-23T05:40:00",
                                     "hardware": "CPU: ...", "tier": "cpu"}, ...}, ...}

so Lab 04 benchmarks the precision Lab 02 found best, Lab 05 prices the local model with Lab 04's
measured throughput, and the capstone memo quotes the learner's own numbers. A value another lab
needs and that is missing raises an error naming the lab to run; ``get(..., default=...)`` lets
a lab go on with a labelled default instead.

Writes take a lock, so two notebooks (or CI's two workers) saving at once both keep their values.
Quick-mode runs (CI's student copies) save to ``results.quick.json`` beside the store and read it
over the full store, so CI-sized numbers never replace a full run's, and the capstone of a full
run quotes full runs only.
"""
from __future__ import annotations

import datetime as dt
import json
import math
import os
import tempfile
from pathlib import Path

from .errors import InputError
from .paths import cache_dir, exclusive, quick_mode, quick_variant, write_atomically

_MISSING = object()


def results_path(quick: bool | None = None) -> Path:
    """The store this run writes to: the learner's, or its quick-mode sibling (``quick`` defaults to the mode)."""
    override = os.environ.get("OTS_RESULTS")
    path = Path(override).expanduser() if override else cache_dir() / "results.json"
    return quick_variant(path) if (quick_mode() if quick is None else quick) else path


def _lab_key(lab: str | int) -> str:
    key = f"{int(str(lab)[:2]):02d}" if str(lab)[:2].isdigit() else None
    if key is None:
        raise InputError(f"lab {lab!r} is not a lab number", fix="pass the lab's number, e.g. '02' or 2")
    return key


def load(path: Path | None = None) -> dict[str, dict]:
    """Every saved result, by lab. An unreadable file is reported with its path, never silently reset.

    Without ``path`` in quick mode: the full store with the quick run's values over it."""
    if path is None and quick_mode():
        merged = _read(results_path(quick=False))
        for lab, entries in _read(results_path(quick=True)).items():
            merged.setdefault(lab, {}).update(entries)
        return merged
    return _read(path or results_path())


def _read(path: Path) -> dict[str, dict]:
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise InputError(f"the results store {path} is not valid JSON ({error})",
                         fix=f"move it aside (mv {path} {path}.bad) and re-run the labs whose results you need") from None
    if not isinstance(data, dict):
        raise InputError(f"the results store {path} does not hold a mapping of labs", fix="move it aside and re-run the labs")
    return data


def save(lab: str | int, values: dict[str, float | int | str | bool], units: dict[str, str] | None = None,
         plan=None, path: Path | None = None) -> dict:
    """Save ``values`` (name -> number or short text) under ``lab``; a name saved again is replaced.

    ``plan`` (the lab's plan) records the tier, hardware and model next to each value, so a later lab (and the memo)
    can say what a number was measured on. The file is replaced atomically: a crash never leaves half a file.
    """
    key = _lab_key(lab)
    units = units or {}
    now = dt.datetime.now().isoformat(timespec="seconds")
    entries = {}
    for name, value in values.items():
        if hasattr(value, "item"):  # numpy / torch scalars
            value = value.item()
        if not isinstance(value, (int, float, str, bool)):
            raise InputError(f"result {name!r} is a {type(value).__name__}", fix="save numbers or short text (convert with float() or str())")
        if isinstance(value, float) and not math.isfinite(value):
            raise InputError(f"result {name!r} is {value}", fix="save a finite number (check the measurement that produced it)")
        entry = {"value": value, "unit": units.get(name, ""), "recorded": now}
        if plan is not None:
            entry.update(tier=plan.tier, hardware=plan.hardware, model=plan.model)
        entries[name] = entry
    path = path or results_path()
    with exclusive(path):  # read, update, replace: one writer at a time, readers never see half a file
        data = _read(path)
        data.setdefault(key, {}).update(entries)
        write_atomically(path, json.dumps(data, indent=1, sort_keys=True))
    return entries


def get(lab: str | int, name: str, default=_MISSING, path: Path | None = None):
    """The value ``name`` saved by ``lab``; without it, ``default`` if given, else an error naming the lab to run."""
    key = _lab_key(lab)
    entry = load(path).get(key, {}).get(name)
    if entry is None:
        if default is not _MISSING:
            return default
        raise InputError(f"no result {name!r} from Lab {key} in {path or results_path()}",
                         fix=f"run Lab {key} to the end (its last cell saves its results), then re-run this cell")
    return entry["value"]


def table(path: Path | None = None):
    """Every saved result as a DataFrame (lab, name, value, unit, tier, recorded)."""
    import pandas as pd

    rows = [{"lab": lab, "name": name, **entry} for lab, entries in sorted(load(path).items()) for name, entry in entries.items()]
    columns = ["lab", "name", "value", "unit", "tier", "hardware", "recorded"]
    return pd.DataFrame(rows, columns=columns).set_index(["lab", "name"]) if rows else pd.DataFrame(columns=columns)


def artifacts_dir(lab: str | int, quick: bool = False) -> Path:
    """Where ``lab`` keeps files a later lab uses (Lab 03's merged model, served by Lab 04): next to the
    results store, one folder per lab; quick-mode runs (CI's student copies) keep theirs apart."""
    return results_path(quick=False).parent / "artifacts" / (_lab_key(lab) + ("-quick" if quick else ""))


def keep_artifact(lab: str | int, name: str, source: str | Path, quick: bool = False) -> Path:
    """Move the folder ``source`` to ``artifacts_dir(lab)/name``, replacing an older one whole: a reader
    sees the old folder or the new one, never half of one (a later lab may read while this lab writes)."""
    import shutil

    target = artifacts_dir(lab, quick) / name
    target.parent.mkdir(parents=True, exist_ok=True)
    staged = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{name}-"))
    os.rmdir(staged)
    # moved, not copied: a merged model is half a gigabyte, and a copy left in the temp folder on every run
    # filled a disk (shutil.move renames on the same filesystem, else copies then deletes the source)
    shutil.move(str(source), staged)
    old = target.with_name(f".{name}-old-{os.getpid()}")
    if target.exists():
        os.replace(target, old)
    os.replace(staged, target)
    shutil.rmtree(old, ignore_errors=True)
    return target


def artifact(lab: str | int, name: str, quick: bool = False) -> Path | None:
    """The folder ``lab`` kept under ``name``, or None when that lab has not run (the caller says what it uses instead)."""
    path = artifacts_dir(lab, quick) / name
    return path if path.is_dir() else None
