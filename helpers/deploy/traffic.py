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
from .desk import TRIAGE_REPLY_TOKENS, quality

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
class DaySettings:
    requests: int        # simulated requests standing for the whole day
    concurrency: int     # requests in flight at once
    max_tokens: int      # reply budget per request
    time_limit_s: float  # the replay stops starting requests after this
    outage: tuple[float, float] = (14.0, 15.0)  # the local server is down between these hours of the day
    drill_requests: int = 1000  # the at-scale drill (stand-ins on both sides): >= 1000 at concurrency 50
    drill_concurrency: int = 50


def day_settings(plan) -> DaySettings:
    """Sizes for the plan's device: a CPU serves the embedded model at a few requests a second, a GPU far more."""
    if plan.quick:
        return DaySettings(requests=8, concurrency=4, max_tokens=8, time_limit_s=60, drill_requests=300, drill_concurrency=20)
    if plan.device == "cpu":
        # a triage answer is about 30 tokens of JSON: 24 requests (about 70 s on one core with the base model, which runs
        # to the token limit; less with the tuned one, which stops), each scored; the GPU tiers replay 400
        return DaySettings(requests=24, concurrency=plan.batch, max_tokens=TRIAGE_REPLY_TOKENS, time_limit_s=240)
    return DaySettings(requests=400, concurrency=max(8, plan.batch), max_tokens=64, time_limit_s=300)


@dataclass
class Request:
    request_id: str
    at_s: float          # seconds after midnight in the simulated day
    message: str
    pii_values: list[str]  # the labelled personal data in the message (the audit's ground truth)
    difficulty: str      # the dataset's label: simple / multi_issue
    pii_kinds: tuple[str, ...] = ()  # the labelled kinds, in the order of pii_values (email, phone, iban, card, name, address)
    target: dict | None = None  # the ticket's triage label (Lab 03's task): every answer from a measured upstream is scored

    @property
    def hour(self) -> int:
        return int(self.at_s // 3600)


def outage_window(day: list["Request"], preferred: tuple[float, float], least: int = 2) -> tuple[tuple[float, float], str]:
    """The hour the local server goes down in the simulated day: ``preferred`` (the settings' hour) where at least
    ``least`` of the day's requests fall in it, else the day's busiest hour (a small day can leave the preferred hour
    empty, and an outage that hits no request teaches nothing). Returns the window and a sentence saying what it hits."""
    def inside(window):
        return sum(1 for r in day if window[0] * 3600 <= r.at_s < window[1] * 3600)

    window, moved = tuple(preferred), ""
    if inside(window) < min(least, len(day)):
        counts = {hour: sum(1 for r in day if r.hour == hour) for hour in range(24)}
        busiest = max(counts, key=lambda hour: (counts[hour], -hour))
        width = preferred[1] - preferred[0]
        moved = (f" (moved from hour {preferred[0]:g}, where {inside(window)} of this day's requests fall, to the day's "
                 f"busiest hour)")
        window = (float(busiest), float(busiest) + width)
    hit = inside(window)
    said = (f"the local server goes down from hour {window[0]:g} to {window[1]:g}{moved}: {hit} of the day's {len(day)} "
            f"requests fall in it" + ("" if hit else ", so this day shows no fallback"))
    return window, said


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
                           tuple(s["type"] for s in spans), row.get("target")))
    return day


