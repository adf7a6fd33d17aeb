"""Where a tuned model's errors are: the held-out test rows grouped by the phrasing (generator template) they were made from.

The test split's phrasings never occur in training (``datasets/support_desk/README.md``), so a model's accuracy on them
is a measure of what it learned beyond the words it saw. Grouped by phrasing, the errors of Lab 03's CPU runs were not
spread thinly: a few phrasings were misread on nearly every row, and the accuracy against the desk's bar was decided there.
"""
from __future__ import annotations

from collections import Counter

from ..errors import InputError
from .lora import parse_prediction, wilson_interval

__all__ = ["errors_by_phrasing", "phrasing_reading", "phrasing_results"]

EXAMPLE_CHARS = 90


def _phrasing(row: dict, where: int) -> str:
    templates = row.get("templates")
    if not templates or not isinstance(templates, list):
        raise InputError(f"row {where} has no 'templates' field: the breakdown groups rows by the generator's phrasing ids",
                         fix="pass rows of datasets/support_desk/test.jsonl (your own tickets have no phrasing ids)")
    return str(templates[0])


def errors_by_phrasing(predictions: list[str], rows: list[dict], field: str = "category"):
    """One row per phrasing (the template of each message's first issue, which sets its category): test rows, the
    share with ``field`` right, the rows wrong and that phrasing's share of all the errors, the answer most often given instead (None:
    no valid JSON) and its shortest single-issue message without personal data (shortened). Worst first."""
    import pandas as pd

    if len(predictions) != len(rows):
        raise InputError(f"{len(predictions)} predictions for {len(rows)} rows", fix="predict every row you pass")
    groups: dict[str, dict] = {}
    for where, (reply, row) in enumerate(zip(predictions, rows)):
        key = _phrasing(row, where)
        group = groups.setdefault(key, {"rows": 0, "right": 0, "instead": Counter(), "examples": []})
        parsed = parse_prediction(reply)
        said = parsed.get(field) if parsed is not None else None
        group["rows"] += 1
        if said == row["target"][field]:
            group["right"] += 1
        else:
            group["instead"][str(said)] += 1
        # an example reads best as one issue and no personal data; any of the phrasing's messages if it has none such
        group["examples"].append((row.get("difficulty", "simple") != "simple" or bool(row.get("pii_spans")), len(row["message"]),
                                  row["message"]))
    wrong = sum(g["rows"] - g["right"] for g in groups.values())
    table = []
    for key, g in groups.items():
        example = min(g["examples"])[2]
        table.append({"phrasing": key, "rows": g["rows"], "right": g["right"] / g["rows"], "wrong": g["rows"] - g["right"],
                      "share of errors": (g["rows"] - g["right"]) / wrong if wrong else 0.0,
                      "mostly read as": g["instead"].most_common(1)[0][0] if g["instead"] else "",
                      "example": example if len(example) <= EXAMPLE_CHARS else example[: EXAMPLE_CHARS - 3] + "..."})
    out = pd.DataFrame(table).sort_values(["right", "rows"], ascending=[True, False]).set_index("phrasing")
    out.attrs["errors"], out.attrs["n"] = wrong, len(rows)
    return out


def phrasing_reading(table, worst: int = 3, bar: float | None = None) -> str:
    """How concentrated the errors are: the share the ``worst`` phrasings hold, and the rate the model would have with
    those phrasings right (what the held-out phrasing it never saw costs against the desk's bar). With ``bar``: the
    ceiling the phrasings it misreads on most rows (under half right) put on the rate, even with every other row right,
    and whether that ceiling could pass the memo's rule (the 95 % interval's low end at or above the bar)."""
    wrong, n = table.attrs.get("errors"), table.attrs.get("n")
    if wrong is None or n is None:
        raise InputError("this table has lost its totals", fix="pass the table errors_by_phrasing returned, unfiltered")
    if wrong == 0:
        return f"no errors on {n} held-out rows"
    head = table.head(worst)
    held = int(head["wrong"].sum())
    named = ", ".join(f"{key} ({r['right']:.0%} of {r['rows']} right, mostly read as {r['mostly read as']})"
                      for key, r in head.iterrows())
    said = (f"{held} of the {wrong} errors ({held / wrong:.0%}) sit in {len(head)} of {len(table)} phrasings: {named}. "
            f"Rate now {(n - wrong) / n:.0%}; with those {len(head)} phrasings right it would be {(n - wrong + held) / n:.0%}.")
    misread = table[table["right"] < 0.5]
    if bar is None or misread.empty:
        return said
    ceiling = n - int(misread["wrong"].sum())
    low = wilson_interval(ceiling, n)[0]
    said += (f" The {len(misread)} phrasing{'s' if len(misread) != 1 else ''} misread on most of their rows cap the rate at "
             f"{ceiling / n:.0%} (95 % interval from {low:.0%}) even with every other row right: by the memo's rule (low end at "
             f"or above the desk's {bar:.0%}) ")
    if low < bar:
        return said + "a model that misreads them cannot pass on these rows."
    room = 0
    while wilson_interval(ceiling - room - 1, n)[0] >= bar:
        room += 1
    return said + (f"a model could pass without reading them, but only with at most {room} other error{'s' if room != 1 else ''} "
                   f"on the other {n - int(misread['rows'].sum())} rows.")


def phrasing_results(path=None, shown: int = 6):
    """The course's recorded errors by phrasing (``datasets/results/cpu_phrasing_errors.csv``, written by
    ``scripts/cpu_learning_curve.py --phrasing-out``): the share right on each phrasing in each recorded run (a column
    per run: its seed, and whether its weights were the last step's or the mean over the run's end), the ``shown``
    phrasings worst on average first; None if the file is missing."""
    import pandas as pd

    from ..paths import DATASETS

    path = DATASETS / "results" / "cpu_phrasing_errors.csv" if path is None else path
    try:
        table = pd.read_csv(path)
    except FileNotFoundError:
        return None
    seed = table["seed"].fillna(0).astype(int) if "seed" in table else pd.Series(0, index=table.index)
    average = table["average"] if "average" in table else pd.Series(float("nan"), index=table.index)
    table["run"] = [f"seed {s}" + ("" if pd.isna(a) else f", mean of last {a:.0%}") + f" ({d})"
                    for s, a, d in zip(seed, average, table["date"])]
    wide = table.pivot_table(index="phrasing", columns="run", values="right", aggfunc="first")
    order = wide.mean(axis=1).sort_values().index
    return wide.loc[order].head(shown)
