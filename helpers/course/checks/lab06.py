"""Lab 06's check: the proportional hybrid from the learner's own ``summary`` (declared measured context: the
options' medians and the paid share come from the learner's stored results)."""
from __future__ import annotations

import math

from . import NOT_DONE, first_match, guarded, is_number, near, not_done, shown


def _summary(frame) -> str | None:
    import pandas as pd

    if not isinstance(frame, pd.DataFrame) or "median" not in frame.columns or not {"all-API", "self-hosted"} <= set(frame.index):
        return "memo.options' table: a median per option (all-API, self-hosted, hybrid)"
    share = frame.attrs.get("paid_share")
    if not is_number(share) or not 0.0 <= share <= 1.0:
        return "its attrs['paid_share'] is a fraction between 0 and 1"
    if not all(math.isfinite(float(frame.loc[name, "median"])) and float(frame.loc[name, "median"]) >= 0 for name in ("all-API", "self-hosted")):
        return "medians are amounts of USD a month"
    return None


CONTEXT = {"summary": _summary}


@guarded
def q1(hybrid_proportional, why_memo_differs, summary) -> str | None:
    if not_done(hybrid_proportional, why_memo_differs):
        return f"{NOT_DONE}: set hybrid_proportional and why_memo_differs"
    if not is_number(hybrid_proportional):
        return f"hybrid_proportional is an amount of USD a month, got {shown(hybrid_proportional)}"
    share = float(summary.attrs["paid_share"])
    api, local = float(summary.loc["all-API", "median"]), float(summary.loc["self-hosted", "median"])
    expected = share * api + (1 - share) * local
    if not near(hybrid_proportional, expected, 1e-6, 1e-6):
        cost_share = summary.attrs.get("cost_share")
        message = first_match(hybrid_proportional, [
            ((1 - share) * api + share * local, "the shares are the wrong way round: the paid share goes with the all-API median"),
            ((api + local) / 2, "that is the plain mean of the two: weight them by the share of requests each side serves"),
            (float(summary.loc["hybrid", "median"]) if "hybrid" in summary.index else None,
             "that is the memo's hybrid (whole GPUs and fixed costs): the exercise asks for the proportional mix"),
            (cost_share * api + (1 - cost_share) * local if is_number(cost_share) else None,
             "that weights by the share of the bill: weight by the share of requests (attrs['paid_share'])"),
            (expected / 1e6, "in USD a month, not millions"),
            (share * api, "that is the paid part only: add the local share of the self-hosted median"),
        ], rel=1e-6)
        if message:
            return message
        if not min(api, local) <= hybrid_proportional <= max(api, local):
            return "a mix of the two medians lies between them"
        return "not the share-weighted mix of the all-API and self-hosted medians"
    if not isinstance(why_memo_differs, str) or len(why_memo_differs.split()) < 5:
        return "why_memo_differs: one sentence, in your words"
    return None
