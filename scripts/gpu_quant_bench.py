"""Lab 02 on a GPU: memory and speed of a 7-8B model at bf16 / int8 / NF4, from random weights.

Speed and memory do not depend on weight values, so a model built from a real config with random
weights measures what the real one would (quality does not: that is measured on CPU with the
embedded model). Writes one row per precision to datasets/results/gpu_quantization.csv.

    python scripts/gpu_quant_bench.py --model qwen2.5-7b            # on a GPU machine
    python scripts/gpu_quant_bench.py --model smollm2-135m --device cpu --precisions fp32 nf4   # smoke test
"""
from __future__ import annotations

import argparse
import csv
import datetime as dt
import gc
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from helpers.catalog import estimate_memory  # noqa: E402
from helpers.random_models import build_random  # noqa: E402


def measure(folder: Path, key: str, precision: str, device: str, prompt_tokens: int, new_tokens: int) -> dict:
    import torch
    from transformers import AutoModelForCausalLM

    from helpers.models import TORCH_DTYPES, quantization_config

    kwargs = {"device_map": device}
    if precision in TORCH_DTYPES:
        kwargs["dtype"] = getattr(torch, TORCH_DTYPES[precision])
    else:
        compute = "bfloat16" if device == "cpu" or torch.cuda.is_bf16_supported() else "float16"
        kwargs["quantization_config"] = quantization_config(precision, compute)
        kwargs["dtype"] = getattr(torch, compute)
    if device == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    model = AutoModelForCausalLM.from_pretrained(folder, **kwargs).eval()
    load_s = time.perf_counter() - start
    weights_gb = model.get_memory_footprint() / 1e9
    ids = torch.randint(0, model.config.vocab_size, (1, prompt_tokens), device=model.device)

    def run(n):
        if device == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        with torch.no_grad():
            model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, min_new_tokens=n, do_sample=False)
        if device == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - t

    run(2)
    first = run(1)
    total = run(new_tokens)
    peak = torch.cuda.max_memory_allocated() / 1e9 if device == "cuda" else float("nan")
    name = torch.cuda.get_device_name(0) if device == "cuda" else "cpu"
    predicted = estimate_memory(key, precision, prompt_tokens + new_tokens, 1, device=device)
    gc.collect()
    return {"hardware": name, "model": key, "precision": precision, "load_s": round(load_s, 2), "weights_gb_measured": round(weights_gb, 3),
            "weights_gb_predicted": round(predicted.weights_gb, 3), "peak_allocated_gb": round(peak, 3),
            "time_to_first_token_s": round(first, 4), "decode_tokens_per_s": round((new_tokens - 1) / max(total - first, 1e-9), 2),
            "prompt_tokens": prompt_tokens, "new_tokens": new_tokens, "date": dt.date.today().isoformat(),
            "source": "scripts/gpu_quant_bench.py (random weights from the model's real config)"}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="qwen2.5-7b")
    parser.add_argument("--precisions", nargs="+", default=["bf16", "int8", "nf4"])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--prompt-tokens", type=int, default=512)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--out", default=str(ROOT / "datasets" / "results" / "gpu_quantization.csv"))
    args = parser.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        build_random(args.model, Path(tmp))
        for precision in args.precisions:
            row = measure(Path(tmp), args.model, precision, args.device, args.prompt_tokens, args.new_tokens)
            print(row, flush=True)
            rows.append(row)
    baseline = rows[0]["decode_tokens_per_s"]
    for row in rows:
        print(f"{row['precision']:>6}: {row['decode_tokens_per_s']:8.1f} tokens/s ({row['decode_tokens_per_s'] / baseline:.2f}x {rows[0]['precision']}), "
              f"weights {row['weights_gb_measured']:.2f} GB (predicted {row['weights_gb_predicted']:.2f})")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    existing = list(csv.DictReader(open(out))) if out.exists() else []
    existing = [r for r in existing if not (r["hardware"] == rows[0]["hardware"] and r["model"] == args.model)]
    with open(out, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(existing + rows)
    print(f"written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
