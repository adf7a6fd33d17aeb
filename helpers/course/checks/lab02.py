"""Lab 02's checks: predict memory before loading (q1), the largest model that fits on an L4 (q2), the perplexity
cost of NF4 from the learner's own measured ``table`` (q3; a declared measured context)."""
from __future__ import annotations

import math

from . import NOT_DONE, first_match, guarded, is_number, near, not_done, shown
from .digest import is_answer, undo

Q1 = {"model": "qwen2.5-7b", "precision": "nf4", "context": 8192, "batch": 4, "device": "cuda"}
Q2 = {"gpu": "L4", "precision": "int8", "context": 4096}
GIB = 2 ** 30 / 1e9


def _table(table) -> str | None:
    import pandas as pd

    if not isinstance(table, pd.DataFrame) or "perplexity" not in table.columns:
        return "a table with a perplexity column per precision"
    if "nf4" not in table.index or len(table) < 2:
        return "a row for the full-precision baseline first and a row for nf4"
    values = [float(v) for v in table["perplexity"]]
    if not all(math.isfinite(v) and v >= 1.0 for v in values):
        return "perplexities are finite numbers of at least 1"
    return None


CONTEXT = {"table": _table}  # measured in the learner's run: validated, never recomputed


def memory_gb(model: str, precision: str, context: int, batch: int, device: str) -> float:
    """The estimator's total for one configuration: what the named wrong kinds are made of."""
    from ...catalog import estimate_memory

    return estimate_memory(model, precision, context=context, batch=batch, device=device).total_gb


def _varied(**changes) -> float:
    """The exercise's configuration with one thing changed (never with nothing changed: that would be the answer)."""
    if not changes:
        raise ValueError("name what differs from the exercise")
    return memory_gb(**{**Q1, **changes})


@guarded
def q1(predicted_gb) -> str | None:
    if not_done(predicted_gb):
        return f"{NOT_DONE}: set predicted_gb"
    if not is_number(predicted_gb) or predicted_gb <= 0:
        return f"a number of GB, got {shown(predicted_gb)}"
    if is_answer("02q1", predicted_gb):
        return None
    from ...catalog import estimate_memory

    parts = estimate_memory(Q1["model"], Q1["precision"], context=Q1["context"], batch=Q1["batch"], device=Q1["device"])
    message = undo(predicted_gb, [
        ("02q1", lambda v: v * GIB, "that is GiB (2^30 bytes): the estimator's figure is in GB (1e9 bytes)"),
        ("02q1", lambda v: v / 1e9, "that is bytes: give GB"),
    ]) or first_match(predicted_gb, [
        (_varied(batch=1), "that fits one conversation: the cache grows with every conversation served at once (batch=4)"),
        (_varied(precision="bf16"), "that is a 16-bit figure: the weights are in NF4"),
        (_varied(precision="int8"), "that is the int8 figure: the weights are in NF4"),
        (_varied(context=4096), "that is 4,096 tokens of context: each conversation holds 8,192"),
        (_varied(device="cpu"), "on a GPU the estimate includes the CUDA context: device='cuda'"),
        (parts.weights_gb, "that is the weights alone: the total adds the KV cache and the overhead"),
        (parts.weights_gb + parts.kv_cache_gb, "weights and cache, but not the overhead: take the estimate's total"),
    ], rel=1e-3)
    return message or "not the estimator's total for Qwen2.5-7B in NF4, 4 conversations of 8,192 tokens, on a GPU"


@guarded
def q2(largest_on_l4) -> str | None:
    from ...catalog import catalog
    from ... import quantize as q

    if not_done(largest_on_l4):
        return f"{NOT_DONE}: set largest_on_l4"
    models = catalog()
    if not isinstance(largest_on_l4, str) or largest_on_l4 not in models:
        hint = next((key for key in models if isinstance(largest_on_l4, str) and key.replace("-", "").replace(".", "")
                     in largest_on_l4.lower().replace("-", "").replace(".", "")), None)
        return (f"a catalog key such as 'qwen2.5-7b', not a Hub id or a display name, got {shown(largest_on_l4)}"
                + (" (the catalog spells it differently)" if hint else ""))
    if q.gpus_to_fit(largest_on_l4, Q2["precision"], Q2["gpu"], Q2["context"]) != 1:
        return f"{largest_on_l4} does not fit on one L4 in int8 at 4,096 tokens"
    if is_answer("02q2", largest_on_l4):
        return None
    if largest_on_l4 == "qwen2.5-7b":
        return "that is the exercise's example: look for the model with the most parameters that still fits"
    return f"{largest_on_l4} fits, but a catalog model with more parameters fits too"


# the explanation is checked here too, not only by the hidden test: each wrong letter gets the fact that rules it out
WHY = {
    "b": "nf4_increase is right; for why: bitsandbytes quantizes the Linear layers only, the embeddings keep their "
         "precision, so (b) cannot be the reason",
    "c": "nf4_increase is right; for why: a short text makes every perplexity noisier, it does not make one model lose "
         "more than another on the same text",
}


@guarded
def q3(nf4_increase, why, table) -> str | None:
    if not_done(nf4_increase, why):
        return f"{NOT_DONE}: set nf4_increase and why"
    if not is_number(nf4_increase):
        return f"nf4_increase is a number (0.25 for +25 %), got {shown(nf4_increase)}"
    if why not in ("a", "b", "c"):
        return f"why is one letter: a, b or c, got {shown(why)}"
    base, nf4 = float(table["perplexity"].iloc[0]), float(table.loc["nf4", "perplexity"])
    expected = nf4 / base - 1
    if near(nf4_increase, expected, 1e-6, 1e-9):
        return WHY.get(why)
    before = table.index.get_loc("nf4") - 1
    previous = float(table["perplexity"].iloc[before]) if before > 0 else None
    message = first_match(nf4_increase, [
        (nf4 / base, "that is the ratio of the perplexities: the increase is the ratio minus 1"),
        (100 * expected, "a fraction (0.25 for +25 %), not a percentage"),
        (nf4 - base, "that is the difference in perplexity points: divide it by the baseline's perplexity"),
        (base / nf4 - 1, "the other way round: NF4's perplexity over the first row's, minus 1"),
        (nf4 / previous - 1 if previous else None, "relative to the row above NF4: compare with the first (full-precision) row"),
    ], rel=1e-6)
    return message or "not NF4's relative increase over the first row of your table"
