"""The decision memo: the learner's numbers from Labs 01-05 turned into a go / no-go recommendation.

Every figure comes from the results store (``helpers.results``) or the claims ledger (``helpers.ledger``);
where a lab was not run, the memo says which lab to run and uses the course's dated default, labelled as such.
"""
from __future__ import annotations

import base64
import datetime as dt
import html
import io
from dataclasses import dataclass
from pathlib import Path

from ..paths import quick_mode, quick_variant

# (lab, stored name) -> what the memo calls it; the default comes from the dated data files when the lab was not run
INPUTS = [
    ("01", "api model", "API model priced"),
    ("01", "api usd per month", "all-API bill a month (Lab 01's model)"),
    ("01", "self-host usd per month", "self-hosting a month (Lab 01's model)"),
    ("01", "break-even conversations per month", "break-even volume"),
    ("03", "category after rate", "ticket category accuracy after LoRA"),
    ("03", "category after low", "  its 95% interval, low"),
    ("03", "category after high", "  its 95% interval, high"),
    ("04", "measured efficiency", "measured share of the bandwidth roofline"),
    ("04", "server ttft p50 s", "local server TTFT p50 (s)"),
    ("04", "server tpot p50 s", "local server TPOT p50 (s)"),
    ("05", "share paid", "share of traffic the router sent to the paid API"),
    ("05", "api cost share", "hybrid API bill / all-API bill (same requests)"),
    ("05", "pii values to paid API (detected kinds)", "detected personal data sent to the paid API"),
    ("05", "local p50 latency s", "local end-to-end latency p50 (s)"),
]


@dataclass
class Memo:
    inputs: "object"        # DataFrame: what the memo uses, value and source
    options: "object"       # DataFrame: monthly cost per option, median and interval
    measured: "object"      # DataFrame: quality and latency
    risks: "object"         # DataFrame: claims that did not hold
    recommendation: str
    figures: dict


def inputs(store: dict | None = None):
    """Each input the memo uses: its value, and where it came from (your Lab NN run on a date and tier, or missing)."""
    import pandas as pd

    from .. import results

    store = results.load() if store is None else store
    rows = []
    for lab, name, label in INPUTS:
        entry = store.get(lab, {}).get(name)
        source = (f"your Lab {lab}, {entry.get('tier', '?')} tier, {entry.get('recorded', '?')[:10]}" if entry
                  else f"missing: run Lab {lab} to the end")
        rows.append({"input": label, "lab": lab, "value": entry["value"] if entry else None, "source": source})
    return pd.DataFrame(rows).set_index("input")


def _value(table, label, default=None):
    value = table.loc[label, "value"]
    return default if value is None or (isinstance(value, float) and value != value) else value


def options(table, samples: int = 400, seed: int = 0):
    """Monthly cost (one-offs spread over the horizon) of all-API, all self-hosted and the hybrid, with a 90 % interval
    from Lab 01's Monte Carlo uncertainties. The learner's numbers replace the defaults where stored: the API model
    (Lab 01), the measured bandwidth efficiency (Lab 04), the paid share of traffic (Lab 05)."""
    import numpy as np
    import pandas as pd

    from .. import tco

    base = tco.default_inputs()
    base["api_model"] = _value(table, "API model priced", base["api_model"])
    base["bandwidth_efficiency"] = _value(table, "measured share of the bandwidth roofline", base["bandwidth_efficiency"])
    paid_share = float(_value(table, "share of traffic the router sent to the paid API", 0.2))
    rng = np.random.default_rng(seed)
    draws = tco.default_distributions(base)
    draws.pop("bandwidth_efficiency") if _value(table, "measured share of the bandwidth roofline") is not None else None
    rows = []
    for _ in range(samples):
        drawn = {**base, **{name: draw(rng) for name, draw in draws.items()}}
        full = tco.outcome(drawn)
        local = tco.outcome({**drawn, "conversations_per_month": drawn["conversations_per_month"] * (1 - paid_share)})
        rows.append({"all-API": full["api_monthly"], "self-hosted": full["self_monthly"],
                     "hybrid": paid_share * full["api_monthly"] + local["self_monthly"]})
    frame = pd.DataFrame(rows)
    summary = frame.quantile([0.05, 0.5, 0.95]).T
    summary.columns = ["low (5%)", "median", "high (95%)"]
    summary.attrs.update(paid_share=paid_share, api_model=base["api_model"], bandwidth_efficiency=base["bandwidth_efficiency"])
    return summary, frame


def measured(table):
    """Quality and latency the learner measured (rows without a measurement say which lab measures them)."""
    import pandas as pd

    names = ["ticket category accuracy after LoRA", "  its 95% interval, low", "  its 95% interval, high", "local server TTFT p50 (s)",
             "local server TPOT p50 (s)", "local end-to-end latency p50 (s)", "detected personal data sent to the paid API"]
    return pd.DataFrame({"value": [table.loc[n, "value"] for n in names], "source": [table.loc[n, "source"] for n in names]}, index=names)


def risks(claims):
    """Claims whose verdict is not a plain "holds" (``helpers.ledger.table()``): each is a risk to the plan."""
    plain = claims["verdict"].str.startswith("holds") & ~claims["verdict"].str.startswith("holds only")
    return claims[~plain][["says", "lab", "verdict"]]


