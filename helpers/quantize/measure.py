"""Lab 02: run a model at several precisions, and measure memory, speed and quality lost.

Everything here is measured on the plan's model (the embedded SmolLM2-135M on CPU) and
predicted for the rest of the catalog with ``helpers.catalog.estimate_memory``.
Memory in GB (1e9 bytes); speeds in tokens per second.
"""
from __future__ import annotations

import gc
import importlib.util
import math
import os
import time
from dataclasses import dataclass

from ..catalog import catalog, estimate_memory, get_model
from ..errors import InputError, KitError
from ..hardware import USABLE_VRAM, gpu_specs, roofline_tokens_per_s
from ..paths import dataset

# FP4 (bitsandbytes' other 4-bit type) is left out: on a CPU each 4-bit precision costs about a minute of
# the lab, and NF4 is the one QLoRA uses; pass precisions=[..., "fp4"] to profile_precisions to add it
CPU_PRECISIONS = ["fp32", "bf16", "int8", "nf4"]
GPU_PRECISIONS = ["bf16", "int8", "nf4"]
FITS_GPUS = ["T4", "L4", "A10G", "A100-40GB", "A100-80GB", "H100", "RTX-4090"]


def precisions_for(plan) -> list[str]:
    """The precisions Lab 02 measures on the plan's hardware (only those predicted to fit)."""
    if plan.device == "cpu":
        candidates = CPU_PRECISIONS
    else:
        from ..hardware import detect_hardware

        half = "bf16" if detect_hardware().bf16 else "fp16"  # a T4 has no bf16
        candidates = [half if p == "bf16" else p for p in GPU_PRECISIONS]
    fitting = [p for p in candidates
               if estimate_memory(plan.model, p, plan.context, plan.batch, device=plan.device).total_gb <= plan.memory_available_gb]
    # quick mode (CI's run of the student copy): the first precision only; the solution run measures them all
    return fitting[:1] if plan.quick else fitting


def heldout_text() -> str:
    return dataset("quantize/heldout_support_article.txt").read_text(encoding="utf-8")


