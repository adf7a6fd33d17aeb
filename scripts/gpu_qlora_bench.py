"""Lab 03 on a GPU: QLoRA training throughput of the kit's defaults vs a plain transformers + peft baseline.

Random weights from a real 7-8B config (throughput and memory do not depend on weight values),
the support-desk training rows as data, the same LoRA config and steps for both runs, in one
process, side by side:

- baseline: eager attention, batches padded to their longest row in random order;
- kit:      SDPA attention, rows grouped by length (little padding), same everything else.

Prints tokens/s (real, non-padding tokens) and peak memory for both and the ratio, and appends
rows to datasets/results/gpu_qlora.csv.

    python scripts/gpu_qlora_bench.py --model qwen2.5-7b --steps 30          # on a GPU
    python scripts/gpu_qlora_bench.py --model smollm2-135m --device cpu --steps 2 --batch-size 2   # smoke test
"""
from __future__ import annotations

import argparse
import csv
import datetime as dt
import gc
import random
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from helpers import finetune as ft  # noqa: E402
from helpers.random_models import build_random  # noqa: E402


def run(folder: Path, tokenizer, rows, attention: str, group_by_length: bool, args) -> dict:
    import torch
    from transformers import AutoModelForCausalLM

    from helpers.models import TORCH_DTYPES, quantization_config

    kwargs = {"device_map": args.device, "attn_implementation": attention}
    if args.precision in TORCH_DTYPES:
        kwargs["dtype"] = getattr(torch, TORCH_DTYPES[args.precision])
    else:
        compute = "bfloat16" if args.device == "cpu" or torch.cuda.is_bf16_supported() else "float16"
        kwargs["quantization_config"] = quantization_config(args.precision, compute)
        kwargs["dtype"] = getattr(torch, compute)
    model = AutoModelForCausalLM.from_pretrained(folder, **kwargs)
    model = ft.add_lora(model, ft.lora_config(r=16, alpha=32, dropout=0.05), quantized=args.precision not in TORCH_DTYPES)
    examples = [ft.format_example(tokenizer, row) for row in rows]
    order = list(range(len(examples)))
    random.Random(0).shuffle(order)
    batches = [order[i:i + args.batch_size] for i in range(0, args.steps * args.batch_size, args.batch_size)]
    if group_by_length:  # the same examples, regrouped so each batch holds rows of similar length
        chosen = sorted((i for batch in batches for i in batch), key=lambda i: len(examples[i]["input_ids"]))
        batches = [chosen[i:i + args.batch_size] for i in range(0, len(chosen), args.batch_size)]
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=2e-4)
    model.train()
    if args.device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    real_tokens = 0
    start = time.perf_counter()
    for batch in batches:
        items = [examples[i] for i in batch]
        tensors = {k: v.to(model.device) for k, v in ft.collate(items, tokenizer.pad_token_id).items()}
        loss = model(**tensors).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        real_tokens += sum(len(item["input_ids"]) for item in items)
    if args.device == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated() / 1e9 if args.device == "cuda" else ft.peak_memory_gb("cpu")
    name = torch.cuda.get_device_name(0) if args.device == "cuda" else "cpu"
    del model, optimizer
    gc.collect()
    if args.device == "cuda":
        torch.cuda.empty_cache()
    return {"hardware": name, "model": args.model, "precision": args.precision, "attention": attention, "group_by_length": group_by_length,
            "steps": len(batches), "batch_size": args.batch_size, "tokens_per_s": round(real_tokens / seconds, 1),
            "peak_memory_gb": round(peak, 2), "date": dt.date.today().isoformat(),
            "source": "scripts/gpu_qlora_bench.py (random weights from the model's real config)"}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="qwen2.5-7b")
    parser.add_argument("--precision", default="nf4")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--out", default=str(ROOT / "datasets" / "results" / "gpu_qlora.csv"))
    args = parser.parse_args(argv)
    from helpers.models import ensure_embedded
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(ensure_embedded())  # any chat tokenizer works with random weights
    rows = ft.load_rows("train")
    with tempfile.TemporaryDirectory() as tmp:
        build_random(args.model, Path(tmp), vocab_size=len(tokenizer))
        baseline = run(Path(tmp), tokenizer, rows, "eager", False, args)
        kit = run(Path(tmp), tokenizer, rows, "sdpa", True, args)
    ratio = kit["tokens_per_s"] / baseline["tokens_per_s"]
    for name, row in (("baseline", baseline), ("kit", kit)):
        print(f"{name:>8}: {row['tokens_per_s']:10.1f} tokens/s, peak {row['peak_memory_gb']:.2f} GB ({row['attention']}, grouped={row['group_by_length']})")
    print(f"kit / baseline: {ratio:.2f}x")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    new = not out.exists()
    with open(out, "a", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=[*baseline, "ratio_to_baseline"])
        if new:
            writer.writeheader()
        writer.writerow({**baseline, "ratio_to_baseline": 1.0})
        writer.writerow({**kit, "ratio_to_baseline": round(ratio, 3)})
    return 0


if __name__ == "__main__":
    sys.exit(main())
