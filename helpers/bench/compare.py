"""Lab 04's tables and plots: engines side by side at batch 1, the roofline, $ per 1M tokens, and the
way back to Lab 01's cost model with measured numbers instead of assumptions."""
from __future__ import annotations

import math
from dataclasses import dataclass

from ..data import load_rows
from ..errors import InputError
from .metrics import percentile, roofline_tokens_per_s, summarize, usd_per_million_tokens


@dataclass
class BenchSettings:
    """How much Lab 04 measures on this plan (the tier decides; quick mode shrinks it for CI)."""

    max_tokens: int
    repeats: int
    concurrencies: list[int]
    requests_per_level: int
    batches: list[int]
    quality_rows: int
    compile: bool
    peer_rows: int = 0  # rows lm_eval scores in the cross-check (0: the peer cross-checks are skipped, as in quick mode)
    # concurrency levels GuideLLM re-measures: on a CPU only 1, because `transformers serve` answers one request at a
    # time there and above 1 the figures depend on when each harness's requests arrive (the two schedule differently)
    peer_levels: tuple[int, ...] = ()
    # how many times both harnesses measure before a metric counts as a disagreement: on a shared CPU one noisy run
    # is not one (each metric keeps its closest repetition)
    peer_attempts: int = 0
    # the kit's lean decode loop (4- or 8-bit weights by measurement) beside the other engines (a CPU engine: helpers.bench.lean)
    lean: bool = False
    # the bytes ladder (fp32 -> int8 -> 4-bit lean loops, llama.cpp where installed): tokens each decodes per round and
    # desk prompts each is compared with the fp32 model on (0: skipped, as off the CPU tier and in quick mode)
    ladder_tokens: int = 0
    ladder_prompts: int = 0


def bench_settings(plan) -> BenchSettings:
    """Sizes from the plan: the sweeps go up to ``plan.batch`` (``OTS_PLAN="batch=..."`` changes them)."""
    powers = [b for b in (1, 2, 4, 8, 16, 32, 64) if b <= max(1, plan.batch)]
    if plan.quick:
        # CI's run of the student copy: each cell's code path at the smallest sizes (the lean loop, built and checked in
        # tests/test_bench.py, and the peer cross-checks run in the solution run only)
        return BenchSettings(max_tokens=8, repeats=1, concurrencies=powers[:2], requests_per_level=2, batches=powers[:2],
                             quality_rows=2, compile=False, peer_rows=0, lean=False)
    if plan.device == "cpu":
        lean = plan.precision in ("fp32", "bf16", "fp16")  # the lean loop reads float weights
        return BenchSettings(max_tokens=16, repeats=3, concurrencies=powers[:3], requests_per_level=4, batches=powers[:4],
                             quality_rows=12, compile=False, peer_rows=4, peer_levels=(1,), peer_attempts=4,
                             lean=lean, ladder_tokens=32 if lean else 0, ladder_prompts=4 if lean else 0)
    return BenchSettings(max_tokens=64, repeats=5, concurrencies=powers, requests_per_level=2 * powers[-1], batches=powers,
                         quality_rows=200, compile=True, peer_rows=100,
                         peer_levels=tuple(powers), peer_attempts=2)


def batch1_table(engines: list, prompts: list[str], max_tokens: int, repeats: int = 3, progress: bool = True):
    """Each engine on the same prompts, one request at a time, after one warm-up request:
    median TTFT, TPOT and decode tokens/s (1 / TPOT), and the ratio to the first engine."""
    import pandas as pd
    from tqdm.auto import tqdm

    rows, records = [], []
    for engine in tqdm(engines, desc="engines", disable=not progress):
        engine.run(prompts[0], 2)  # warm-up: first-call costs (allocations, compilation) are not the steady state
        runs = [engine.run(prompts[i % len(prompts)], max_tokens) for i in range(repeats)]
        records += runs
        ok = [r for r in runs if r.ok]
        error = next((r.error for r in runs if r.error), "")
        tpot = percentile([r.tpot for r in ok], 50)
        rows.append({"engine": engine.name, "requests": len(runs), "errors": len(runs) - len(ok),
                     "ttft s p50": percentile([r.ttft for r in ok], 50), "tpot s p50": tpot,
                     "decode tokens/s": 1 / tpot if tpot and not math.isnan(tpot) else math.nan,
                     "output tokens": int(percentile([r.output_tokens for r in ok], 50)) if ok else 0, "error": error})
    table = pd.DataFrame(rows).set_index("engine")
    table["vs first engine"] = table["decode tokens/s"] / table["decode tokens/s"].iloc[0]
    return table, records


