"""Lab 04's checks: metrics from a raw stream (q1; the lesson's stream lives here), the best concurrency under a
stricter latency target from the learner's own sweep (q2; ``load_records`` is declared measured context), and
the bytes-only speed-up of NF4 (q3). Goodput is computed once, by ``bench.compare.sweep_summary``."""
from __future__ import annotations

import math

from . import NOT_DONE, first_match, guarded, is_number, near, not_done, shown
from .digest import is_answer, undo

SENT = 100.00  # the request left at t = 100.00 s
STREAM = (100.42, 100.47, 100.53, 100.58, 100.71, 100.76)  # arrival times of its 6 tokens
TARGET = {"ttft_s": 1.5, "tpot_s": 0.2}  # the exercise's users
SWEEP_SLO = {"ttft_s": 2.0, "tpot_s": 0.25}  # the sweep's own target in the lesson


def _records(records) -> str | None:
    from ...bench.metrics import RequestRecord

    if not isinstance(records, list) or not records or not all(isinstance(r, RequestRecord) for r in records):
        return "the sweep's list of request records"
    for r in records:
        times = [r.start, r.end, *r.chunk_times]
        if not all(isinstance(t, (int, float)) and math.isfinite(t) for t in times) or r.end < r.start:
            return "records whose times are finite and end after they start"
        if r.chunk_times and (r.chunk_times[0] < r.start or r.chunk_times != sorted(r.chunk_times)):
            return "records whose tokens arrive in order, after the request was sent"
        if isinstance(r.concurrency, bool) or not isinstance(r.concurrency, int) or r.concurrency < 1:
            return "records tagged with the concurrency level they ran at"
    return None


CONTEXT = {"load_records": _records}


@guarded
def q1(ttft, tpot, itl) -> str | None:
    if not_done(ttft, tpot, itl):
        return f"{NOT_DONE}: set ttft, tpot and itl"
    first, last, tokens = STREAM[0], STREAM[-1], len(STREAM)
    if not is_number(ttft):
        return f"ttft is a number of seconds, got {shown(ttft)}"
    if not near(ttft, first - SENT, 1e-9, 1e-9):
        message = first_match(ttft, [(first, "TTFT is a duration: the first token's arrival minus the time the request was sent"),
                                     (1000 * (first - SENT), "in seconds, not milliseconds"),
                                     (last - SENT, "that is the whole response (E2E): TTFT stops at the first token")], rel=1e-9)
        return message or "TTFT is the first token's arrival minus the time the request was sent"
    if isinstance(itl, (int, float)) or not hasattr(itl, "__len__"):
        return "itl is a list: one gap per pair of consecutive tokens"
    if len(itl) != tokens - 1:
        if len(itl) == tokens:
            return "one gap per pair of consecutive tokens: the wait for the first token is TTFT, not a gap"
        return f"one gap per pair of consecutive tokens: {tokens} tokens make {tokens - 1} gaps"
    gaps = [b - a for a, b in zip(STREAM, STREAM[1:])]
    if not all(is_number(g) for g in itl):
        return "itl holds numbers of seconds"
    if all(near(g, 1000 * e, 1e-6, 1e-9) for g, e in zip(itl, gaps)):
        return "itl in seconds, not milliseconds"
    if not all(near(g, e, 1e-6, 1e-9) for g, e in zip(itl, gaps)):
        return "each gap is a token's arrival minus the previous token's"
    if not is_number(tpot):
        return f"tpot is a number of seconds, got {shown(tpot)}"
    expected = (last - first) / (tokens - 1)
    if near(tpot, expected, 1e-9, 1e-12):
        return None
    message = first_match(tpot, [
        ((last - SENT) / tokens, "that averages the whole response over every token: TPOT leaves the first token out"),
        ((last - SENT) / (tokens - 1), "that includes the wait for the first token: TPOT = (E2E - TTFT) / (tokens - 1)"),
        ((last - first) / tokens, "divide by the gaps, not the tokens: TPOT = (E2E - TTFT) / (tokens - 1)"),
        (1000 * expected, "in seconds, not milliseconds"),
    ], rel=1e-9)
    return message or "TPOT = (E2E - TTFT) / (tokens - 1)"


