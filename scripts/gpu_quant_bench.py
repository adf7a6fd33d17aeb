"""Lab 02 on a GPU: memory and batch-1 decode speed of a 7-8B model at bf16 / int8 / NF4, from random weights.

Speed and memory do not depend on weight values, so a model built from a real config with random
weights (on the GPU from the meta device: seconds, not minutes) measures what the real one would
(quality does not: that is measured with the embedded model). For each precision:

- HF ``generate`` with its default (dynamic) KV cache: two warm-up calls at the timed shapes, then
  ``--repeats`` timed runs; the median is reported with the spread (min-max) over the runs;
- for the 16-bit precision also a static KV cache (transformers compiles the decode step): the
  same warm-up and repeats, at exactly the timed shapes (a static cache whose shape changes between
  calls recompiles every call).

Each row carries the roofline (datasheet bandwidth / weight bytes) and the share of it reached.
Rows replace earlier rows of the same GPU and model in datasets/results/gpu_quantization.csv.

    python scripts/gpu_quant_bench.py --model qwen2.5-7b            # on a GPU machine
    python scripts/gpu_quant_bench.py --model smollm2-135m --device cpu --precisions fp32 nf4 --repeats 1   # smoke test
"""
from __future__ import annotations

import argparse
import datetime as dt
import gc
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
import _kit_path  # noqa: E402,F401

from helpers.catalog import estimate_memory  # noqa: E402
from helpers.random_models import build_random  # noqa: E402


def measure(folder: Path, key: str, precision: str, device: str, prompt_tokens: int, new_tokens: int, repeats: int,
            cache: str = "dynamic") -> dict:
    import torch

    from helpers.hardware import detect_hardware, roofline_tokens_per_s
    from helpers.models import load_model

    if device == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    model, _ = load_model(str(folder), precision=precision, device=device)
    load_s = time.perf_counter() - start
    weights_gb = model.get_memory_footprint() / 1e9
    ids = torch.randint(0, model.config.vocab_size, (1, prompt_tokens), device=model.device)
    extra = {"cache_implementation": "static"} if cache == "static" else {}

    def run(n):
        if device == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        with torch.no_grad():
            model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, min_new_tokens=n, do_sample=False, **extra)
        if device == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - t

    warm = time.perf_counter()
    for _ in range(2):  # warm-up at exactly the timed shapes (compiles the static cache's decode step)
        run(1), run(new_tokens)
    warmup_s = time.perf_counter() - warm
    speeds, firsts = [], []
    for _ in range(repeats):
        first, total = run(1), run(new_tokens)
        firsts.append(first)
        speeds.append((new_tokens - 1) / max(total - first, 1e-9))
    hw = detect_hardware() if device == "cuda" else None
    roofline = roofline_tokens_per_s(hw.bandwidth_gbps, weights_gb * 1e9) if hw and hw.bandwidth_gbps else float("nan")
    peak = torch.cuda.max_memory_allocated() / 1e9 if device == "cuda" else float("nan")
    name = hw.name if hw else "cpu"
    predicted = estimate_memory(key, precision, prompt_tokens + new_tokens, 1, device=device)
    median = statistics.median(speeds)
    del model
    gc.collect()
    return {"hardware": name, "model": key, "precision": precision, "cache": cache, "load_s": round(load_s, 2),
            "weights_gb_measured": round(weights_gb, 3), "weights_gb_predicted": round(predicted.weights_gb, 3),
            "peak_allocated_gb": round(peak, 3), "time_to_first_token_s": round(statistics.median(firsts), 4),
            "decode_tokens_per_s": round(median, 2), "decode_min": round(min(speeds), 2), "decode_max": round(max(speeds), 2),
            "repeats": repeats, "warmup_s": round(warmup_s, 1), "roofline_tokens_per_s": round(roofline, 1),
            "pct_of_roofline": round(100 * median / roofline, 1) if roofline == roofline else float("nan"),
            "prompt_tokens": prompt_tokens, "new_tokens": new_tokens, "date": dt.date.today().isoformat(),
            "source": "scripts/gpu_quant_bench.py (random weights from the model's real config)"}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="qwen2.5-7b")
    parser.add_argument("--precisions", nargs="+", default=None, help="default: the 16-bit type of this GPU, int8, nf4")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--prompt-tokens", type=int, default=512)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-static", action="store_true", help="skip the static-cache row")
    parser.add_argument("--out", default=str(ROOT / "datasets" / "results" / "gpu_quantization.csv"))
    args = parser.parse_args(argv)
    from helpers.hardware import detect_hardware, half_dtype

    half = {"bfloat16": "bf16", "float16": "fp16"}[half_dtype(detect_hardware())] if args.device == "cuda" else "fp32"
    precisions = args.precisions or [half, "int8", "nf4"]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        build_random(args.model, Path(tmp), device=args.device)
        from helpers.models import ensure_embedded  # tokenizer files so the folder loads like any checkpoint

        try:
            from transformers import AutoTokenizer

            AutoTokenizer.from_pretrained(ensure_embedded()).save_pretrained(tmp)
        except Exception as error:  # noqa: BLE001 - the GPU machine may lack the embedded model
            print(f"no embedded tokenizer ({error}); pass a tokenizer folder via OTS_STAND_IN_EMBEDDED")
            raise
        for precision in precisions:
            caches = ["dynamic"] + (["static"] if precision == half and not args.no_static else [])
            for cache in caches:
                row = measure(Path(tmp), args.model, precision, args.device, args.prompt_tokens, args.new_tokens, args.repeats, cache)
                print(row, flush=True)
                rows.append(row)
    baseline = rows[0]["decode_tokens_per_s"]
    for row in rows:
        print(f"{row['precision']:>6} {row['cache']:>7} cache: {row['decode_tokens_per_s']:8.1f} tokens/s "
              f"(runs {row['decode_min']:.1f}-{row['decode_max']:.1f}; {row['decode_tokens_per_s'] / baseline:.2f}x {rows[0]['precision']}), "
              f"{row['pct_of_roofline']}% of roofline, weights {row['weights_gb_measured']:.2f} GB (predicted {row['weights_gb_predicted']:.2f})")
    from helpers.data import write_results

    out = write_results(args.out, rows)
    print(f"written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
