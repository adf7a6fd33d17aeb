"""A seeded day of support-desk traffic, replayed against the router, and the bill it leaves.

The day follows the scenario (``datasets/scenario.csv``): its conversations a month spread over
24 hours with the scenario's peak-to-average ratio (a business-hours curve, :func:`hourly_shares`),
messages drawn from the support-desk dataset (with their labelled personal data and difficulty).
``n`` requests stand for the whole day: each one represents ``scale = conversations a day / n``
conversations, which is how a laptop replays a 10M-a-month desk "at scale".

:func:`replay` sends them through a :class:`~helpers.deploy.router.Router` in arrival order with
bounded concurrency and a time limit, firing events (an outage of the local server, its restart) at
chosen points of the day; :func:`report` turns the answers and the ledger into the figures the
notebook shows: the routing split, the bill over the day against the all-API bill, latency
percentiles per route, the fallbacks taken, and the PII audit (what reached the paid side, checked
against the dataset's labels, not against the router's own detector).
"""
from __future__ import annotations

import math
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable

from ..errors import InputError

PEAK_HOUR, SPREAD_H = 13.0, 3.0  # the business-hours bump: centred on 13:00, 3 h wide (an assumption, stated in the lab)


def hourly_shares(peak_to_average: float) -> list[float]:
    """Share of a day's traffic in each hour: a flat floor plus a bump at :data:`PEAK_HOUR`, scaled so that
    the busiest hour carries ``peak_to_average`` times the average hour (the figure Lab 01 sizes GPUs for)."""
    bump = [math.exp(-((h + 0.5 - PEAK_HOUR) ** 2) / (2 * SPREAD_H ** 2)) for h in range(24)]
    top, mean_bump = max(bump), sum(bump) / 24
    # busiest / average hour = (1 + a * top) / (1 + a * mean_bump) = peak_to_average, solved for the bump's height a
    if not 1 <= peak_to_average < top / mean_bump:
        raise InputError(f"peak_to_average {peak_to_average} cannot be drawn with a {SPREAD_H:g} h business-hours bump",
                         fix=f"use a value from 1 to {top / mean_bump:.2f} in datasets/scenario.csv")
    a = (peak_to_average - 1) / (top - peak_to_average * mean_bump)
    raw = [1 + a * b for b in bump]
    total = sum(raw)
    return [r / total for r in raw]