def recommend(options_summary, measured_table, risk_table) -> str:
    """The recommendation, computed: the cheapest option by median, whether its interval clears the all-API bill, and
    the conditions that would block it (personal data leaving, quality not measured)."""
    medians = options_summary["median"]
    best = medians.idxmin()
    api = options_summary.loc["all-API"]
    import pandas as pd

    leaked = measured_table.loc["detected personal data sent to the paid API", "value"]
    leaked = None if pd.isna(leaked) else leaked  # not measured (Lab 05 not run) is not a leak
    quality = measured_table.loc["ticket category accuracy after LoRA", "value"]
    quality = None if pd.isna(quality) else quality
    if best == "all-API":
        return (f"No-go for now: staying on the API is the cheapest option (median ${api['median']:,.0f} a month); "
                f"revisit when volume grows past the break-even or prices change.")
    confident = options_summary.loc[best, "high (95%)"] < api["low (5%)"]
    saving = 1 - medians[best] / api["median"]
    parts = [f"Go with the {best} option: median ${medians[best]:,.0f} a month vs ${api['median']:,.0f} all-API ({saving:.0%} less)"]
    parts.append("and its 90% interval lies entirely below the API's" if confident else
                 "but the intervals overlap: pilot it on part of the traffic before committing")
    if leaked is not None and leaked > 0:
        parts.append(f"only after fixing the router: {leaked:g} detected personal-data values reached the paid API")
    if quality is None:
        parts.append("quality has not been measured yet (run Lab 03): treat the recommendation as cost-only")
    if best == "self-hosted" and "hybrid" in medians.index:
        extra = medians["hybrid"] - medians[best]
        parts.append(f"the hybrid costs ${extra:,.0f} more a month and keeps the {options_summary.attrs.get('paid_share', 0):.0%} "
                     f"hardest requests on the paid model: choose it if the local model's quality on those is not good enough")
    if len(risk_table):
        parts.append(f"{len(risk_table)} claims did not hold as stated; they are listed as risks below")
    return "; ".join(parts) + "."


def plot_options(summary, ax=None):
    import matplotlib.pyplot as plt

    ax = ax or plt.subplots(figsize=(6, 2.8))[1]
    y = range(len(summary))
    ax.barh(list(y), summary["median"], xerr=[summary["median"] - summary["low (5%)"], summary["high (95%)"] - summary["median"]],
            capsize=4, color=["grey", "tab:blue", "tab:green"][: len(summary)])
    ax.set_yticks(list(y), summary.index)
    ax.set_xlabel("USD a month (median, 90% interval)")
    ax.set_title("the support desk's options")
    return ax


def build(claims=None, store: dict | None = None, samples: int = 400) -> Memo:
    """Everything the memo says, from the results store and the claims ledger."""
    import matplotlib.pyplot as plt

    from .. import ledger

    table = inputs(store)
    summary, _ = options(table, samples=samples)
    measured_table = measured(table)
    risk_table = risks(ledger.table() if claims is None else claims)
    fig, ax = plt.subplots(figsize=(6, 2.8))
    plot_options(summary, ax)
    fig.tight_layout()
    return Memo(table, summary, measured_table, risk_table, recommend(summary, measured_table, risk_table), {"options": fig})


def _png(fig) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    return base64.b64encode(buffer.getvalue()).decode()


def render_html(memo: Memo, path: str | Path | None = None) -> Path:
    """Write the memo as one self-contained HTML file (tables and plots inline) and return its path."""
    from .. import results

    if path is None:  # beside the results store; a quick run's memo (decision_memo.quick.html) never replaces a full one's
        path = results.results_path(quick=False).with_name("decision_memo.html")
        path = quick_variant(path) if quick_mode() else path
    path = Path(path)
    missing = memo.inputs[memo.inputs["source"].str.startswith("missing")]
    body = [f"<h1>Support desk: should we move off the proprietary API?</h1><p><em>{dt.date.today().isoformat()}, "
            f"from the learner's own lab results.</em></p>",
            f"<h2>Recommendation</h2><p><strong>{html.escape(memo.recommendation)}</strong></p>",
            "<h2>Cost per option</h2>" + memo.options.round(0).to_html(),
            f"<img alt='options' src='data:image/png;base64,{_png(memo.figures['options'])}'>",
            f"<p>Paid share of traffic {memo.options.attrs['paid_share']:.0%}, API model {html.escape(str(memo.options.attrs['api_model']))}, "
            f"bandwidth efficiency {memo.options.attrs['bandwidth_efficiency']:.2f}.</p>",
            "<h2>Quality and latency measured</h2>" + memo.measured.to_html(),
            "<h2>Risks: claims that did not hold as stated</h2>" + (memo.risks.to_html() if len(memo.risks) else "<p>none</p>"),
            "<h2>Inputs and where they came from</h2>" + memo.inputs.to_html()]
    if len(missing):
        body.insert(2, f"<p>Missing inputs (defaults used instead): {html.escape(', '.join(missing.index))}.</p>")
    page = ("<!doctype html><html><head><meta charset='utf-8'><title>Decision memo</title><style>body{font-family:sans-serif;"
            "max-width:60em;margin:2em auto}table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:.2em .5em}</style>"
            "</head><body>" + "\n".join(body) + "</body></html>")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page, encoding="utf-8")
    return path
