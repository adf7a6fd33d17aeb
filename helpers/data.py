"""Loading dated, sourced data files.

Every data file under ``datasets/`` that carries external numbers has a ``source`` and a
``date`` column (ISO date the number was recorded). ``load_rows`` checks both, converts the
numeric columns, and reports a malformed row by its line number and field, so nothing is
silently dropped.
"""
from __future__ import annotations

import csv
import datetime as dt
import math
from pathlib import Path
from typing import Iterable

from .errors import DataError
from .paths import dataset


def _parse_date(value: str, where: str) -> dt.date:
    try:
        return dt.date.fromisoformat(value.strip())
    except ValueError:
        raise DataError(
            f"{where}: field 'date' is {value!r}, not an ISO date",
            fix="write the date the number was recorded as YYYY-MM-DD",
        ) from None


def load_rows(
    path: str | Path,
    numeric: Iterable[str] = (),
    required: Iterable[str] = (),
    optional_numeric: Iterable[str] = (),
    sourced: bool = True,
) -> list[dict]:
    """Read a CSV into a list of dicts, validating as it goes.

    Args:
        path: a path, or a name under ``datasets/``.
        numeric: columns that must hold a finite number in every row.
        required: columns that must be non-empty in every row.
        optional_numeric: columns that may be empty, else must be a finite number.
        sourced: whether every row needs a non-empty ``source`` and a valid ``date``.

    Raises:
        DataError: naming file, line number and field for the first bad row.
    """
    path = Path(path)
    if not path.is_absolute() and not path.exists():
        path = dataset(str(path))
    numeric, required, optional_numeric = list(numeric), list(required), list(optional_numeric)
    rows: list[dict] = []
    with open(path, newline="", encoding="utf-8") as handle:
        lines = (line for line in handle if not line.startswith("#"))
        reader = csv.DictReader(lines)
        columns = reader.fieldnames or []
        needed = set(numeric) | set(required) | ({"source", "date"} if sourced else set())
        missing = sorted(needed - set(columns))
        if missing:
            raise DataError(
                f"{path.name}: missing column(s) {', '.join(missing)}",
                fix=f"add the column(s) to the header of {path}",
            )
        for index, row in enumerate(reader):
            where = f"{path.name} data row {index + 1}"
            for field in required + (["source"] if sourced else []):
                if not (row.get(field) or "").strip():
                    raise DataError(f"{where}: field '{field}' is empty", fix=f"fill in '{field}'")
            if sourced:
                if not (row.get("date") or "").strip():
                    raise DataError(
                        f"{where}: field 'date' is empty (every external number needs a date)",
                        fix="add the date the number was recorded (YYYY-MM-DD)",
                    )
                row["date"] = _parse_date(row["date"], where)
            for field in numeric + optional_numeric:
                raw = (row.get(field) or "").strip()
                if not raw and field in optional_numeric:
                    row[field] = None
                    continue
                try:
                    value = float(raw)
                except ValueError:
                    raise DataError(
                        f"{where}: field '{field}' is {raw!r}, not a number",
                        fix=f"write '{field}' as a plain number (no units, no commas)",
                    ) from None
                if not math.isfinite(value):
                    raise DataError(f"{where}: field '{field}' is not finite", fix="use a finite number")
                row[field] = value
            rows.append(row)
    return rows


def write_results(path: str | Path, rows: list[dict], same_run: tuple[str, ...] = ("hardware", "model")) -> Path:
    """Write benchmark rows to a results CSV, replacing earlier rows of the same run (same values of
    ``same_run``, e.g. the same GPU and model) and keeping the rest; new columns are added at the end."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    existing = list(csv.DictReader(open(path))) if path.exists() else []
    replaced = {tuple(str(row[k]) for k in same_run) for row in rows}
    kept = [row for row in existing if tuple(row.get(k, "") for k in same_run) not in replaced]
    fields = list(dict.fromkeys([*(key for row in rows for key in row), *(existing[0] if existing else {})]))
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        writer.writerows(kept + rows)
    return path