def replay(router, day: list[Request], concurrency: int = 8, time_limit_s: float = 120.0, max_tokens: int | None = None,
           events: dict[float, Callable[[], None]] | None = None, progress: bool = True):
    """Send the day through ``router`` (arrival order, at most ``concurrency`` in flight) and return one row per
    request. ``events`` maps a time of day in hours (e.g. ``{14.0: server.stop, 15.0: server.start}``) to a call made
    before the first request at or after it. Requests not started within ``time_limit_s`` are listed as
    ``not sent (time limit)``: never silently dropped. Every answer from an upstream that is not a stand-in is scored
    against the request's label (``desk.score_reply``), in the table and in the ledger (``correct``)."""
    import pandas as pd
    from tqdm.auto import tqdm

    if not day:
        raise InputError("an empty day: nothing to replay", fix="sample a day with at least one request: traffic.sample_day(rows, n, ...), n >= 1")
    if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
        raise InputError(f"concurrency = {concurrency!r}: at least 1 request in flight", fix="e.g. concurrency=4")
    pending_events = sorted((events or {}).items())
    results: dict[str, dict] = {}
    start = time.perf_counter()

    from .desk import score_reply

    def one(request: Request) -> None:
        t0 = time.perf_counter()
        answer = router.handle(request.request_id, request.message, max_tokens=max_tokens)
        latency = time.perf_counter() - t0
        spec = {"local": router.policy.local, "paid": router.policy.paid}.get(answer.route)
        stand_in = bool(spec is not None and spec.stand_in)
        score = score_reply(answer.text, request.target) if answer.outcome == "answered" and not stand_in else None
        if score is not None:
            router.ledger.score(request.request_id, score["correct"])
        results[request.request_id] = {"route": answer.route, "outcome": answer.outcome, "reason": answer.reason,
                                       "fallbacks": len(answer.fallbacks), "retries": answer.retries, "error": answer.error,
                                       "latency_s": latency, "stand_in": stand_in,
                                       "correct": None if score is None else float(score["correct"])}

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
                                               "retries": 0, "error": f"the replay's {time_limit_s:g} s limit came first", "latency_s": math.nan,
                                               "stand_in": False, "correct": None})
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
    percentiles per route, the fallbacks taken, and triage accuracy per route with its interval (``quality``; a
    stand-in's route is "not measured"). ``prices_per_1m`` = the paid API's (input, output) USD per 1M
    tokens (Lab 01's snapshot); ``scale`` = conversations each simulated request stands for."""
    if len(table) == 0:
        raise InputError("the day's table is empty: no request was replayed", fix="sample a day with at least one request "
                         "(traffic.sample_day(rows, n, ...), n >= 1) and replay it before the report")
    if scale <= 0 or not math.isfinite(scale):
        raise InputError(f"scale = {scale!r}: conversations each simulated request stands for", fix="a positive number")
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
    stand_ins = set(merged.loc[merged["stand_in"].astype(bool), "route"]) if "stand_in" in merged else set()
    return {"table": merged, "split": split, "hourly": hourly, "latency": latency, "fallbacks": fallbacks,
            "quality": quality(merged, stand_ins),
            "day_hybrid_usd": float(day_hybrid), "day_all_api_usd": float(day_api),
            "paid_share": float((merged["route"] == "paid").mean()), "lost": int((~merged["outcome"].isin(["answered", "failed"])).sum())}


def api_prices(model: str) -> tuple[float, float]:
    """(input, output) USD per 1M tokens of ``model`` in Lab 01's dated price snapshot."""
    from ..tco import get_api_price

    price = get_api_price(model)
    return price.input, price.output


def monthly_bills(figures: dict, self_host_month: float | None = None, lab01_api_month: float | None = None, days: float = 30.0,
                  inputs: dict | None = None):
    """The simulated day scaled to a month (USD a month, one column). The day's requests are single messages with a
    short reply budget, smaller than Lab 01's conversation (system prompt, several turns), so the hybrid is also
    priced at Lab 01's size with Lab 01's cost model (``inputs``: ``tco.lab01_inputs()``): the day's API share of
    the bill applied to Lab 01's all-API estimate, plus self-hosting sized for the traffic the router kept local
    (``tco.hybrid_monthly``, the function the capstone memo uses too). Without ``inputs``, the local part is Lab 01's
    whole self-hosting bill (``self_host_month``)."""
    import pandas as pd

    share = figures["day_hybrid_usd"] / figures["day_all_api_usd"] if figures["day_all_api_usd"] else 0.0
    bills = {"all-API, the day's requests x 30": figures["day_all_api_usd"] * days,
             "hybrid API share, the day's requests x 30": figures["day_hybrid_usd"] * days}
    if inputs is not None:
        from ..tco import hybrid_monthly, outcome

        hybrid = hybrid_monthly(inputs, figures["paid_share"], share)
        bills["all-API at Lab 01's conversation size (Lab 01)"] = outcome(inputs)["api_monthly"]
        bills["hybrid at Lab 01's size: API share"] = hybrid["api part"]
        bills["hybrid at Lab 01's size: local hosting for the traffic kept local"] = hybrid["local part"]
        bills["hybrid at Lab 01's size: API share + local hosting"] = hybrid["total"]
    elif lab01_api_month is not None:
        bills["all-API at Lab 01's conversation size (Lab 01)"] = lab01_api_month
        bills["hybrid at Lab 01's size: API share"] = share * lab01_api_month
        if self_host_month is not None:
            bills["hybrid at Lab 01's size: API share + local hosting"] = share * lab01_api_month + self_host_month
    frame = pd.Series(bills, name="USD a month").to_frame()
    if inputs is not None:
        frame.attrs["hybrid gpus"] = hybrid["gpus"]
    return frame


def key_results(figures: dict, bill, audit, model=None, paid=None) -> tuple[dict, dict]:
    """What Lab 05 saves for the capstone (``helpers.results``): ``model`` is the served ``desk.DeskModel``, ``paid``
    the paid upstream (a stand-in or a real endpoint: its latency and quality are labelled accordingly)."""
    split = figures["table"]
    values = {"requests": int(len(split)), "share local": float((split["route"] == "local").mean()),
              "share paid": figures["paid_share"], "share failed": float((split["outcome"] == "failed").mean()),
              "lost": figures["lost"], "api cost share": figures["day_hybrid_usd"] / figures["day_all_api_usd"] if figures["day_all_api_usd"] else 0.0,
              **{f"usd per month: {name}": float(value) for name, value in bill["USD a month"].items()},
              "pii values to paid API (detected kinds)": int(audit[audit["detected by the router"].astype(bool)]["reached the paid API"].sum()),
              "pii values to paid API (undetected kinds)": int(audit[~audit["detected by the router"].astype(bool)]["reached the paid API"].sum())}
    for route in ("local", "paid"):
        if route in figures["latency"].index:
            values[f"{route} p50 latency s"] = float(figures["latency"].loc[route, "50%"])
            values[f"{route} p95 latency s"] = float(figures["latency"].loc[route, "95%"])
        row = figures["quality"].loc[route] if route in figures["quality"].index else None
        if row is not None and row["status"] == "measured":
            values.update({f"{route} accuracy {name}": float(row[column]) for name, column in (("rate", "accuracy"), ("low", "low"), ("high", "high"))})
            values[f"{route} accuracy n"] = int(row["scored"])
        values[f"{route} accuracy status"] = str(row["status"]) if row is not None else "no answers"
    values["pii values in the day"] = int(audit["values"].sum()) if "values" in audit else 0
    answered = split[split["outcome"] == "answered"]
    if len(answered):
        values["all p95 latency s"] = float(answered["latency_s"].quantile(0.95))
    measured_routes = figures["quality"][figures["quality"]["answered"] > 0]
    if len(measured_routes) and (measured_routes["status"] == "measured").all():
        from ..finetune.lora import wilson_interval

        k, n = int(measured_routes["correct"].sum()), int(measured_routes["scored"].sum())
        values.update({"all accuracy rate": k / n, "all accuracy low": wilson_interval(k, n)[0], "all accuracy high": wilson_interval(k, n)[1],
                       "all accuracy n": n})
    if model is not None:
        values["served model"] = "fine-tuned (Lab 03)" if model.tuned else "base model (Lab 03 not run)"
    if paid is not None:
        values["paid upstream"] = getattr(paid, "provenance", "stand-in")
    units = {**{f"usd per month: {name}": "USD" for name in bill.index},
             **{f"{route} p{q} latency s": "s" for route in ("local", "paid") for q in (50, 95)}, "all p95 latency s": "s"}
    return values, units


def _stand_in_router(policy, local_url: str, paid_url: str, ledger_url: str, cap: float, difficulty=None, decide=None, guard=True):
    """A copy of ``policy`` pointed at two stand-ins (fast retries), with its own ledger."""
    import dataclasses
    import os

    from .ledger import Ledger
    from .router import Router

    os.environ.setdefault("OTS_STANDIN_KEY", "the-stand-in-needs-no-key")
    local = dataclasses.replace(policy.local, base_url=local_url, timeout_s=5.0, stand_in=True)
    paid = dataclasses.replace(policy.paid, base_url=paid_url, api_key_env="OTS_STANDIN_KEY", timeout_s=5.0, stand_in=True)
    fast = dataclasses.replace(policy, local=local, paid=paid, monthly_cap_usd=cap, backoff_initial_s=0.01, backoff_max_s=0.05,
                               breaker_cooldown_s=0.5)
    return Router(fast, Ledger(ledger_url, monthly_cap_usd=cap), difficulty=difficulty, decide=decide, guard=guard)


def fire_drill(rows: list[dict], settings: DaySettings, peak_to_average: float, policy, difficulty, cap: float, seed: int = 7) -> dict:
    """The day at scale against stand-ins on both sides: ``settings.drill_requests`` at ``drill_concurrency``, the paid
    side failing 20 % of the time (500, 429 with Retry-After, dropped connections), the local side down for the
    outage hours. Returns the per-request table, the report and a one-row summary of the reliability figures."""
    import tempfile

    import pandas as pd

    from .upstream import StandInUpstream, UpstreamConfig

    day = sample_day(rows, settings.drill_requests, peak_to_average, seed=seed)
    paid = StandInUpstream(UpstreamConfig(median_latency_s=0.01, faults={"500": 0.1, "429": 0.05, "drop": 0.05}, seed=seed)).start()
    local = {"server": StandInUpstream(UpstreamConfig(median_latency_s=0.01, seed=seed + 1)).start()}
    port = local["server"].port
    folder = tempfile.mkdtemp(prefix="ots-drill-")
    try:
        router = _stand_in_router(policy, local["server"].base_url, paid.base_url, f"sqlite:///{folder}/drill.db", cap, difficulty)
        events = {settings.outage[0]: lambda: local["server"].stop(),
                  settings.outage[1]: lambda: local.update(server=StandInUpstream(UpstreamConfig(median_latency_s=0.01, seed=seed + 2), port=port).start())}
        start = time.perf_counter()
        table = replay(router, day, concurrency=settings.drill_concurrency, max_tokens=16, time_limit_s=120, events=events, progress=False)
        seconds = time.perf_counter() - start
    finally:
        paid.stop()
        local["server"].stop()
    rows_ = router.ledger.rows()
    audit = pii_audit(day, [seen["prompt"] for seen in paid.seen])
    summary = pd.DataFrame([{"requests": len(day), "concurrency": settings.drill_concurrency, "seconds": round(seconds, 1),
                             "answered": int((table["outcome"] == "answered").sum()), "failed (with a reason)": int((table["outcome"] == "failed").sum()),
                             "lost": int(len(day) - len(rows_)), "retries": int(table["retries"].sum()),
                             "fallbacks": int((table["fallbacks"] > 0).sum()),
                             "detected PII to paid": int(audit[audit["detected by the router"].astype(bool)]["reached the paid API"].sum()),
                             "budget held": bool(router.ledger.spent() <= cap + 1e-12)}])
    return {"table": table, "ledger": rows_, "audit": audit, "summary": summary}


def leak_test(decide, requests: list[Request], policy) -> dict:
    """Run ``requests`` through a router using ``decide`` with the local side down and the guard off (Lab 05's
    exercise 3): how many labelled personal-data values reached the paid stand-in, how many routine requests were
    answered by the fallback, and how many sensitive ones failed cleanly."""
    import tempfile

    from .upstream import StandInUpstream, UpstreamConfig

    folder = tempfile.mkdtemp(prefix="ots-leak-")
    with StandInUpstream(UpstreamConfig(median_latency_s=0.0, faults={"503": 1.0})) as local, \
            StandInUpstream(UpstreamConfig(median_latency_s=0.0)) as paid:
        router = _stand_in_router(policy, local.base_url, paid.base_url, f"sqlite:///{folder}/leak.db", cap=1.0,
                                  decide=decide, guard=False)
        router.policy.max_retries = 0
        answers = {r.request_id: router.handle(r.request_id, r.message, max_tokens=4) for r in requests}
    sent = "\n".join(seen["prompt"] for seen in paid.seen)
    return {"leaked": sum(v in sent for r in requests for v in r.pii_values),
            "routine_fallbacks": sum(answers[r.request_id].route == "paid" for r in requests if not r.pii_values),
            "sensitive_failed_cleanly": sum(answers[r.request_id].outcome == "failed" for r in requests if r.pii_values)}