def add_roofline(table, bandwidth_gbps: float, bytes_per_token: float, column: str = "decode tokens/s", engines: list | None = None):
    """The decode bound at batch 1 (``bytes_per_token`` read per token) and the share of it each row reached.

    An engine in ``engines`` that reads other bytes than the model's (the lean loop's int8 weights: its
    ``weights_bytes()``) gets its own bound: the KV cache part of ``bytes_per_token`` stays the same."""
    table = table.copy()
    bound = roofline_tokens_per_s(bandwidth_gbps, bytes_per_token)
    bounds = {}
    for engine in engines or []:
        if hasattr(engine, "weights_bytes") and engine.name in table.index:
            bounds[engine.name] = roofline_tokens_per_s(bandwidth_gbps, bytes_per_token - engine.model_weights_bytes() + engine.weights_bytes())
    bound = [bounds.get(name, bound) for name in table.index] if bounds else bound
    table["roofline tokens/s"] = bound
    table["% of roofline"] = 100 * table[column] / bound
    return table


def cpu_price(instance: str | None = None, arch: str | None = None) -> dict:
    """A CPU machine's hourly price (dated, sourced: ``datasets/bench/cpu_prices.csv``): ``instance`` by name, else the
    2-vCPU instance of the architecture the measurement runs on (x86_64 or arm64: an Arm price next to an x86
    measurement would price a machine nobody measured)."""
    import platform

    rows = load_rows("bench/cpu_prices.csv", numeric=["usd_per_hour", "vcpus", "ram_gb"], required=["instance", "provider", "arch"])
    if instance is not None:
        found = next((r for r in rows if r["instance"] == instance), None)
        if found is None:
            raise InputError(f"no price for CPU instance {instance!r}", fix=f"use one of {', '.join(r['instance'] for r in rows)}")
        return found
    machine = (arch or platform.machine()).lower()
    machine = {"amd64": "x86_64", "aarch64": "arm64"}.get(machine, machine)
    return next((r for r in rows if r["arch"] == machine), rows[0])


def cost_table(throughputs: dict[str, float], usd_per_hour: float, api_prices: dict[str, float] | None = None):
    """$ per 1M output tokens for each measured throughput at ``usd_per_hour``, next to API list prices
    (output $/1M; an API bills input too, so its real cost per conversation is higher)."""
    import pandas as pd

    rows = [{"option": name, "output tokens/s": tps, "usd per hour": usd_per_hour, "usd per 1M output tokens": usd_per_million_tokens(usd_per_hour, tps),
             "kind": "measured here"} for name, tps in throughputs.items()]
    for name, price in (api_prices or {}).items():
        rows.append({"option": name, "output tokens/s": math.nan, "usd per hour": math.nan, "usd per 1M output tokens": price,
                     "kind": "API list price (output)"})
    return pd.DataFrame(rows).set_index("option")


def break_even_with_measured_efficiency(inputs: dict, measured_efficiency: float) -> dict:
    """Lab 01's break-even with its assumed share of the bandwidth roofline, and with the share measured here."""
    from .. import tco

    assumed = inputs["bandwidth_efficiency"]
    measured_inputs = {**inputs, "bandwidth_efficiency": min(max(measured_efficiency, 0.01), 1.0)}
    return {"assumed efficiency": assumed, "measured efficiency": measured_inputs["bandwidth_efficiency"],
            "break-even assumed": tco.break_even(inputs), "break-even measured": tco.break_even(measured_inputs),
            "gpus assumed": tco.outcome(inputs)["gpus"], "gpus measured": tco.outcome(measured_inputs)["gpus"]}