def _goodput(records, **slo):
    from ...bench import compare
    from ...bench.metrics import SLO

    return compare.sweep_summary(records, slo=SLO(**slo))


@guarded
def q2(best_concurrency, best_goodput, load_records) -> str | None:
    if not_done(best_concurrency, best_goodput):
        return f"{NOT_DONE}: set best_concurrency and best_goodput"
    levels = sorted({r.concurrency for r in load_records})
    strict = _goodput(load_records, **TARGET)
    goodput = strict["goodput requests/s"]
    best = float(goodput.max())
    if best <= 0:  # no level kept any request within the users' target: there is no best level to name
        if best_concurrency is None and is_number(best_goodput) and best_goodput == 0:
            return None
        return ("no level of your sweep met the users' target (goodput 0 at every level): say so with "
                "best_concurrency = None and best_goodput = 0")
    if best_concurrency is None:
        return "a level of your sweep did meet the users' target: name it"
    if best_concurrency not in levels or isinstance(best_concurrency, bool):
        return f"one of the levels you swept: {levels}, got {shown(best_concurrency)}"
    if not is_number(best_goodput) or best_goodput < 0:
        return f"goodput is requests per second, never negative: got {shown(best_goodput)}"
    if not near(best_goodput, best, 1e-6, 1e-9):
        loose = _goodput(load_records, **SWEEP_SLO)
        message = first_match(best_goodput, [
            (float(loose["goodput requests/s"].max()), "that is the goodput under the sweep's own target (2 s, 0.25 s): "
                                                       "re-summarise with the users' target, 1.5 s and 0.2 s"),
            (float(strict["requests/s"].max()), "that is throughput (every request that finished): goodput counts only "
                                                "requests within both targets"),
            (float(strict["output tokens/s"].max()), "goodput is requests per second, not tokens per second"),
            (float(goodput.iloc[-1]), "that is the highest level's goodput: compare every level"),
        ], rel=1e-6)
        return message or "not the highest goodput under the users' target (1.5 s to the first token, 0.2 s per token)"
    reached = float(goodput.xs(best_concurrency, level="concurrency").max())
    if not near(reached, best, 1e-6, 1e-9):
        return f"concurrency {best_concurrency} is not where that goodput was reached"
    return None


def speedup(model: str, slow: str, fast: str) -> float:
    """bf16 bytes / NF4 bytes (or any two precisions) for a catalog model: what the named wrong kinds are made of."""
    from ...catalog import estimate_weights_bytes, get_model

    spec = get_model(model)
    return estimate_weights_bytes(spec, slow) / estimate_weights_bytes(spec, fast)


@guarded
def q3(predicted_speedup, why_not) -> str | None:
    if not_done(predicted_speedup, why_not):
        return f"{NOT_DONE}: set predicted_speedup and why_not"
    if not is_number(predicted_speedup) or predicted_speedup <= 0:
        return f"a speed-up is a positive ratio, got {shown(predicted_speedup)}"
    if not is_answer("04q3", predicted_speedup):
        message = undo(predicted_speedup, [
            ("04q3", lambda v: 1 / v, "NF4 reads fewer bytes than bf16, so it should be faster: bf16 bytes / NF4 bytes, not NF4 / bf16"),
        ]) or first_match(predicted_speedup, [
            (4.0, "16 bits / 4 bits leaves out what NF4 keeps in 16 bits (embeddings, norms) and its scales: use the catalog's bytes"),
            (speedup("qwen2.5-7b", "bf16", "int8"), "that is int8's speed-up: the exercise compares NF4 with bf16"),
            (speedup("qwen2.5-7b", "fp32", "nf4"), "that compares with fp32: the exercise compares NF4 with bf16"),
            (speedup("smollm2-135m", "bf16", "nf4"), "that is the embedded model's ratio: the exercise asks about Qwen2.5-7B"),
        ], rel=0.005)
        return message or "not bf16 bytes / NF4 bytes for Qwen2.5-7B from helpers.catalog.estimate_weights_bytes"
    if not isinstance(why_not, str) or len(why_not.split()) < 5:
        return "why_not: one sentence, in your words"
    return None
