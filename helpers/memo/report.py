"""The decision memo: the learner's numbers from Labs 01-05 judged against the desk's four bars.

Every figure comes from the results store (``helpers.results``) or the claims ledger (``helpers.ledger``) and keeps
its provenance: the learner's own run (lab, tier, day), the course's recorded run (which GPU, which day), or a dated
published source. A missing figure says which lab measures it and is a named gap, never a pass.

The memo decides on four bars, the desk's own and dated in ``datasets/scenario.csv`` (``bar_*`` rows): minimum
triage accuracy, p95 latency, personal data off the machine, and the monthly budget. Each option (all-API,
self-hosted, hybrid) is judged on each bar with the measured figure and its interval: **pass**, **fail**, **unclear**
(the interval straddles the bar) or **not measured**. Only an option that passes all four is recommended, the
cheapest of those by median; otherwise the memo says which bar stops each option and what to measure or fix next.
Its costs come from the same functions as Labs 01 and 05 (``tco.lab01_inputs``, ``tco.hybrid_monthly``), and
:func:`reconcile` shows, step by step, why the memo's figures differ from theirs.
"""
from __future__ import annotations

import base64
import datetime as dt
import html
import io
import math
from dataclasses import dataclass, field
from pathlib import Path

from ..paths import quick_mode, quick_variant

# (lab, stored name, what the memo calls it, how to show it: usd / share / s / count / text)
INPUTS = [
    ("01", "api model", "API model priced", "text"),
    ("01", "api usd per month", "all-API bill a month (Lab 01's model)", "usd"),
    ("01", "self-host usd per month", "self-hosting a month (Lab 01's model)", "usd"),
    ("01", "break-even conversations per month", "break-even volume (conversations a month)", "count"),
    ("03", "category after rate", "triage accuracy after fine-tuning, held-out tickets", "share"),
    ("03", "category after low", "  its 95% interval, low", "share"),
    ("03", "category after high", "  its 95% interval, high", "share"),
    ("04", "measured efficiency", "share of the hardware's memory speed the model reached", "share"),
    ("04", "server ttft p50 s", "local server TTFT p50", "s"),
    ("04", "server tpot p50 s", "local server TPOT p50", "s"),
    ("05", "served model", "model Lab 05 deployed", "text"),
    ("05", "share paid", "share of requests the router sent to the paid API", "share"),
    ("05", "api cost share", "paid requests' share of the all-API bill (same requests)", "share"),
    ("05", "local accuracy rate", "triage accuracy, local route (the day's tickets)", "share"),
    ("05", "local accuracy low", "  its 95% interval, low", "share"),
    ("05", "local accuracy high", "  its 95% interval, high", "share"),
    ("05", "paid accuracy status", "triage accuracy, paid route", "text"),
    ("05", "paid accuracy rate", "  measured accuracy, paid route", "share"),
    ("05", "all accuracy rate", "triage accuracy, all routes", "share"),
    ("05", "all accuracy low", "  its 95% interval, low", "share"),
    ("05", "all accuracy high", "  its 95% interval, high", "share"),
    ("05", "local p95 latency s", "end-to-end latency p95, local route", "s"),
    ("05", "paid p95 latency s", "end-to-end latency p95, paid route", "s"),
    ("05", "all p95 latency s", "end-to-end latency p95, all routes", "s"),
    ("05", "pii values in the day", "personal-data values in the day's tickets", "count"),
    ("05", "pii values to paid API (detected kinds)", "personal data reaching the paid API: kinds the router detects", "count"),
    ("05", "pii values to paid API (undetected kinds)", "personal data reaching the paid API: kinds it cannot detect", "count"),
    ("05", "usd per month: hybrid at Lab 01's size: API share + local hosting", "hybrid a month (Lab 05, at Lab 01's size)", "usd"),
    ("05", "paid upstream", "paid upstream in Lab 05", "text"),
    ("05", "fleet spare", "spare GPUs kept so the busiest hour holds with one GPU down (Lab 05's fleet)", "count"),
    ("05", "fleet failover lost", "requests lost when a replica died (Lab 05's fleet drill)", "count"),
    ("05", "fleet rejoin s", "seconds until the killed replica served again (Lab 05's fleet drill)", "s"),
]
OPTIONS = ("all-API", "self-hosted", "hybrid")
BARS = ("accuracy", "p95 latency", "personal data off the machine", "budget")
PASS, FAIL, UNCLEAR, GAP = "pass", "fail", "unclear", "not measured"


# ---------------------------------------------------------------- formatting
def money(value) -> str:
    return "-" if _missing(value) else f"-${-value:,.0f}" if value < 0 else f"${value:,.0f}"


def percent(value) -> str:
    return "-" if _missing(value) else f"{100 * value:.0f}%"


def percent_against(value, bar: float | None) -> str:
    """A share as a whole percentage, with as many decimals as it takes never to round it onto (or across) the bar:
    84.6 % against an 85 % bar is shown as 84.6 %, not 85 %."""
    if _missing(value):
        return "-"
    if bar is None or value == bar:
        return percent(value)
    for digits in (0, 1, 2, 3):
        shown = round(100 * value, digits)
        if (shown - 100 * bar) * (value - bar) > 0:  # same side of the bar as the value itself
            return f"{shown:.{digits}f}%"
    return f"{100 * value:.4f}%"