def sweep_summary(records, slo=None):
    """Per engine and concurrency, the summary of already collected records (for re-slicing a sweep by SLO)."""
    import pandas as pd

    groups: dict[tuple[str, int], list] = {}
    for record in records:
        groups.setdefault((record.engine, record.concurrency), []).append(record)
    rows = [{"engine": e, "concurrency": c, **summarize(rs, slo=slo)} for (e, c), rs in sorted(groups.items())]
    return pd.DataFrame(rows).set_index(["engine", "concurrency"])


# ---------------------------------------------------------------- plots
def plot_latency(records, ax=None):
    """TTFT and E2E percentiles per engine (one marker per percentile)."""
    import matplotlib.pyplot as plt

    ax = ax or plt.subplots(figsize=(8, 3.5))[1]
    engines = sorted({r.engine for r in records})
    for i, engine in enumerate(engines):
        ok = [r for r in records if r.engine == engine and r.ok]
        for metric, marker in (("ttft", "o"), ("e2e", "s")):
            values = [getattr(r, metric) for r in ok]
            # the percentiles at evenly spaced positions: at x = 50, 95, 99 the last two ticks overlapped
            ax.plot([0, 1, 2], [percentile(values, q) for q in (50, 95, 99)], marker=marker, color=f"C{i}",
                    linestyle="-" if metric == "ttft" else "--", label=f"{engine} {metric.upper()}")
    ax.set_xlabel("percentile"), ax.set_ylabel("seconds"), ax.set_ylim(bottom=0)
    ax.set_xticks([0, 1, 2], ["p50", "p95", "p99"]), ax.set_xlim(-0.3, 2.3)
    # the legend beside the plot, never over the data (two entries per engine: 8 with four engines)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    ax.set_title("latency percentiles (solid: TTFT, dashed: E2E)")
    if ax.figure is not None:
        ax.figure.set_layout_engine("constrained")  # keeps the legend beside the axes, inside the figure
    return ax


def server_reading(table) -> str:
    """The batch-1 table's server row against the first (in-process) engine, in sentences computed from this run:
    whether the server's TTFT came out higher, lower or within the run's noise, and its TPOT beside the same model's."""
    served = [name for name in table.index if "(OpenAI API)" in str(name)]
    if not served or len(table) < 2:
        return "(no server row in this table)"
    first, server = table.iloc[0], table.loc[served[0]]
    gap_ms = 1000 * (server["ttft s p50"] - first["ttft s p50"])
    tpot = server["tpot s p50"] / first["tpot s p50"] if first["tpot s p50"] else float("nan")
    noise_ms = max(5.0, 0.1 * 1000 * first["ttft s p50"])  # a few ms, or a tenth of the TTFT: what medians of a few runs move by
    if gap_ms > noise_ms:
        ttft = (f"Here the server's TTFT was {gap_ms:.0f} ms above {table.index[0]}'s: HTTP, JSON and the chat template, "
                "paid once per request.")
    elif gap_ms < -noise_ms:
        ttft = (f"Here the server's TTFT came out {-gap_ms:.0f} ms below {table.index[0]}'s: the server runs its own warm "
                "process and its own settings, so the HTTP layer (a few ms) is hidden by the differences between the runs.")
    else:
        ttft = (f"Here the server's TTFT was within {noise_ms:.0f} ms of {table.index[0]}'s ({gap_ms:+.0f} ms): the HTTP, "
                "JSON and chat-template work it adds is smaller than the run's noise.")
    return ttft + f" Its TPOT was {tpot:.2f}x the in-process one: the same model on the same cores."


