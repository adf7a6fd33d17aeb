"""Benchmark (not a test): decode tokens/s of the embedded model at batch 1 per engine and precision,
side by side: transformers at each precision (dynamic cache), transformers fp32 with a static cache
(Lab 04's in-process engines), the kit's lean decode loop on the fp32 weights and with dynamic int8 linears
(``helpers.bench.lean``), and llama.cpp on the same GGUF file where llama-cpp-python is installed.

    python scripts/bench_decode.py [--new-tokens 64] [--repeats 3] [--compile]

Every engine is loaded first, then the engines take turns, one run each per round, so a machine that
speeds up or slows down during the run (a shared CPU does) moves all of them alike; each figure is the
median over the rounds, and the ratios to fp32 and to llama.cpp are medians of same-round ratios.
``--compile`` adds bf16 with a static cache compiled by torch.compile (about 5 min of compilation on a
2-core CPU before the first timed token).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from helpers.bench.engines import InProcessEngine  # noqa: E402
from helpers.bench.lean import LeanEngine  # noqa: E402
from helpers.models import load_model  # noqa: E402
from helpers.quantize.measure import CPU_PRECISIONS, decode_speed, llama_cpp_available, llama_cpp_decode  # noqa: E402

PROMPT = "Write a short note to a customer about a delayed parcel."


def engines(precisions: list[str], new_tokens: int, compile_bf16: bool) -> dict:
    """Label -> a function that runs once and returns decode tokens/s (each warmed up once here)."""
    timed = {}

    def engine_speed(engine):
        engine.run(PROMPT, new_tokens)  # warm-up at the timed length: caches allocated (and compiled) once
        return lambda: 1 / engine.run(PROMPT, new_tokens).tpot

    for precision in precisions:
        model, tokenizer = load_model("smollm2-135m", precision=precision, device="cpu")
        timed[f"transformers {precision}"] = (lambda m=model, t=tokenizer: decode_speed(m, t, new_tokens=new_tokens).decode_tokens_per_s)
        if precision == "fp32":  # Lab 04's other in-process engine and the lean loop, on the same weights
            timed["transformers fp32 static cache"] = engine_speed(InProcessEngine(model, tokenizer, cache="static"))
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # torch's notice that its quantized tensor types are being retired
                for weights in ("fp32", "int8"):
                    timed[f"lean loop {weights}"] = engine_speed(LeanEngine(model, tokenizer, weights=weights))
        if precision == "bf16" and compile_bf16:
            timed["transformers bf16 static + compile"] = engine_speed(InProcessEngine(model, tokenizer, cache="static", compile=True))
    if llama_cpp_available():
        timed["llama.cpp gguf-q4_1"] = lambda: llama_cpp_decode(new_tokens=new_tokens)["decode tokens/s"]
    else:
        print("llama-cpp-python not installed: llama.cpp column skipped (pip install -e '.[llamacpp]')")
    return timed


def main(argv=None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--precisions", nargs="+", default=CPU_PRECISIONS + ["gguf"])
    parser.add_argument("--compile", action="store_true", help="also time bf16 + static cache + torch.compile (slow to compile)")
    args = parser.parse_args(argv)
    timed = engines(args.precisions, args.new_tokens, args.compile)
    rounds = [{label: run() for label, run in timed.items()} for _ in range(args.repeats)]
    base, ref = "transformers fp32", "llama.cpp gguf-q4_1"
    base = base if base in timed else next(iter(timed))
    print(f"{'engine / precision':<36}{'tokens/s':>10}{'vs fp32':>10}" + (f"{'vs llama.cpp':>14}" if ref in timed else ""))
    for label in timed:
        line = f"{label:<36}{statistics.median(r[label] for r in rounds):>10.1f}"
        line += f"{statistics.median(r[label] / r[base] for r in rounds):>9.2f}x"
        if ref in timed:
            line += f"{statistics.median(r[label] / r[ref] for r in rounds):>13.2f}x"
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