def prompts() -> list[str]:
    import json

    lines = dataset("quantize/prompts.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line)["prompt"] for line in lines if line.strip()]


def rss_gb() -> float:
    import psutil

    return psutil.Process(os.getpid()).memory_info().rss / 1e9


def measure_memory_bandwidth(megabytes: int = 256, repeats: int = 5) -> float:
    """This machine's memory bandwidth in GB/s, from copying a large array (bytes read + written / time).

    On a GPU use the spec table instead; this is for the CPU roofline.
    """
    import numpy as np

    source = np.ones(megabytes * 1_000_000 // 8, dtype=np.float64)
    target = np.empty_like(source)
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        np.copyto(target, source)
        best = min(best, time.perf_counter() - start)
    return 2 * source.nbytes / best / 1e9


def perplexity(model, tokenizer, text: str, window: int = 512, stride: int = 256) -> float:
    """Perplexity of ``text`` under the model (sliding windows; each token scored once).

    exp(mean negative log-likelihood per predicted token). Lower is better.
    """
    import torch

    ids = tokenizer(text, return_tensors="pt")["input_ids"].to(model.device)
    total_nll, counted, previous_end = 0.0, 0, 0
    for start in range(0, ids.shape[1], stride):
        end = min(start + window, ids.shape[1])
        target_len = end - previous_end
        chunk = ids[:, start:end]
        labels = chunk.clone()
        labels[:, :-target_len] = -100
        with torch.no_grad():
            loss = model(chunk, labels=labels).loss
        scored = int((labels[:, 1:] != -100).sum())
        total_nll += float(loss) * scored
        counted += scored
        previous_end = end
        if end == ids.shape[1]:
            break
    return math.exp(total_nll / counted)


def greedy_replies(model, tokenizer, questions: list[str], max_new_tokens: int = 24) -> list[str]:
    """Greedy replies to several questions, one at a time (batching can change low-precision replies)."""
    from ..models import chat

    return [chat(model, tokenizer, q, max_new_tokens=max_new_tokens) for q in questions]


def agreement(replies: list[str], reference: list[str]) -> float:
    """Share of replies identical to the reference replies."""
    if len(replies) != len(reference):
        raise InputError("replies and reference differ in length", fix="compare replies to the same prompts")
    return sum(a.strip() == b.strip() for a, b in zip(replies, reference)) / len(reference)


@dataclass
class Speed:
    time_to_first_token_s: float
    decode_tokens_per_s: float
    new_tokens: int


def decode_speed(model, tokenizer, prompt: str = "Write a short note to a customer about a delayed parcel.",
                 new_tokens: int = 32) -> Speed:
    """Time to first token (prefill + one token) and decode speed after it, greedy, batch 1."""
    import torch

    from ..models import chat_inputs

    inputs = chat_inputs(tokenizer, prompt).to(model.device)
    settings = dict(do_sample=False, pad_token_id=tokenizer.pad_token_id)

    def timed(n: int) -> tuple[float, int]:
        if model.device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        with torch.no_grad():
            out = model.generate(**inputs, max_new_tokens=n, min_new_tokens=n, **settings)
        if model.device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - start, out.shape[1] - inputs["input_ids"].shape[1]

    timed(2)  # warm-up
    first, _ = timed(1)
    total, produced = timed(new_tokens)
    return Speed(first, (produced - 1) / max(total - first, 1e-9), produced)


def roofline_share(measured_tokens_per_s: float, bandwidth_gbps: float, bytes_per_token: float) -> tuple[float, float]:
    """(roofline tokens/s, share of it reached)."""
    bound = roofline_tokens_per_s(bandwidth_gbps, bytes_per_token)
    return bound, measured_tokens_per_s / bound


def profile_precisions(plan, precisions: list[str] | None = None, questions: list[str] | None = None,
                       text: str | None = None, progress: bool = True):
    """Load the plan's model at each precision once and measure it: memory, speed, quality.

    Returns (table, replies): a DataFrame with one row per precision, and the greedy replies per
    precision. Each model is freed before the next loads, so peak memory stays one model.
    """
    import pandas as pd
    from tqdm.auto import tqdm

    from ..models import load_model, weights_bytes

    precisions = precisions or precisions_for(plan)
    # answer agreement: 2 prompts on a CPU (int8/4-bit decoding is slow there), all on a GPU
    questions = questions or prompts()[: 2 if plan.quick or plan.device == "cpu" else None]
    # decode speed over 16 new tokens on a CPU (each 4-bit token costs about 0.3 s there), 32 on a GPU
    new_tokens = 16 if plan.device == "cpu" else 32
    text = text or heldout_text()
    rows, replies = [], {}
    for precision in tqdm(precisions, desc="precisions", disable=not progress):
        before = rss_gb()
        start = time.perf_counter()
        model, tokenizer = load_model(plan.model, precision=precision, device=plan.device)
        load_s = time.perf_counter() - start
        predicted = estimate_memory(plan.model, precision, plan.context, 1, device=plan.device)
        measured = weights_bytes(model) / 1e9
        speed = decode_speed(model, tokenizer, new_tokens=new_tokens)
        rows.append({
            "precision": precision, "load s": load_s, "weights GB predicted": predicted.weights_gb, "weights GB measured": measured,
            "measured / predicted": measured / predicted.weights_gb, "process RSS GB": rss_gb(), "RSS growth GB": rss_gb() - before,
            "time to first token s": speed.time_to_first_token_s, "decode tokens/s": speed.decode_tokens_per_s,
            "perplexity": perplexity(model, tokenizer, text),
        })
        replies[precision] = greedy_replies(model, tokenizer, questions)
        del model, tokenizer
        gc.collect()
    table = pd.DataFrame(rows).set_index("precision")
    reference = replies[precisions[0]]
    table["answer agreement"] = [agreement(replies[p], reference) for p in table.index]
    table["perplexity vs " + precisions[0]] = table["perplexity"] / table["perplexity"].iloc[0]
    return table, replies


# What the lesson claims about quality, as checks that mean the same on every CPU. Perplexities move
# with the CPU's kernels (between an AVX-512 and an AVX2 machine: fp32 0.003 %, bf16 0.5 %, NF4 0.9 %),
# so the tolerances sit well above that and well below the effects the lesson is about (NF4 +37 %).
HALF_PRECISION_TOLERANCE = 0.02   # bf16/fp16 perplexity within 2 % of full precision
INT8_TOLERANCE = 0.05             # int8 within 5 %
FOUR_BIT_MIN_COST = 0.10          # on a 135M model, 4-bit costs at least 10 %


def quality_checks(table) -> dict[str, bool]:
    """The lesson's quality claims checked on a profile table (only for the precisions it measured)."""
    ratio = table["perplexity"] / table["perplexity"].iloc[0]
    checks = {}
    for half in ("bf16", "fp16"):
        if half in ratio.index and half != ratio.index[0]:
            checks[f"{half} perplexity within {HALF_PRECISION_TOLERANCE:.0%} of {ratio.index[0]}"] = bool(abs(ratio[half] - 1) <= HALF_PRECISION_TOLERANCE)
    if "int8" in ratio.index:
        checks[f"int8 perplexity within {INT8_TOLERANCE:.0%} of {ratio.index[0]}"] = bool(abs(ratio["int8"] - 1) <= INT8_TOLERANCE)
    four_bit = [p for p in ("nf4", "fp4") if p in ratio.index]
    if four_bit:
        checks[f"4-bit costs more than {FOUR_BIT_MIN_COST:.0%} perplexity"] = bool(min(ratio[p] for p in four_bit) - 1 > FOUR_BIT_MIN_COST)
        checks["4-bit is the worst precision"] = ratio.idxmax() in four_bit
    return checks


# ---------------------------------------------------------------- what fits where
def gpus_to_fit(model: str, precision: str, gpu: str, context: int = 4096, batch: int = 1, usable: float = USABLE_VRAM) -> int:
    """Fewest GPUs of one kind whose memory holds the model (weights and KV cache split evenly,
    a CUDA context on each)."""
    spec = gpu_specs()[gpu]
    estimate = estimate_memory(model, precision, context, batch, device="cpu")  # without the context: added per GPU below
    from ..catalog import CUDA_CONTEXT_GB

    per_gpu = spec["vram_gb"] * usable - CUDA_CONTEXT_GB
    return max(1, math.ceil(estimate.total_gb / per_gpu))


def fits_table(models: list[str] | None = None, gpus: list[str] | None = None, precisions: tuple[str, ...] = ("bf16", "int8", "nf4"),
               context: int = 4096):
    """For each model x precision: predicted GB, and how many of each GPU it needs ("1" = fits on one)."""
    import pandas as pd

    models = models or list(catalog())
    gpus = gpus or FITS_GPUS
    rows = []
    for key in models:
        for precision in precisions:
            est = estimate_memory(key, precision, context, 1)
            row = {"model": key, "precision": precision, "GB (1 GPU)": round(est.total_gb, 1)}
            for gpu in gpus:
                row[gpu] = gpus_to_fit(key, precision, gpu, context)
            rows.append(row)
    return pd.DataFrame(rows).set_index(["model", "precision"])


def largest_model_that_fits(gpu: str, precision: str, context: int = 4096) -> str:
    """The catalog model with the most parameters that fits on one ``gpu`` at ``precision``."""
    fitting = [spec for spec in catalog().values() if gpus_to_fit(spec.key, precision, gpu, context) == 1]
    if not fitting:
        raise InputError(f"no catalog model fits one {gpu} at {precision}", fix="try a smaller precision or a bigger GPU")
    return max(fitting, key=lambda spec: spec.parameter_count()).key


def memory_saving(model: str, precision: str, baseline: str = "bf16") -> float:
    """Share of weight memory saved by ``precision`` relative to ``baseline``."""
    from ..catalog import estimate_weights_bytes

    spec = get_model(model)
    return 1 - estimate_weights_bytes(spec, precision) / estimate_weights_bytes(spec, baseline)


# ---------------------------------------------------------------- llama.cpp side by side
def llama_cpp_available() -> bool:
    return importlib.util.find_spec("llama_cpp") is not None


def llama_cpp_decode(prompt: str = "Write a short note to a customer about a delayed parcel.", new_tokens: int = 32,
                     threads: int | None = None) -> dict:
    """Load the embedded GGUF with llama.cpp and time it. Raises a KitError naming the fix when absent."""
    if not llama_cpp_available():
        raise KitError("llama-cpp-python is not installed (it compiles from source here: about 8 minutes on 2 cores)",
                       fix='pip install -e ".[llamacpp]" then restart the kernel')
    from llama_cpp import Llama

    from ..models import embedded_gguf_path

    before = rss_gb()
    start = time.perf_counter()
    llm = Llama(model_path=str(embedded_gguf_path()), n_ctx=1024, n_threads=threads or os.cpu_count(), verbose=False, seed=0)
    load_s = time.perf_counter() - start
    messages = [{"role": "user", "content": prompt}]
    start = time.perf_counter()
    first = None
    produced = 0
    for chunk in llm.create_chat_completion(messages=messages, max_tokens=new_tokens, temperature=0.0, stream=True):
        if chunk["choices"][0]["delta"].get("content"):
            produced += 1
            if first is None:
                first = time.perf_counter() - start
    total = time.perf_counter() - start
    return {"engine": "llama.cpp", "load s": load_s, "RSS growth GB": rss_gb() - before, "time to first token s": first,
            "decode tokens/s": (produced - 1) / max(total - (first or 0), 1e-9), "file GB": embedded_gguf_path().stat().st_size / 1e9}


def gguf_engines(plan):
    """Lab 02's GGUF comparison for ``plan.model``: the embedded GGUF loaded by transformers (dequantized) and, where
    llama-cpp-python is installed, by llama.cpp as is. An engine that cannot run is explained and left out.

    Quick mode (CI's run of the student copy) skips the transformers load (about 12 s of de-quantizing on the CI
    machine): the solution run and the kit's one-time conversion of the embedded model both go through it."""
    import pandas as pd

    from ..errors import try_and_explain
    from ..models import load_model, weights_bytes

    rows = []
    start = time.perf_counter()
    if plan.quick:
        print("transformers' GGUF load skipped in quick mode: the full plan runs it")
        loaded = None
    else:  # only the embedded model ships a GGUF file
        loaded = try_and_explain(load_model, plan.model, precision="gguf", device="cpu")
    if loaded:
        model, tokenizer = loaded
        rows.append({"engine": "transformers (GGUF dequantized)", "load s": time.perf_counter() - start,
                     "weights GB": weights_bytes(model) / 1e9, "decode tokens/s": decode_speed(model, tokenizer).decode_tokens_per_s})
        del model
    if not llama_cpp_available():  # optional, not an error: say what the row would show and how to get it
        print("llama.cpp is not installed here, so only transformers' row is measured (optional: "
              "pip install -e \".[llamacpp]\", about 8 minutes to compile on 2 cores, then restart the kernel)")
        llama = None
    else:
        llama = try_and_explain(llama_cpp_decode)
    if llama:
        rows.append({"engine": "llama.cpp (GGUF as is)", "load s": llama["load s"], "weights GB": llama["file GB"],
                     "decode tokens/s": llama["decode tokens/s"]})
    return pd.DataFrame(rows).set_index("engine").round(2) if rows else None


def add_roofline(table, bandwidth_gbps: float):
    """Add the decode roofline (bandwidth / weight bytes) and the share of it each precision reached."""
    table = table.copy()
    table["roofline tokens/s"] = [roofline_tokens_per_s(bandwidth_gbps, gb * 1e9) for gb in table["weights GB measured"]]
    table["% of roofline"] = 100 * table["decode tokens/s"] / table["roofline tokens/s"]
    return table


def gpu_results():
    """The committed GPU measurements (scripts/gpu_quant_bench.py), or None if none were recorded yet."""
    import pandas as pd

    from ..paths import DATASETS

    path = DATASETS / "results" / "gpu_quantization.csv"
    return pd.read_csv(path) if path.exists() else None


RECORDED_VIEW = {"hardware": "GPU", "precision": "precision", "cache": "KV cache", "weights_gb_measured": "weights GB",
                 "peak_allocated_gb": "peak GB", "time_to_first_token_s": "TTFT s", "decode_tokens_per_s": "decode tokens/s",
                 "pct_of_roofline": "% of roofline", "date": "date"}


def recorded_view(recorded):
    """The recorded GPU rows as a reader compares them: one row per model, precision and cache, the columns that
    answer "how fast, how big, whose run" (the CSV keeps every column for the scripts)."""
    columns = [c for c in RECORDED_VIEW if c in recorded.columns]
    view = recorded.set_index("model")[columns].rename(columns=RECORDED_VIEW)
    return view.round({"weights GB": 2, "peak GB": 2, "TTFT s": 3, "decode tokens/s": 1, "% of roofline": 1})


def decode_gap(recorded) -> list[str]:
    """Where batch-1 decode loses time on the GPU, from the recorded rows: the same weights read per token,
    the dynamic vs the compiled static cache (sentences computed from the rows, for Lab 02)."""
    lines = []
    for (hardware, model), rows in recorded.groupby(["hardware", "model"]):
        if "cache" not in rows or not {"dynamic", "static"} <= set(rows["cache"]):
            continue
        dynamic = rows[rows["cache"] == "dynamic"].iloc[0]
        static = rows[rows["cache"] == "static"].iloc[0]
        per_token_ms = 1000 / dynamic["decode_tokens_per_s"] - 1000 / static["decode_tokens_per_s"]
        lines.append(f"{model} {dynamic['precision']} on {hardware}: {dynamic['decode_tokens_per_s']:.0f} tokens/s with the default cache "
                     f"({dynamic['pct_of_roofline']:.0f}% of the roofline) vs {static['decode_tokens_per_s']:.0f} with a compiled static "
                     f"cache ({static['pct_of_roofline']:.0f}%): the same {dynamic['weights_gb_measured']:.1f} GB read per token, so the "
                     f"{per_token_ms:.0f} ms per token saved is Python and kernel-launch overhead, not bandwidth (Lab 04 compares engines)")
    return lines


def plot_memory(table, model: str, context: int, ax=None):
    """Predicted memory breakdown per precision, with the measured weights marked."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(7, 3.5))
    names = list(table.index)
    parts = [estimate_memory(model, p, context, 1, device="cpu") for p in names]
    weights = [e.weights_gb for e in parts]
    kv = [e.kv_cache_gb for e in parts]
    overhead = [e.overhead_gb for e in parts]
    ax.bar(names, weights, label="weights (predicted)")
    ax.bar(names, kv, bottom=weights, label=f"KV cache at {context} tokens")
    # the estimator's "overhead GB" column: activations and buffers (and, on a GPU, the CUDA context)
    ax.bar(names, overhead, bottom=[w + k for w, k in zip(weights, kv)], label="overhead (activations, buffers)")
    ax.scatter(names, table["weights GB measured"], color="black", zorder=3, label="weights measured")
    ax.set(ylabel="GB", title=f"{model}: memory per precision")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # beside the bars, never over them
    ax.figure.set_layout_engine("constrained")
    return ax


def load_memory_sentence(table, low: str = "nf4", high: str = "bf16") -> str:
    """What this run's table says about memory while loading a bitsandbytes precision against a 16-bit one: the
    sentence follows the measured growth of the process, whichever way it went."""
    if low not in table.index or high not in table.index:
        return f"(this run has no {low} and {high} rows to compare while loading)"
    grew = {name: float(table.loc[name, "RSS growth GB"]) + 0.0 for name in (low, high)}
    grew = {name: 0.0 if abs(value) < 0.005 else value for name, value in grew.items()}  # never "-0.00 GB"
    weights = {name: float(table.loc[name, "weights GB measured"]) for name in (low, high)}
    start = (f"Loading {low} grew this process by {grew[low]:.2f} GB and {high} by {grew[high]:.2f} GB, while {low}'s "
             f"weights are {weights[low] / weights[high]:.2f}x {high}'s ({weights[low]:.2f} vs {weights[high]:.2f} GB)")
    if grew[low] >= grew[high]:
        return (start + f": bitsandbytes reads the weights in 16-bit and quantizes them after, so the peak while loading "
                f"{low} is not lower than {high}'s. Plan memory for the load, not only for the weights that stay.")
    return (start + f": here the load of {low} grew the process less than {high}'s. Growth after loading is not the peak "
            "during it, and the allocator keeps memory freed by the previous precision, so measure the load where memory "
            "is tight.")


def plot_speed_and_quality(table, axes=None):
    import matplotlib.pyplot as plt

    if axes is None:
        _, axes = plt.subplots(1, 2, figsize=(10, 3.5))
    names = list(table.index)
    axes[0].bar(names, table["roofline tokens/s"], color="lightgrey", label="roofline (bandwidth / weight bytes)")
    axes[0].bar(names, table["decode tokens/s"], color="tab:blue", label="measured decode")
    axes[0].set(ylabel="tokens/s", yscale="log", title="Speed vs the memory roofline")
    from matplotlib.ticker import FuncFormatter, LogLocator

    plain = FuncFormatter(lambda value, _: f"{value:g}")  # 20, 50, 100 rather than 2x10^1 on the log axis
    axes[0].yaxis.set_minor_locator(LogLocator(subs=(2.0, 5.0)))
    axes[0].yaxis.set_major_formatter(plain)
    axes[0].yaxis.set_minor_formatter(plain)
    axes[0].legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=2)  # below the bars, not on them
    axes[0].figure.set_layout_engine("constrained")
    axes[1].bar(names, table["perplexity"], color="tab:orange")
    axes[1].set(ylabel="perplexity (lower is better)", title="What quantization costs (held-out article)")
    return axes


def key_results(table, bandwidth_gbps: float) -> tuple[dict[str, float | str], dict[str, str]]:
    """What Lab 02 saves for the later labs (``helpers.results``): per precision the measured decode speed,
    weights and perplexity cost, the bandwidth used for the roofline, and the smallest precision whose
    perplexity stayed within the lesson's tolerance (the one Lab 04 serves first)."""
    speed = add_roofline(table, bandwidth_gbps)
    ratio = table["perplexity"] / table["perplexity"].iloc[0]
    tolerance = {"int8": INT8_TOLERANCE}
    within = [p for p in table.index if abs(ratio[p] - 1) <= tolerance.get(p, HALF_PRECISION_TOLERANCE)]
    best = min(within, key=lambda p: table.loc[p, "weights GB measured"]) if within else table.index[0]
    values: dict[str, float | str] = {"bandwidth GB/s": bandwidth_gbps, "reference precision": table.index[0], "best precision": best}
    units = {"bandwidth GB/s": "GB/s"}
    for precision in table.index:
        values[f"decode tokens/s {precision}"] = float(table.loc[precision, "decode tokens/s"])
        values[f"weights GB {precision}"] = float(table.loc[precision, "weights GB measured"])
        values[f"perplexity ratio {precision}"] = float(ratio[precision])
        values[f"% of roofline {precision}"] = float(speed.loc[precision, "% of roofline"])
        units.update({f"decode tokens/s {precision}": "tokens/s", f"weights GB {precision}": "GB", f"% of roofline {precision}": "%"})
    return values, units