def plot_sweep(table, ax=None):
    """Output tokens/s and TTFT p50 against concurrency, one line per engine."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(1, 2, figsize=(10, 3.5))
    for engine in table.index.get_level_values(0).unique():
        part = table.loc[engine]
        ax[0].plot(part.index, part["output tokens/s"], marker="o", label=engine)
        ax[1].plot(part.index, part["ttft s p50"], marker="o", label=engine)
    ax[0].set_xlabel("concurrent requests"), ax[0].set_ylabel("output tokens/s"), ax[0].set_title("throughput")
    ax[1].set_xlabel("concurrent requests"), ax[1].set_ylabel("seconds"), ax[1].set_title("time to first token (p50)")
    for axis in ax:  # from zero: a few percent of noise must not look like a trend
        axis.set_ylim(bottom=0, top=max(axis.get_ylim()[1], 1e-9) * 1.1)
    ax[0].legend(fontsize=7)
    return ax


def plot_roofline(table, ax=None):
    """Achieved decode tokens/s per engine against the bandwidth bound."""
    import matplotlib.pyplot as plt

    ax = ax or plt.subplots(figsize=(7, 3))[1]
    rows = list(range(len(table)))
    ax.barh(rows, table["decode tokens/s"], color="C0", label="measured")
    # each engine's own limit: engines read different bytes per token (an int8 loop reads half of fp32's weights)
    for row, limit in zip(rows, table["roofline tokens/s"]):
        ax.plot([limit, limit], [row - 0.4, row + 0.4], color="C3", linestyle="--", linewidth=2,
                label="its bandwidth bound" if row == 0 else None)
    ax.set_yticks(rows, [str(name) for name in table.index])
    ax.set_xlim(0, 1.08 * max(float(table["roofline tokens/s"].max()), float(table["decode tokens/s"].max())))
    ax.set_xlabel("decode tokens/s at batch 1"), ax.set_title("how close to each engine's hardware limit")
    ax.legend(fontsize=7, loc="lower right")
    return ax


def plot_costs(table, ax=None):
    """$ per 1M output tokens, measured options and API list prices, on a log scale."""
    import matplotlib.pyplot as plt

    ax = ax or plt.subplots(figsize=(7, 3))[1]
    colors = ["C2" if kind == "measured here" else "C1" for kind in table["kind"]]
    ax.barh(table.index, table["usd per 1M output tokens"], color=colors)
    ax.set_xscale("log"), ax.set_xlabel("USD per 1M output tokens (log)"), ax.set_title("green: measured here; orange: API list price")
    return ax


QUALITY_METRICS = ("valid JSON", "category", "product", "exact match")


def quality_table(model, tokenizer, rows: int, few_shot_examples: int = 2, progress: bool = True):
    """The support-desk task (Lab 03's test split) as the quality benchmark: the base model zero-shot and
    few-shot measured here, and the Lab 03 adapter's result from your results store when Lab 03 saved one.
    Rates with 95 % Wilson intervals; the ``source`` column says where each row comes from."""
    import pandas as pd

    from .. import finetune as ft
    from .. import results

    test, train = ft.load_tickets("test")[:rows], ft.load_tickets("train")
    messages = [r["message"] for r in test]
    measured = {"zero-shot (measured here)": ft.evaluate(ft.predict(model, tokenizer, messages, progress=progress), test),
                "few-shot (measured here)": ft.evaluate(ft.predict(model, tokenizer, messages, examples=train[:few_shot_examples],
                                                                   progress=progress), test)}
    frames = []
    for name, frame in measured.items():
        part = frame.loc[list(QUALITY_METRICS), ["rate", "low", "high", "n"]].copy()
        part["setting"], part["source"] = name, "this run"
        frames.append(part)
    stored = results.load().get("03", {})
    if all(f"{m} after rate" in stored for m in QUALITY_METRICS):
        n = stored.get("eval rows", {}).get("value", float("nan"))
        part = pd.DataFrame({"rate": [stored[f"{m} after rate"]["value"] for m in QUALITY_METRICS],
                             "low": [stored[f"{m} after low"]["value"] for m in QUALITY_METRICS],
                             "high": [stored[f"{m} after high"]["value"] for m in QUALITY_METRICS], "n": n}, index=list(QUALITY_METRICS))
        how = stored.get("tuned by", {}).get("value", "LoRA adapter")
        part["setting"], part["source"] = f"{how} (your Lab 03 run)", f"results store, recorded {stored['category after rate']['recorded']}"
        frames.append(part)
    table = pd.concat(frames)
    table.index.name = "metric"
    return table.reset_index().set_index(["setting", "metric"])


def plot_quality(table, ax=None):
    """Rates with their 95 % intervals, grouped by metric, one colour per setting."""
    import matplotlib.pyplot as plt
    import numpy as np

    ax = ax or plt.subplots(figsize=(8, 3.2))[1]
    settings = list(dict.fromkeys(table.index.get_level_values(0)))
    metrics = list(dict.fromkeys(table.index.get_level_values(1)))
    width = 0.8 / len(settings)
    for i, setting in enumerate(settings):
        part = table.loc[setting].reindex(metrics)
        x = np.arange(len(metrics)) + i * width
        ax.bar(x, part["rate"], width, label=setting, color=f"C{i}")
        ax.errorbar(x, part["rate"], yerr=[part["rate"] - part["low"], part["high"] - part["rate"]], fmt="none", color="black", capsize=3)
    ax.set_xticks(np.arange(len(metrics)) + width * (len(settings) - 1) / 2, metrics)
    ax.set_ylabel("share correct"), ax.set_ylim(0, 1.05), ax.legend(fontsize=7), ax.set_title("support-desk task, 95 % intervals")
    return ax


GPU_NAMES = {"NVIDIA H100 80GB HBM3": "H100", "NVIDIA H200": "H200", "Tesla T4": "T4", "NVIDIA A100-SXM4-80GB": "A100-80GB"}


def recorded_gpu_rows():
    """The GPU runs recorded in ``datasets/results/gpu_quantization.csv`` (batch-1 decode of a real
    architecture), with the % of roofline and the $ per 1M output tokens at the median rental price.
    Labelled as recorded: on the CPU tier these are the course's GPU measurements, not yours."""
    from .. import quantize, tco

    recorded = quantize.gpu_results()
    if recorded is None:
        return None
    rows = []
    for _, row in recorded.iterrows():
        gpu = GPU_NAMES.get(row["hardware"], row["hardware"])
        try:
            usd = tco.rental_price(gpu)
        except Exception:  # noqa: BLE001 - a GPU without a sourced price row is shown without a cost
            usd = math.nan
        rows.append({"hardware": gpu, "model": row["model"], "precision": row["precision"], "cache": row["cache"],
                     "decode tokens/s": row["decode_tokens_per_s"], "% of roofline": row["pct_of_roofline"], "usd per hour": usd,
                     "usd per 1M output tokens": usd_per_million_tokens(usd, row["decode_tokens_per_s"]), "recorded": row["date"]})
    import pandas as pd

    return pd.DataFrame(rows)


def measured_efficiency(device: str, roof, recorded, hardware_summary: str) -> tuple[float, str]:
    """The share of the bandwidth roofline to put into Lab 01's model, and where it comes from: this run on
    a GPU; on a CPU the best recorded GPU run (a CPU's share says nothing about a GPU), else this CPU's."""
    if device == "cuda":
        return roof["% of roofline"].max() / 100, f"this run ({hardware_summary})"
    if recorded is not None:
        best = recorded.loc[recorded["% of roofline"].idxmax()]
        return best["% of roofline"] / 100, f"recorded {best['hardware']} run, {best['precision']} {best['cache']} cache ({best['recorded']})"
    return roof["% of roofline"].max() / 100, f"this CPU ({hardware_summary})"


def break_even_sentences(moved: dict, where: str) -> list[str]:
    """Lab 04's words for :func:`break_even_with_measured_efficiency`: both break-evens and what moved them."""
    def volume(value):
        return f"{value:,.0f} conversations a month" if value else "never (self-hosting does not pay)"

    lines = [f"Lab 01 assumed {moved['assumed efficiency']:.0%} of the roofline; measured: {moved['measured efficiency']:.0%} ({where})",
             f"GPUs for the support desk: {moved['gpus assumed']} assumed -> {moved['gpus measured']} measured",
             f"break-even with the assumption: {volume(moved['break-even assumed'])}",
             f"break-even with the measurement: {volume(moved['break-even measured'])}"]
    if moved["gpus measured"] == moved["gpus assumed"]:
        lines.append(f"The bandwidth share moved from {moved['assumed efficiency']:.0%} to {moved['measured efficiency']:.0%}, but GPUs "
                     f"come whole: {moved['gpus assumed']} still carry the peak, so the break-even stays. The GPU count is what would move it.")
    else:
        lines.append(f"The bandwidth share changed the GPU count from {moved['gpus assumed']} to {moved['gpus measured']}: that moved the break-even.")
    return lines
