"""Benchmark (not a test): decode tokens/s of the embedded model at batch 1 per engine and precision, side by side,
with the bytes each reads per token, its own roofline, and where the lean loop's time per token goes.

Engines: transformers at each precision (dynamic cache) and fp32 with a static cache (Lab 04's in-process engines);
the kit's lean decode loop (``helpers.bench.lean``) reading fp32, dynamic int8, 4-bit and "auto" weights (per
projection the faster of int8 and 4-bit on this CPU, measured when it is built); llama.cpp on the same GGUF file
where llama-cpp-python is installed.

    python scripts/bench_decode.py [--new-tokens 64] [--repeats 3] [--lean-only] [--fidelity-prompts 8] [--compile]

Every engine is loaded first, then the engines take turns, one run each per round, so a machine that speeds up or
slows down during the run (a shared CPU does) moves all of them alike; each figure is the median over the rounds,
and the ratios to fp32 and to llama.cpp are medians of same-round ratios. Then, per lean engine: a breakdown of one
decode step (each projection over every layer, attention, the rest) and its fidelity to the fp32 model on the
desk's test tickets. ``--compile`` adds bf16 with a static cache compiled by torch.compile (about 5 min of
compilation on a 2-core CPU before the first timed token).
"""
from __future__ import annotations

import argparse
import json
import sys
import warnings
from datetime import date
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from helpers import paths  # noqa: E402
from helpers.bench.decode import LLAMA_CPP, gguf_bytes_per_token, ladder_table, same_rounds  # noqa: E402
from helpers.bench.engines import InProcessEngine, LlamaCppEngine  # noqa: E402
from helpers.bench.lean import LeanEngine, fidelity, format_breakdown, reference_replies, step_breakdown  # noqa: E402
from helpers.errors import InputError  # noqa: E402
from helpers.hardware import cpu_description  # noqa: E402
from helpers.models import embedded_gguf_path, load_model, weights_bytes  # noqa: E402
from helpers.quantize.measure import CPU_PRECISIONS, decode_speed, llama_cpp_available, measure_memory_bandwidth  # noqa: E402

PROMPT = "Write a short note to a customer about a delayed parcel."
LEAN = ("fp32", "int8", "int8w", "int4", "auto")


def engines(precisions: list[str], new_tokens: int, compile_bf16: bool, lean_only: bool) -> tuple[dict, dict, dict, object]:
    """(label -> a function that runs once and returns decode tokens/s, label -> bytes read per token,
    label -> the lean engine behind it, the llama.cpp engine or None), each engine warmed up once here."""
    timed, per_token, lean, llama = {}, {}, {}, None

    def engine_speed(engine):
        engine.run(PROMPT, new_tokens)  # warm-up at the timed length: caches allocated (and compiled) once
        return lambda: 1 / engine.run(PROMPT, new_tokens).tpot

    for precision in (["fp32"] if lean_only else precisions):
        model, tokenizer = load_model("smollm2-135m", precision=precision, device="cpu")
        if not lean_only:
            timed[f"transformers {precision}"] = (lambda m=model, t=tokenizer: decode_speed(m, t, new_tokens=new_tokens).decode_tokens_per_s)
            per_token[f"transformers {precision}"] = weights_bytes(model)
        if precision == "fp32":  # Lab 04's other in-process engine and the lean loop, on the same weights
            if not lean_only:
                timed["transformers fp32 static cache"] = engine_speed(InProcessEngine(model, tokenizer, cache="static"))
                per_token["transformers fp32 static cache"] = weights_bytes(model)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # torch's notice that its quantized tensor types are being retired
                for weights in LEAN:
                    try:
                        engine = LeanEngine(model, tokenizer, weights=weights)
                    except InputError as error:  # a kernel this PyTorch lacks: said, and the other rows run
                        print(f"lean loop {weights} skipped: {error.problem}")
                        continue
                    label = f"lean loop {weights}" + (f" ({'/'.join(engine.kinds[r] for r in ('qkv', 'o', 'gate_up', 'down'))})"
                                                      if weights == "auto" else "")
                    timed[label], per_token[label], lean[label] = engine_speed(engine), engine.weights_bytes(), engine
        if precision == "bf16" and compile_bf16:
            timed["transformers bf16 static + compile"] = engine_speed(InProcessEngine(model, tokenizer, cache="static", compile=True))
            per_token["transformers bf16 static + compile"] = weights_bytes(model)
    if llama_cpp_available():
        llama = LlamaCppEngine(embedded_gguf_path())
        timed[LLAMA_CPP], per_token[LLAMA_CPP] = engine_speed(llama), gguf_bytes_per_token(embedded_gguf_path())
    else:
        print("llama-cpp-python not installed: llama.cpp column skipped (pip install -e '.[llamacpp]')")
    return timed, per_token, lean, llama


def main(argv=None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--precisions", nargs="+", default=CPU_PRECISIONS)
    parser.add_argument("--lean-only", action="store_true", help="only the lean loop's precisions and llama.cpp (about a minute)")
    parser.add_argument("--fidelity-prompts", type=int, default=8, help="desk test tickets to compare each lean engine with fp32 on (0: skip)")
    parser.add_argument("--compile", action="store_true", help="also time bf16 + static cache + torch.compile (slow to compile)")
    args = parser.parse_args(argv)
    print(f"machine: {cpu_description()}; {date.today().isoformat()}; {args.new_tokens} tokens, {args.repeats} rounds")
    timed, per_token, lean, llama = engines(args.precisions, args.new_tokens, args.compile, args.lean_only)
    bandwidth = measure_memory_bandwidth()
    try:
        runs = same_rounds(timed, args.repeats)
    finally:
        if llama is not None:
            llama.close()
    table = ladder_table(runs, per_token, bandwidth, LLAMA_CPP if LLAMA_CPP in timed else None)
    base = "transformers fp32" if "transformers fp32" in timed else "lean loop fp32"
    wide = runs.pivot(index="round", columns="engine", values="tokens/s")
    table["vs fp32"] = [float((wide[label] / wide[base]).median()) for label in table.index]
    print(f"\nbatch-1 decode; roofline = {bandwidth:.1f} GB/s (copy bandwidth measured now) / each engine's own bytes per token")
    print(table.round(2).to_string())
    for label, engine in lean.items():
        if engine.weights != "fp32":
            print("\n" + format_breakdown(step_breakdown(engine), f"{label}: one decode step at 64 cached tokens"))
    if args.fidelity_prompts:
        tickets = [json.loads(line)["message"] for line in paths.dataset("support_desk/test.jsonl").read_text().splitlines()[:args.fidelity_prompts]]
        reference = reference_replies(next(iter(lean.values())).model, next(iter(lean.values())).tokenizer, tickets)
        print(f"\nfidelity to the fp32 model on {len(tickets)} desk test tickets (16-token greedy replies)")
        for label, engine in lean.items():
            check = fidelity(engine, reference)
            print(f"  {label:<36} max logit gap {check['max logit gap']:6.2f}  top-1 agreement {check['top-1 agreement']:5.1%}  "
                  f"same greedy reply {check['same greedy reply']:4.0%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
