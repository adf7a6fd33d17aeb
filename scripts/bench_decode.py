"""Benchmark (not a test): decode tokens/s of the embedded model at batch 1 per engine and precision,
side by side: transformers at each precision (dynamic cache), transformers fp32 with a static cache
(Lab 04's in-process engines), and llama.cpp on the same GGUF file where llama-cpp-python is installed,
with ratios to fp32 and to llama.cpp measured in the same run.

    python scripts/bench_decode.py [--new-tokens 64] [--repeats 3] [--compile]

``--compile`` adds bf16 with a static cache compiled by torch.compile (about 5 min of compilation on a
2-core CPU before the first timed token): the kit's fastest in-process engine measured on a CPU.
"""
from __future__ import annotations

import argparse
import gc
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from helpers.bench.engines import InProcessEngine  # noqa: E402
from helpers.models import load_model  # noqa: E402
from helpers.quantize.measure import CPU_PRECISIONS, decode_speed, llama_cpp_available, llama_cpp_decode  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--precisions", nargs="+", default=CPU_PRECISIONS + ["gguf"])
    parser.add_argument("--compile", action="store_true", help="also time bf16 + static cache + torch.compile (slow to compile)")
    args = parser.parse_args(argv)
    results = {}
    for precision in args.precisions:
        model, tokenizer = load_model("smollm2-135m", precision=precision, device="cpu")
        speeds = [decode_speed(model, tokenizer, new_tokens=args.new_tokens).decode_tokens_per_s for _ in range(args.repeats)]
        results[f"transformers {precision}"] = statistics.median(speeds)
        engines = []
        if precision == "fp32":  # Lab 04's other in-process engine, on the same weights
            engines.append(("transformers fp32 static cache", InProcessEngine(model, tokenizer, cache="static")))
        if precision == "bf16" and args.compile:
            engines.append(("transformers bf16 static + compile", InProcessEngine(model, tokenizer, cache="static", compile=True)))
        for label, engine in engines:
            for _ in range(2):  # warm-up at the timed length: the static cache is allocated (and compiled) once
                engine.run("Write a short note to a customer about a delayed parcel.", args.new_tokens)
            records = [engine.run("Write a short note to a customer about a delayed parcel.", args.new_tokens) for _ in range(args.repeats)]
            results[label] = statistics.median(1 / r.tpot for r in records if r.ok)
        del model, tokenizer
        gc.collect()
    if llama_cpp_available():
        speeds = [llama_cpp_decode(new_tokens=args.new_tokens)["decode tokens/s"] for _ in range(args.repeats)]
        results["llama.cpp gguf-q4_1"] = statistics.median(speeds)
    else:
        print("llama-cpp-python not installed: llama.cpp column skipped (pip install -e '.[llamacpp]')")
    base = results.get("transformers fp32") or next(iter(results.values()))
    ref = results.get("llama.cpp gguf-q4_1")
    print(f"{'engine / precision':<32}{'tokens/s':>10}{'vs fp32':>10}" + (f"{'vs llama.cpp':>14}" if ref else ""))
    for name, speed in results.items():
        line = f"{name:<32}{speed:>10.1f}{speed / base:>9.2f}x"
        if ref:
            line += f"{speed / ref:>13.2f}x"
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