def show(value, kind: str) -> str:
    """A figure as a reader wants it: money as money, fractions as percentages, seconds with two digits."""
    if _missing(value):
        return "-"
    if kind == "usd":
        return money(value)
    if kind == "share":
        return percent(value)
    if kind == "s":
        return f"{value:.2f} s"
    if kind == "count":
        return f"{value:,.0f}"
    return str(value)


def _missing(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


# ---------------------------------------------------------------- inputs and their provenance
def _source(lab: str, name: str, entry: dict | None, store: dict) -> str:
    if entry is None:
        if not store.get(lab):
            return f"missing: Lab {lab} measures it, and its results were not found"
        if lab == "05" and (name.startswith("paid accuracy") or name.startswith("all accuracy")):
            status = str(store[lab].get("paid accuracy status", {}).get("value", ""))
            why = ("the paid API was the course's simulated one" if "stand-in" in status else status or "the paid route answered nothing")
            return f"not measured in your Lab 05 run: {why}"
        return f"not measured in your Lab {lab} run (an older run of it, or nothing to measure)"
    mine = f"your Lab {lab}, {run_words(entry)}, {str(entry.get('recorded', '?'))[:10]}"
    if (lab, name) == ("04", "measured efficiency"):
        where = str(store.get("04", {}).get("measured efficiency source", {}).get("value", ""))
        if where.startswith("recorded"):
            return f"the course's {where} (read by your Lab 04, not measured by it)"
        if not where and entry.get("tier") == "cpu":
            return "the course's recorded GPU run (your Lab 04 ran on a CPU and read it)"
        return f"{mine} ({where})" if where else mine
    if lab == "05" and name.startswith("paid") and "latency" in name:
        upstream = str(store.get("05", {}).get("paid upstream", {}).get("value", "stand-in"))
        if not upstream.startswith("measured"):
            return f"a published figure replayed by the course's simulated API in your Lab 05 ({simulated_words(upstream)})"
    return mine


def simulated_words(provenance: str) -> str:
    """The simulated paid API's provenance without the developer's instruction that follows it."""
    return provenance.split("; set ")[0].replace("stand-in calibrated to", "calibrated to")


def model_words(key: str | None) -> str:
    """A catalog key as a reader knows the model: its published name (``smollm2-135m`` -> SmolLM2-135M-Instruct)."""
    if not key:
        return "the lab's model"
    try:
        from ..catalog import get_model

        return get_model(str(key)).hub_id.split("/")[-1]
    except Exception:  # noqa: BLE001 - a folder or an unknown key: said as it was saved
        return str(key)


def machine_words(hardware: str | None) -> str:
    """The plan's hardware line in a manager's words: "a 2-core x86_64 CPU, no GPU" or the GPU's name."""
    import re

    text = str(hardware or "")
    if text.startswith("CPU only"):
        cores = re.search(r"(\d+) cores?", text)
        arch = re.search(r"CPU only: ([^,]+),", text)
        return (f"a {cores.group(1) + '-core ' if cores else ''}{arch.group(1) + ' ' if arch else ''}CPU, no GPU").replace("  ", " ")
    return text.split(",")[0].strip() or "an unrecorded machine"


def run_words(entry: dict) -> str:
    """What one saved figure was measured on, from its entry (the model where the store recorded it)."""
    tiers = {"cpu": "a CPU", "colab": "a Colab T4 GPU", "local-gpu": "a local GPU"}
    machine = machine_words(entry.get("hardware")) if entry.get("hardware") else tiers.get(entry.get("tier"), "an unrecorded machine")
    return f"{model_words(entry['model'])} on {machine}" if entry.get("model") else machine


def inputs(store: dict | None = None):
    """Each input the memo uses: its value, how it is shown, and where it came from (your Lab NN run on a date and tier,
    the course's recorded run, a published figure, or missing)."""
    import pandas as pd

    from .. import results

    store = results.load() if store is None else store
    rows = []
    for lab, name, label, kind in INPUTS:
        entry = store.get(lab, {}).get(name)
        value = entry["value"] if entry else None
        shown = show(value, kind)
        if kind == "text" and "stand-in" in shown:  # the stored label, in the memo's words (no developer's instruction)
            shown = simulated_words(shown).replace("stand-in", "the course's simulated API")
        rows.append({"input": label, "lab": lab, "name": name, "kind": kind, "value": value, "shown": shown,
                     "source": _source(lab, name, entry, store)})
    frame = pd.DataFrame(rows).set_index("name")
    frame.attrs["store"] = store
    return frame


def _value(table, name, default=None):
    if name not in table.index:
        return default
    value = table.loc[name, "value"]
    return default if _missing(value) else value


def _entry(table, name) -> tuple[object, str]:
    return _value(table, name), table.loc[name, "source"]


# ---------------------------------------------------------------- costs
def base_inputs(table) -> dict:
    """Lab 01's inputs as the learner ran them, with the bandwidth efficiency Lab 04 found (or read) in place."""
    from .. import tco

    base = tco.lab01_inputs(table.attrs.get("store"))
    base["api_model"] = _value(table, "api model", base["api_model"])
    efficiency = _value(table, "measured efficiency")
    if efficiency is not None:
        base["bandwidth_efficiency"] = min(max(float(efficiency), 0.01), 1.0)
    spare = _value(table, "fleet spare")
    if spare is not None:  # Lab 05 sized its fleet N+1: the self-hosted and hybrid options keep that spare GPU too
        base["spare_gpus"] = int(spare)
    return base


def _shares(table) -> tuple[float, float]:
    request_share = float(_value(table, "share paid", 0.2))
    return request_share, float(_value(table, "api cost share", request_share))


def _monthly(inputs: dict, request_share: float, cost_share: float) -> dict[str, float]:
    from .. import tco

    full = tco.outcome(inputs)
    return {"all-API": full["api_monthly"], "self-hosted": full["self_monthly"],
            "hybrid": tco.hybrid_monthly(inputs, request_share, cost_share)["total"]}


def options(table, samples: int = 400, seed: int = 0):
    """Monthly cost of all-API, all self-hosted and the hybrid: the point estimate at your inputs, and the median and
    90 % interval over Lab 01's uncertainty ranges (drawn ``samples`` times). The hybrid pays the API for the share of
    the bill Lab 05's router sent there and self-hosts the rest on a fleet sized for it (``tco.hybrid_monthly``)."""
    import numpy as np
    import pandas as pd

    from .. import tco

    base = base_inputs(table)
    request_share, cost_share = _shares(table)
    draws = tco.default_distributions(base)
    if _value(table, "measured efficiency") is not None:
        draws.pop("bandwidth_efficiency")
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame([_monthly({**base, **{name: draw(rng) for name, draw in draws.items()}}, request_share, cost_share)
                          for _ in range(samples)])
    summary = frame.quantile([0.05, 0.5, 0.95]).T
    summary.columns = ["low (5%)", "median", "high (95%)"]
    summary.insert(0, "your inputs", pd.Series(_monthly(base, request_share, cost_share)))
    summary.attrs.update(paid_share=request_share, cost_share=cost_share, api_model=base["api_model"],
                         bandwidth_efficiency=base["bandwidth_efficiency"])
    return summary, frame


def _distribution_median(draw, n: int = 2001) -> float:
    import numpy as np

    rng = np.random.default_rng(0)
    return float(np.median([draw(rng) for _ in range(n)]))


# the uncertainty ranges' inputs in a reader's words (tco.default_distributions' names)
INPUT_WORDS = {"user_tokens_per_turn": "customer words per turn (tokens)", "assistant_tokens_per_turn": "reply length (tokens)",
               "turns_per_conversation": "turns per conversation", "peak_to_average": "busiest hour against the average",
               "usd_per_gpu_hour": "GPU-hour price (USD)", "utilisation_target": "GPU utilisation aimed for",
               "bandwidth_efficiency": "share of memory speed reached", "engineer_fte": "engineers running it (full-time)",
               "api_price_factor": "API price change (x today's)"}


def reconcile(table, summary):
    """Why the memo's monthly figures differ from Labs 01 and 05, step by step: the lab's own figure, the same inputs
    recomputed, the efficiency Lab 04 found, then the median over the uncertainty ranges, with the ranges that move it
    most (their middle is not Lab 01's point value: e.g. engineering time drawn from 0.25 to 1.5 people)."""
    import pandas as pd

    from .. import tco

    lab01 = tco.lab01_inputs(table.attrs.get("store"))
    base = base_inputs(table)
    request_share, cost_share = _shares(table)
    at_lab01, at_base = _monthly(lab01, request_share, cost_share), _monthly(base, request_share, cost_share)
    efficiency_only = {**base, "spare_gpus": lab01["spare_gpus"]}
    at_efficiency = _monthly(efficiency_only, request_share, cost_share)
    spare_step = (f"{base['spare_gpus']} GPU kept beyond the peak's need so the peak holds with one down, as Lab 05 sized its "
                  f"fleet; GPUs {tco.outcome(efficiency_only)['gpus']} -> {tco.outcome(base)['gpus']}")
    movers = {}
    for name, draw in tco.default_distributions(base).items():
        if name == "bandwidth_efficiency" and _value(table, "measured efficiency") is not None:
            continue
        middle = _distribution_median(draw)
        moved = _monthly({**base, name: middle}, request_share, cost_share)
        movers[name] = (middle, moved)
    efficiency_step = (f"share of memory speed reached {percent(base['bandwidth_efficiency'])} ({table.loc['measured efficiency', 'source']}) "
                       f"instead of Lab 01's {percent(lab01['bandwidth_efficiency'])}; GPUs {tco.outcome(lab01)['gpus']} -> "
                       f"{tco.outcome(efficiency_only)['gpus']}")
    lab_figure = {"all-API": ("Lab 01", _value(table, "api usd per month")), "self-hosted": ("Lab 01", _value(table, "self-host usd per month")),
                  "hybrid": ("Lab 05", _value(table, "usd per month: hybrid at Lab 01's size: API share + local hosting"))}
    rows = []
    for option in OPTIONS:
        lab, figure = lab_figure[option]
        rows.append({"option": option, "step": f"{lab}'s figure (your run)", "USD a month": figure,
                     "why": "missing: that lab's result was not found" if figure is None else ""})
        recomputed = at_lab01[option]
        why = (f"Lab 01's inputs with Lab 05's shares (paid {percent(request_share)} of requests, {percent(cost_share)} of the bill)"
               if option == "hybrid" else "Lab 01's inputs")
        if figure is not None and abs(recomputed - figure) > 0.005 * max(abs(figure), 1.0):
            why += ": differs from the lab's figure, so the lab ran with other inputs (its calculator or an older run)"
        rows.append({"option": option, "step": "recomputed by the memo", "USD a month": recomputed, "why": why})
        rows.append({"option": option, "step": "with Lab 04's efficiency", "USD a month": at_efficiency[option],
                     "why": efficiency_step if option != "all-API" else "the API bill does not depend on it"})
        if base["spare_gpus"] != lab01["spare_gpus"]:
            rows.append({"option": option, "step": "with Lab 05's spare GPU", "USD a month": at_base[option],
                         "why": spare_step if option != "all-API" else "the API bill does not depend on it"})
        top = sorted(movers.items(), key=lambda item: -abs(item[1][1][option] - at_base[option]))[:2]
        why = "; ".join(f"{INPUT_WORDS.get(name, name.replace('_', ' '))} at its range's middle {middle:,.2f} moves it by "
                        f"{money(moved[option] - at_base[option])}"
                        for name, (middle, moved) in top if abs(moved[option] - at_base[option]) >= 1)
        rows.append({"option": option, "step": "median over the uncertainty ranges", "USD a month": summary.loc[option, "median"],
                     "why": why or "the ranges are centred on your inputs"})
    return pd.DataFrame(rows).set_index(["option", "step"])


# ---------------------------------------------------------------- the desk's bars
def bars():
    """The desk's four bars (``datasets/scenario.csv``, ``bar_*`` rows): value, unit, source, date and why."""
    import pandas as pd

    from ..data import load_rows

    rows = {r["name"]: r for r in load_rows("scenario.csv", numeric=["value"]) if str(r["name"]).startswith("bar_")}
    names = {"accuracy": "bar_min_accuracy", "p95 latency": "bar_p95_latency_s", "personal data off the machine": "bar_pii_off_machine",
             "budget": "bar_budget_usd_per_month"}
    missing = [row for row in names.values() if row not in rows]
    if missing:
        from ..errors import DataError

        raise DataError(f"datasets/scenario.csv has no {', '.join(missing)} row", fix="restore the desk's bars (bar_* rows) in the scenario file")
    frame = pd.DataFrame([{"bar": bar, "value": float(rows[row]["value"]), "unit": rows[row]["unit"], "source": rows[row]["source"],
                           "date": str(rows[row]["date"]), "why": rows[row].get("notes", "")} for bar, row in names.items()]).set_index("bar")
    frame["shown"] = [(f"at least {percent(v)}" if bar == "accuracy" else f"at most {v:.1f} s" if bar == "p95 latency"
                       else f"{v:,.0f} values" if bar == "personal data off the machine" else f"at most {money(v)} a month")
                      for bar, v in frame["value"].items()]
    return frame


def _verdict_interval(value, low, high, bar: float, higher_is_better: bool) -> str:
    if _missing(value):
        return GAP
    low = value if _missing(low) else low
    high = value if _missing(high) else high
    if higher_is_better:
        return PASS if low >= bar else FAIL if high < bar else UNCLEAR
    return PASS if high <= bar else FAIL if low > bar else UNCLEAR


def measured_and_priced(table) -> dict:
    """What the desk's quality and latency were measured on (the model Lab 05 served, else Lab 03's, and the machine)
    and what the costs price (Lab 01's self-hosted model on its GPU), in words, and whether they are the same."""
    store = table.attrs.get("store", {})
    entry = next((store.get(lab, {}).get(name) for lab, name in (("05", "local p95 latency s"), ("05", "local accuracy rate"),
                                                                  ("03", "category after rate")) if store.get(lab, {}).get(name)), None)
    key = (entry or {}).get("model") or ("smollm2-135m" if (entry or {}).get("tier") == "cpu" else None)
    tuned = str(_value(table, "served model", "")).startswith("fine-tuned") or (
        _value(table, "served model") is None and _value(table, "category after rate") is not None)
    base = base_inputs(table)
    hardware = str((entry or {}).get("hardware", ""))
    same = key == base["open_model"] and base["gpu"].lower() in hardware.lower()
    measured = (f"{model_words(key)}{' fine-tuned on the desk' + chr(39) + 's tickets' if tuned else ''} on "
                f"{machine_words(hardware) if hardware else 'the lab' + chr(39) + 's machine'}") if entry else None
    return {"measured": measured, "priced": f"{model_words(base['open_model'])} on {base['gpu']} GPUs", "same": same,
            "api model": base["api_model"]}


def evidence(table, summary, bar_table=None):
    """Each option's figure for each bar, with its interval, the number of tickets behind a rate, and its source, which
    says what the figure was measured on and when that is not the deployment priced (rows: option x bar)."""
    import pandas as pd

    store = table.attrs.get("store", {})
    served_tuned = str(_value(table, "served model", "")).startswith("fine-tuned")
    setup = measured_and_priced(table)
    not_priced = ("" if setup["same"] or not setup["measured"] else
                  f"; measured on {setup['measured']}, not the deployment priced ({setup['priced']}): measure that model on its GPU")
    rows = []

    def add(option, bar, value, low=None, high=None, shown=None, source="", n=None):
        if value is not None and option != "all-API" and bar in ("accuracy", "p95 latency"):
            source += not_priced
        rows.append({"option": option, "bar": bar, "value": value, "low": low, "high": high, "shown": shown, "source": source, "n": n})

    # accuracy: the deployed model on the desk's traffic (Lab 05), else the tuned model on held-out tickets (Lab 03)
    def n_of(lab, name):
        entry = store.get(lab, {}).get(name)
        return None if entry is None else entry.get("value")

    # both measure the same tuned model when Lab 05 served it: the one on more tickets decides (Lab 05's local route sees
    # only the day's tickets the router kept; Lab 03's held-out rows are every kind of ticket, as self-hosting gets them)
    deployed_n, held_out_n = n_of("05", "local accuracy n"), n_of("03", "eval rows")
    held_out = _value(table, "category after rate") is not None
    if served_tuned and _value(table, "local accuracy rate") is not None and not (
            held_out and held_out_n is not None and deployed_n is not None and held_out_n > deployed_n):
        local = tuple(_value(table, f"local accuracy {k}") for k in ("rate", "low", "high")), table.loc["local accuracy rate", "source"]
        local_n = deployed_n
    elif served_tuned and held_out:
        local = tuple(_value(table, f"category after {k}") for k in ("rate", "low", "high")), table.loc["category after rate", "source"] + \
            (f" ({held_out_n:.0f} held-out tickets of every kind; Lab 05 served this model and measured it on {deployed_n:.0f} tickets"
             f" of its local route: the larger sample decides)" if deployed_n is not None else
             " (held-out tickets of every kind; Lab 05 served this model but did not measure its accuracy)")
        local_n = held_out_n
    elif held_out:
        local = tuple(_value(table, f"category after {k}") for k in ("rate", "low", "high")), table.loc["category after rate", "source"] + \
            " (held-out tickets; Lab 05 did not deploy the tuned model)"
        local_n = n_of("03", "eval rows")
    else:
        local, local_n = ((None, None, None), "not measured yet (Lab 03 measures it, Lab 05 deployed)"), None
    add("self-hosted", "accuracy", *local[0], source=local[1], n=local_n)
    paid_status = _value(table, "paid accuracy status")
    if _value(table, "paid accuracy rate") is not None:
        paid = tuple(_value(table, f"paid accuracy {k}") for k in ("rate", "low", "high"))
        add("all-API", "accuracy", *paid, source=table.loc["paid accuracy rate", "source"], n=n_of("05", "paid accuracy n"))
    else:
        why = ("Lab 05's paid API was the course's simulated one, which has no answers of its own"
               if paid_status in (None, "not measured (stand-in)") else str(paid_status))
        add("all-API", "accuracy", None, source=f"not measured: {why}; measure the real API on the same tickets")
    if _value(table, "all accuracy rate") is not None:
        add("hybrid", "accuracy", *(_value(table, f"all accuracy {k}") for k in ("rate", "low", "high")),
            source=table.loc["all accuracy rate", "source"], n=n_of("05", "all accuracy n"))
    else:
        add("hybrid", "accuracy", None, source="not measured: its paid share was answered by the course's simulated API"
            if local[0][0] is not None else "not measured yet (Labs 03 and 05 measure it)")
    # p95 latency, end to end, per route (Lab 05)
    upstream = str(_value(table, "paid upstream", "stand-in"))
    calibrated = upstream.split("calibrated to ")[1].split("'s published")[0] if "calibrated to " in upstream else None
    for option, name in (("self-hosted", "local p95 latency s"), ("all-API", "paid p95 latency s"), ("hybrid", "all p95 latency s")):
        value, source = _entry(table, name)
        if option == "hybrid" and value is not None and not upstream.startswith("measured"):
            source += "; its paid requests timed with a published latency replayed by the course's simulated API"
        if option == "all-API" and value is not None and calibrated and calibrated != setup["api model"]:
            source += (f"; that latency is published for {calibrated}, while the memo prices {setup['api model']}: "
                       "measure the real API on the same tickets")
        add(option, "p95 latency", value, source=source if value is not None else "not measured yet (Lab 05 measures it)")
    # personal data off the machine: counted per labelled value in Lab 05's audit
    in_day = _value(table, "pii values in the day")
    detected, undetected = _value(table, "pii values to paid API (detected kinds)"), _value(table, "pii values to paid API (undetected kinds)")
    audit_source = table.loc["pii values to paid API (detected kinds)", "source"]
    add("self-hosted", "personal data off the machine", 0, shown="0 (every request served on the machine)",
        source="by construction: nothing is sent to a third party")
    add("all-API", "personal data off the machine", in_day, shown=None if in_day is None else f"{in_day:,.0f} (every labelled value in the day)",
        source=("a count, not a measurement: the personal-data values labelled in the dataset's tickets of Lab 05's day, all of "
                f"which the API would receive ({table.loc['pii values in the day', 'source']})")
        if in_day is not None else "not counted yet (Lab 05 counts it)")
    if detected is None and undetected is None:
        add("hybrid", "personal data off the machine", None, source="not measured yet (Lab 05 measures it)")
    else:
        leaked = (detected or 0) + (undetected or 0)
        add("hybrid", "personal data off the machine", leaked,
            shown=f"{leaked:,.0f} ({detected or 0:,.0f} of kinds the router detects, {undetected or 0:,.0f} of kinds it cannot)", source=audit_source)
    # budget: the cost interval
    for option in OPTIONS:
        row = summary.loc[option]
        add(option, "budget", row["median"], row["low (5%)"], row["high (95%)"],
            shown=f"{money(row['median'])} ({money(row['low (5%)'])}-{money(row['high (95%)'])})",
            source="Lab 01's cost model with your inputs (Labs 01, 04, 05) and its uncertainty ranges")
    frame = pd.DataFrame(rows).set_index(["option", "bar"])
    accuracy_bar = float(bar_table.loc["accuracy", "value"]) if bar_table is not None else None
    for key, row in frame.iterrows():
        if row["shown"] is None or _missing(row["shown"]):
            kind = "share" if key[1] == "accuracy" else "s" if key[1] == "p95 latency" else "count"
            text = show(row["value"], kind)
            if key[1] == "accuracy" and not _missing(row["value"]):
                text = percent_against(row["value"], accuracy_bar)
                detail = [f"n={row['n']:,.0f}"] if not _missing(row["n"]) else []
                if not _missing(row["low"]):
                    detail.append(f"{percent_against(row['low'], accuracy_bar)}-{percent_against(row['high'], accuracy_bar)}")
                text += f" ({'; '.join(detail)})" if detail else ""
            frame.loc[key, "shown"] = text
    frame.attrs["store"] = store
    return frame


def judge(table, summary, bar_table=None):
    """Every option against every bar: the figure, the bar, the verdict (pass / fail / unclear / not measured), the source."""
    bar_table = bars() if bar_table is None else bar_table
    frame = evidence(table, summary, bar_table)
    verdicts = []
    for (option, bar), row in frame.iterrows():
        limit = bar_table.loc[bar, "value"]
        if bar == "accuracy":
            verdicts.append(_verdict_interval(row["value"], row["low"], row["high"], limit, higher_is_better=True))
        elif bar == "budget":
            verdicts.append(_verdict_interval(row["value"], row["low"], row["high"], limit, higher_is_better=False))
        else:
            verdicts.append(_verdict_interval(row["value"], None, None, limit, higher_is_better=False))
    frame["bar shown"] = [bar_table.loc[bar, "shown"] for _, bar in frame.index]
    frame["verdict"] = verdicts
    return frame


def verdict_grid(judgement):
    """Options as rows, bars as columns, each cell the verdict (what the memo's first table shows)."""
    return judgement["verdict"].unstack("bar").reindex(index=list(OPTIONS), columns=list(BARS))


# ---------------------------------------------------------------- claims: risks and tailwinds
def _outcome(verdict: str) -> str:
    text = verdict.strip().lower()
    if text.startswith("not tested"):
        return "untested"
    if text.startswith("does not hold"):
        return "fails"
    if text.startswith(("holds only", "holds in part")):
        return "conditional"
    return "holds" if text.startswith("holds") else "conditional"


def bearing(claim: str, verdict: str, stance: str = "for") -> str:
    """What a verdict means for the plan to leave the API: ``tailwind`` (evidence for it), ``risk`` (against it, or a
    condition the plan must meet), ``context``, or ``untested`` (a named gap). A verdict saying reality is better than the claim (the saving is even
    larger; the claim undersells it) is a tailwind whatever its wording."""
    text = verdict.lower()
    if _outcome(verdict) == "untested":
        return "untested"
    if stance == "context":
        return "context" if _outcome(verdict) == "holds" else "risk"
    better = any(marker in text for marker in ("even larger", "undersells", "even more"))
    outcome = _outcome(verdict)
    if stance == "against":
        return "risk" if outcome == "holds" else "tailwind" if outcome == "fails" else "risk"
    if better:
        return "tailwind"
    return "tailwind" if outcome == "holds" else "risk"


def claims_split(claims):
    """The claims ledger (``helpers.ledger.table()``) split into risks (against the plan, or conditions it must meet),
    tailwinds (for it), context, and the claims not tested yet."""
    from .. import ledger

    seeds = ledger.seed_claims()
    frame = claims.copy()
    frame["bearing"] = [bearing(claim, verdict, seeds.get(claim, {}).get("stance") or "for") for claim, verdict in frame["verdict"].items()]
    columns = [c for c in ("says", "lab", "verdict") if c in frame.columns]
    return {kind: frame[frame["bearing"] == kind][columns] for kind in ("risk", "tailwind", "context", "untested")}


def risks(claims):
    """The claims that work against the plan (see :func:`claims_split`)."""
    return claims_split(claims)["risk"]


# ---------------------------------------------------------------- the recommendation
POLICY_BAR = "personal data off the machine"


def setup_sentence(setup: dict | None) -> str | None:
    """One sentence on what the quality and latency verdicts were measured on, and whether that is what is priced."""
    if not setup or not setup.get("measured"):
        return None
    if setup["same"]:
        return f"Accuracy and latency were measured on {setup['measured']}, the deployment the costs price."
    return (f"Accuracy and latency were measured on {setup['measured']}, while the costs price {setup['priced']}: those "
            "verdicts describe the model measured, not the one priced.")


def policy_sentences(judgement) -> list[str]:
    """The personal-data bar is the desk's policy, not a measurement: the verdict with it and without it."""
    grid = verdict_grid(judgement)
    others = [bar for bar in BARS if bar != POLICY_BAR]
    passing = [o for o in OPTIONS if (grid.loc[o, others] == PASS).all()]
    stopped = [o for o in OPTIONS if grid.loc[o, POLICY_BAR] != PASS]
    said = ("The personal-data bar (no personal data to a third party) is a policy choice, not a measurement: under a "
            "data-processing agreement the desk could let the API provider handle it.")
    if not stopped:
        return [said + " Every option meets it here, so the choice does not change the verdict."]
    if passing:
        names = ", ".join(passing)
        return [said + f" Without that bar, {names} would pass the other three bars."]
    return [said + " Without that bar, no option passes the other three bars either, so the verdict stands either way."]


def next_steps(table, judgement, setup: dict | None = None) -> list[str]:
    """What the desk should measure before signing, computed from what this memo could not measure or measured on
    something else than what it prices."""
    steps = []
    if setup and setup.get("measured") and not setup["same"]:
        steps.append(f"Measure the candidate, {setup['priced']}, on the desk's own tickets: accuracy and p95 latency "
                     f"here come from {setup['measured']}.")
    if not str(_value(table, "paid upstream", "")).startswith("measured"):
        steps.append(f"Send the same tickets to the real API ({_value(table, 'api model', 'the API model priced')}) and measure "
                     "its accuracy and latency; this memo used published latency figures and no API answers.")
    steps.append("Price from the desk's actual API invoice and a GPU quote, not list prices (the costs here use dated list "
                 "prices and rental rates).")
    steps.append("Cost the migration itself (integration, testing, running both side by side for a while): the model counts "
                 "a one-off set-up and data-preparation sum only.")
    grid = verdict_grid(judgement)
    gaps = sorted({bar for option in OPTIONS for bar in BARS if grid.loc[option, bar] == GAP})
    if gaps:
        steps.append(f"Fill the gaps this memo names as not measured: {', '.join(gaps)}.")
    return steps


def recommend(judgement, summary, split: dict | None = None, setup: dict | None = None) -> list[str]:
    """The recommendation in short sentences, computed from the verdicts: only an option that passes every bar is
    recommended (the cheapest of those by median); otherwise what stops each option, and the next step. It says what
    the quality and latency were measured on, and reads the personal-data bar as the policy it is, both ways."""
    grid = verdict_grid(judgement)
    split = split or {}
    medians = summary["median"]
    api = summary.loc["all-API"]
    passing = [o for o in OPTIONS if (grid.loc[o] == PASS).all()]
    sentences = []

    def why_not(option: str) -> str:
        parts = []
        for bar in BARS:
            verdict = grid.loc[option, bar]
            if verdict == PASS:
                continue
            row = judgement.loc[(option, bar)]
            if verdict == GAP:
                parts.append(f"{bar} not measured")
            else:
                parts.append(f"{bar} {row['shown']} {'fails' if verdict == FAIL else 'is unclear against'} the bar ({row['bar shown']})")
        return "; ".join(parts)

    if passing:
        best = min(passing, key=lambda o: medians[o])
        sentences.append(f"Go with the {best} option.")
        sentences.append("It passes all four of the desk's bars.")
        if best != "all-API":
            saving = 1 - medians[best] / api["median"]
            sentences.append(f"Median cost {money(medians[best])} a month, {percent(saving)} less than all-API ({money(api['median'])}).")
            sentences.append("Its 90% cost interval lies entirely below the API's." if summary.loc[best, "high (95%)"] < api["low (5%)"]
                             else "The cost intervals overlap: pilot it on part of the traffic first.")
        others = [o for o in OPTIONS if o not in passing]
        for option in others:
            sentences.append(f"Not {option}: {why_not(option)}.")
    else:
        gaps_only = [o for o in OPTIONS if FAIL not in set(grid.loc[o]) and UNCLEAR not in set(grid.loc[o])]
        sentences.append("No option passes all four of the desk's bars yet: do not decide on cost alone.")
        for option in OPTIONS:
            sentences.append(f"{option[0].upper() + option[1:]}: {why_not(option)}.")
        if gaps_only:
            best = min(gaps_only, key=lambda o: medians[o])
            sentences.append(f"Next step: measure what is missing for the {best} option; it fails no bar it was measured on.")
        else:
            sentences.append("Next step: fix what fails (a stronger or better-tuned model, a faster server, a router that keeps "
                             "every kind of personal data local) and measure again.")
    measured = setup_sentence(setup)
    if measured:
        sentences.insert(1, measured)
    sentences += policy_sentences(judgement)
    if len(split.get("risk", [])):
        sentences.append(f"{len(split['risk'])} claims work against the plan or hold only under a condition: see Risks.")
    if len(split.get("tailwind", [])):
        sentences.append(f"{len(split['tailwind'])} claims support it: see Tailwinds.")
    if len(split.get("untested", [])):
        sentences.append(f"{len(split['untested'])} claims are not tested yet (run their labs): "
                         f"{', '.join(split['untested'].index)}.")
    return sentences


def plot_options(summary, bar_table=None, ax=None):
    import matplotlib.pyplot as plt

    ax = ax or plt.subplots(figsize=(6, 2.8))[1]
    y = list(range(len(summary)))
    ax.barh(y, summary["median"], xerr=[summary["median"] - summary["low (5%)"], summary["high (95%)"] - summary["median"]],
            capsize=4, color=["grey", "tab:blue", "tab:green"][: len(summary)])
    if bar_table is not None:
        ax.axvline(bar_table.loc["budget", "value"], color="red", linestyle="--", label="the desk's budget")
        ax.legend(loc="lower right", fontsize=8)
    ax.set_yticks(y, summary.index)
    ax.set_xlabel("USD a month (median, 90% interval)")
    ax.xaxis.set_major_formatter(plt.FuncFormatter(lambda v, _: f"${v / 1000:,.0f}k"))
    ax.set_title("the support desk's options (Lab 01's model, your inputs)")
    return ax


@dataclass
class Memo:
    inputs: "object"        # DataFrame: what the memo uses, value, shown, source
    options: "object"       # DataFrame: monthly cost per option: your inputs, median and interval
    bars: "object"          # DataFrame: the desk's four bars, dated and explained
    judgement: "object"     # DataFrame: every option against every bar
    reconcile: "object"     # DataFrame: why the memo's figures differ from Labs 01 and 05
    risks: "object"         # DataFrame: claims against the plan, or conditions it must meet
    tailwinds: "object"     # DataFrame: claims for it
    sentences: list[str]
    figures: dict = field(default_factory=dict)
    next_steps: list[str] = field(default_factory=list)  # what the desk should measure before signing

    @property
    def recommendation(self) -> str:
        return " ".join(self.sentences)


def build(claims=None, store: dict | None = None, samples: int = 400) -> Memo:
    """Everything the memo says, from the results store and the claims ledger."""
    import matplotlib.pyplot as plt

    from .. import ledger

    table = inputs(store)
    summary, _ = options(table, samples=samples)
    bar_table = bars()
    judgement = judge(table, summary, bar_table)
    setup = measured_and_priced(table)
    split = claims_split(ledger.table() if claims is None else claims)
    fig, ax = plt.subplots(figsize=(6, 2.8))
    plot_options(summary, bar_table, ax)
    fig.tight_layout()
    plt.close(fig)
    return Memo(table, summary, bar_table, judgement, reconcile(table, summary), split["risk"], split["tailwind"],
                recommend(judgement, summary, split, setup), {"options": fig}, next_steps(table, judgement, setup))


def _png(fig) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    return base64.b64encode(buffer.getvalue()).decode()


def memo_path() -> Path:
    """Where the memo is written: the folder the notebook runs in (JupyterLab's file browser shows it next to the
    notebook); a quick run's memo (decision_memo.quick.html) never replaces a full one's."""
    path = Path.cwd() / "decision_memo.html"
    return quick_variant(path) if quick_mode() else path


def _money_table(frame, columns) -> str:
    shown = frame.copy()
    for column in columns:
        shown[column] = shown[column].map(money)
    return shown.to_html()


def render_html(memo: Memo, path: str | Path | None = None) -> Path:
    """Write the memo as one self-contained HTML file (tables and plots inline, no cell cut short) and return its path."""
    import pandas as pd

    with pd.option_context("display.max_colwidth", None):
        return _render_html(memo, path)


def _render_html(memo: Memo, path: str | Path | None = None) -> Path:
    path = Path(path) if path is not None else memo_path()
    missing = memo.inputs[memo.inputs["source"].str.startswith("missing")]
    grid = verdict_grid(memo.judgement)
    detail = memo.judgement[["shown", "bar shown", "verdict", "source"]].rename(columns={"shown": "figure", "bar shown": "bar"})
    body = [f"<h1>Support desk: should we move off the proprietary API?</h1><p><em>{dt.date.today().isoformat()}, "
            f"from the learner's own lab results; every figure names its source.</em></p>",
            "<h2>Recommendation</h2>" + "".join(f"<p>{html.escape(s)}</p>" for s in memo.sentences),
            "<h2>What to measure before signing</h2><ul>" + "".join(f"<li>{html.escape(step)}</li>" for step in memo.next_steps) + "</ul>",
            "<h2>The desk's bars</h2>" + memo.bars[["shown", "source", "date", "why"]].rename(columns={"shown": "bar"}).to_html(),
            "<h2>Every option against every bar</h2>" + grid.to_html() + detail.to_html(),
            "<h2>Cost per option</h2>" + _money_table(memo.options, list(memo.options.columns)),
            f"<img alt='options' src='data:image/png;base64,{_png(memo.figures['options'])}'>" if "options" in memo.figures else "",
            f"<p>Paid share of requests {percent(memo.options.attrs['paid_share'])} ({percent(memo.options.attrs['cost_share'])} of the "
            f"bill), API model {html.escape(str(memo.options.attrs['api_model']))}, share of the GPU's memory speed the model "
            f"reaches {percent(memo.options.attrs['bandwidth_efficiency'])}.</p>",
            "<h2>Why these figures differ from Labs 01 and 05</h2>" + _money_table(memo.reconcile, ["USD a month"]),
            "<h2>Risks: claims against the plan, or conditions it must meet</h2>" + (memo.risks.to_html() if len(memo.risks) else "<p>none</p>"),
            "<h2>Tailwinds: claims that support it</h2>" + (memo.tailwinds.to_html() if len(memo.tailwinds) else "<p>none</p>"),
            "<h2>Inputs and where they came from</h2>" + memo.inputs[["input", "shown", "source"]].to_html(index=False)]
    if len(missing):
        body.insert(2, f"<p>Missing inputs (named gaps): {html.escape(', '.join(missing['input'].str.strip()))}.</p>")
    page = ("<!doctype html><html><head><meta charset='utf-8'><title>Decision memo</title><style>body{font-family:sans-serif;"
            "max-width:60em;margin:2em auto}table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:.2em .5em}</style>"
            "</head><body>" + "\n".join(body) + "</body></html>")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page, encoding="utf-8")
    return path
