"""Lab 05's tests of the hybrid-deployment claims with the simulated day's measurements.

- **C15** "local deployment removes API latency and keeps data on-premises": the latency half compares the
  local model's measured end-to-end latency (p50 and p95, this machine) with the paid stand-in calibrated to
  the API's *published* latency (``datasets/deploy/api_latency.csv``, dated and sourced); the data half is the
  PII audit (labelled values found in what the paid side received), per kind, including the kinds the
  router cannot detect.
- **C16** "a hybrid of open models for volume and APIs for special cases captures the benefits of both": the
  cost half is the day's bill (hybrid vs all-API, same requests, same token counts, Lab 01's prices); the
  quality half is what the router can show offline: how many of the hard requests it sent to the stronger
  model (recall of the difficulty score on the day's labelled multi-issue requests, with an interval).
"""
from __future__ import annotations

from ..finetune import wilson_interval
from .upstream import published_latency


def check_c15(latency, audit, model: str = "gpt-4o-mini", reply_tokens: int = 32) -> dict:
    """``latency`` = ``traffic.report(...)["latency"]`` (rows local / paid); ``audit`` = ``traffic.pii_audit(...)``."""
    published = published_latency(model)
    api_s = published["ttft_s"]["value"] + reply_tokens / published["output_tokens_per_s"]["value"]
    local = latency.loc["local"] if "local" in latency.index else None
    detected = audit[audit["detected by the router"].astype(bool)]
    undetected = audit[~audit["detected by the router"].astype(bool)]
    leaked_detected = int(detected["reached the paid API"].sum())
    leaked_other = int(undetected["reached the paid API"].sum())
    parts = []
    if local is None:
        parts.append("latency: not measured (no request was answered locally)")
        faster = None
    else:
        faster = local["50%"] < api_s
        parts.append(f"latency: local p50 {local['50%']:.2f} s, p95 {local['95%']:.2f} s on this machine vs the API's published "
                     f"{published['ttft_s']['value']:g} s to the first token + {reply_tokens} tokens at "
                     f"{published['output_tokens_per_s']['value']:g} tokens/s = {api_s:.2f} s "
                     f"({published['ttft_s']['source']}, {published['ttft_s']['date']}; {published['output_tokens_per_s']['source']}, "
                     f"{published['output_tokens_per_s']['date']})")
    parts.append(f"data: {leaked_detected} of {int(detected['values'].sum())} labelled values of the detected kinds "
                 f"({', '.join(detected.index)}) reached the paid API; of the kinds the router cannot detect "
                 f"({', '.join(undetected.index) or 'none'}), {leaked_other} of {int(undetected['values'].sum())} did")
    if leaked_detected:
        verdict = "does not hold here: detected personal data reached the paid API (a router bug)"
    elif faster is None:
        verdict = "holds for data the router detects; latency not measured"
    else:
        latency_part = "removes the API's latency" if faster else "does not remove latency on this hardware (the local model is slower than the API)"
        data_part = ("keeps every labelled value on the machine" if leaked_other == 0 else
                     "keeps only what the detector finds on the machine: undetected kinds (names, addresses) still left")
        verdict = f"{'holds' if faster and leaked_other == 0 else 'holds only in part'}: {latency_part}; {data_part}"
    return {"verdict": verdict, "evidence": "; ".join(parts), "api_latency_s": api_s, "faster": faster}


def check_c16(figures: dict, table, bill=None) -> dict:
    """``figures`` = ``traffic.report(...)``; ``table`` its per-request table (difficulty labels and routes); ``bill`` =
    ``traffic.monthly_bills(...)``: where it has the hybrid with hosting at Lab 01's size, that total is compared."""
    hybrid, api = figures["day_hybrid_usd"], figures["day_all_api_usd"]
    hard = table[table["difficulty"] == "multi_issue"]
    escalated = int((hard["route"] == "paid").sum())
    low, high = wilson_interval(escalated, len(hard)) if len(hard) else (float("nan"), float("nan"))
    share = hybrid / api if api else float("nan")
    cost = f"the hybrid day's API bill ${hybrid:,.0f} vs ${api:,.0f} all-API for the same requests and token counts ({share:.0%})"
    with_hosting = "hybrid at Lab 01's size: API share + local hosting"
    if bill is not None and with_hosting in bill.index:
        total, lab01 = bill.loc[with_hosting, "USD a month"], bill.loc["all-API at Lab 01's conversation size (Lab 01)", "USD a month"]
        share = total / lab01
        cost += f"; at Lab 01's conversation size, hybrid with the local model's hosting ${total:,.0f} vs all-API ${lab01:,.0f} a month ({share:.0%})"
    evidence = (f"cost: {cost}; quality: {escalated} of {len(hard)} "
                f"hard (multi-issue) requests went to the paid model ({escalated / max(1, len(hard)):.0%}, 95% interval "
                f"[{low:.0%}, {high:.0%}]); the paid model's own quality on them is not measured offline")
    if api and share < 0.5 and len(hard) and low >= 0.5:
        verdict = "holds on this day: most of the bill saved while the hard requests still reach the stronger model"
    elif api and share < 0.5:
        verdict = "holds only in part: the bill falls, but too few hard requests reach the stronger model to claim its quality"
    else:
        verdict = "does not hold on this day: the hybrid saves less than half of the bill"
    return {"verdict": verdict, "evidence": evidence, "api_share": share, "escalated": (escalated, len(hard))}