@dataclass
class Request:
    request_id: str
    at_s: float          # seconds after midnight in the simulated day
    message: str
    pii_values: list[str]  # the labelled personal data in the message (the audit's ground truth)
    difficulty: str      # the dataset's label: simple / multi_issue
    pii_kinds: tuple[str, ...] = ()  # the labelled kinds, in the order of pii_values (email, phone, iban, card, name, address)

    @property
    def hour(self) -> int:
        return int(self.at_s // 3600)


def sample_day(rows: list[dict], n: int, peak_to_average: float, seed: int = 0) -> list[Request]:
    """``n`` requests over one day, in arrival order; ids are stable per seed, so a rerun is idempotent in the ledger."""
    import numpy as np

    if n < 1:
        raise InputError(f"a day of {n} requests", fix="ask for at least one request")
    if not rows:
        raise InputError("no messages to draw the day from", fix="load the support-desk rows first (ft.load_tickets('test'))")
    rng = np.random.default_rng(seed)
    hours = rng.choice(24, size=n, p=hourly_shares(peak_to_average))
    at = np.sort(hours * 3600 + rng.uniform(0, 3600, size=n))
    picks = rng.integers(0, len(rows), size=n)
    day = []
    for i, (t, k) in enumerate(zip(at, picks)):
        row = rows[int(k)]
        spans = row.get("pii_spans", [])
        values = [row["message"][s["start"]:s["end"]] for s in spans]
        day.append(Request(f"day{seed}-{i:05d}", float(t), row["message"], values, row.get("difficulty", "simple"),
                           tuple(s["type"] for s in spans)))
    return day


def replay(router, day: list[Request], concurrency: int = 8, time_limit_s: float = 120.0, max_tokens: int | None = None,
           events: dict[float, Callable[[], None]] | None = None, progress: bool = True):
    """Send the day through ``router`` (arrival order, at most ``concurrency`` in flight) and return one row per
    request. ``events`` maps a time of day in hours (e.g. ``{14.0: server.stop, 15.0: server.start}``) to a call made
    before the first request at or after it. Requests not started within ``time_limit_s`` are listed as
    ``not sent (time limit)``: never silently dropped."""
    import pandas as pd
    from tqdm.auto import tqdm

    pending_events = sorted((events or {}).items())
    results: dict[str, dict] = {}
    start = time.perf_counter()

    def one(request: Request) -> None:
        t0 = time.perf_counter()
        answer = router.handle(request.request_id, request.message, max_tokens=max_tokens)
        results[request.request_id] = {"route": answer.route, "outcome": answer.outcome, "reason": answer.reason,
                                       "fallbacks": len(answer.fallbacks), "retries": answer.retries, "error": answer.error,
                                       "latency_s": time.perf_counter() - t0}

    bar = tqdm(total=len(day), desc="simulated day", unit="req", disable=not progress)
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        futures = []
        for request in day:
            while pending_events and request.at_s >= pending_events[0][0] * 3600:
                for future in futures:  # the event happens at a point in the day: what came before has been served
                    future.result()
                pending_events.pop(0)[1]()
            if time.perf_counter() - start > time_limit_s:
                break
            future = pool.submit(one, request)
            future.add_done_callback(lambda _: bar.update())
            futures.append(future)
        for future in futures:
            future.result()
    bar.close()
    table = []
    for request in day:
        row = results.get(request.request_id, {"route": "none", "outcome": "not sent (time limit)", "reason": "", "fallbacks": 0,
                                               "retries": 0, "error": f"the replay's {time_limit_s:g} s limit came first", "latency_s": math.nan})
        table.append({"request_id": request.request_id, "hour": request.hour, "has_pii": bool(request.pii_values),
                      "pii_kinds": ",".join(sorted(set(request.pii_kinds))), "difficulty": request.difficulty, **row})
    return pd.DataFrame(table)


def pii_audit(day: list[Request], sent_prompts: list[str]):
    """Per kind of personal data: how many labelled values the day carried, whether the router detects that kind,
    and how many of the values reached the paid side, searched in the prompts the paid upstream received (the
    ground truth, independent of the router's own detector)."""
    import pandas as pd

    from .pii import ENTITIES

    sent = "\n".join(sent_prompts)
    counts: dict[str, dict] = {}
    for request in day:
        for kind, value in zip(request.pii_kinds, request.pii_values):
            entry = counts.setdefault(kind, {"detected by the router": kind in ENTITIES, "values": 0, "reached the paid API": 0})
            entry["values"] += 1
            entry["reached the paid API"] += value in sent
    return pd.DataFrame(counts).T.rename_axis("kind")


def report(table, ledger_rows, prices_per_1m: tuple[float, float], scale: float) -> dict:
    """The day's figures: routing split, hourly bill vs all-API bill (both scaled to the real day), latency
    percentiles per route and the fallbacks taken. ``prices_per_1m`` = the paid API's (input, output) USD per 1M
    tokens (Lab 01's snapshot); ``scale`` = conversations each simulated request stands for."""
    import pandas as pd

    merged = table.merge(ledger_rows[["request_id", "tokens_in", "tokens_out", "cost_usd"]], on="request_id", how="left").fillna(
        {"tokens_in": 0, "tokens_out": 0, "cost_usd": 0.0})
    per_in, per_out = (p / 1e6 for p in prices_per_1m)
    answered = merged["outcome"] == "answered"
    merged["all_api_usd"] = (merged["tokens_in"] * per_in + merged["tokens_out"] * per_out).where(answered, 0.0)
    split = merged.groupby(["route", "outcome"]).size().rename("requests").to_frame()
    split["share"] = split["requests"] / len(merged)
    hourly = merged.groupby("hour")[["cost_usd", "all_api_usd"]].sum().reindex(range(24), fill_value=0.0) * scale
    hourly.columns = ["hybrid USD", "all-API USD"]
    latency = merged[answered].groupby("route")["latency_s"].describe(percentiles=[0.5, 0.95, 0.99])[["count", "50%", "95%", "99%"]]
    fallbacks = merged[merged["fallbacks"] > 0].groupby(["route", "outcome"]).size().rename("requests").to_frame()
    day_hybrid, day_api = hourly["hybrid USD"].sum(), hourly["all-API USD"].sum()
    return {"table": merged, "split": split, "hourly": hourly, "latency": latency, "fallbacks": fallbacks,
            "day_hybrid_usd": float(day_hybrid), "day_all_api_usd": float(day_api),
            "paid_share": float((merged["route"] == "paid").mean()), "lost": int((~merged["outcome"].isin(["answered", "failed"])).sum())}
