"""Lab 03 on a GPU: QLoRA training throughput of the kit's path vs plain transformers + peft.

Random weights from a real 7-8B config (throughput and memory do not depend on weight values),
the support-desk training rows as data, the same LoRA config, rows and learning rate, side by side
in one process:

- baseline: what plain transformers + peft do with their defaults: SDPA attention, rows in random
  order, each batch padded to its longest row, ``--batch-size`` rows a step, no autocast (the
  Trainer's default; the 4-bit layers compute in the plan's 16-bit dtype);
- kit:      ``helpers.finetune.train`` exactly as Lab 03 calls it, with the choices the plan makes for
  this GPU (``finetune.training_choices``: padding-free packed rows, each step filled to the tokens
  the plan budgets for a padded batch of ``--batch-size`` rows, autocast in the plan's dtype);
- where liger-kernel is installed, the kit path both without and with its Liger kernels (the plan's
  choice), to show what each brings.

A short untimed run comes first, so neither side pays the process's first CUDA/cuBLAS set-up.
Throughput counts real (non-padding) tokens per second after two warm-up steps; peak memory is
``torch.cuda.max_memory_allocated``. Rows replace earlier rows of the same GPU and model in datasets/results/gpu_qlora.csv.

    python scripts/gpu_qlora_bench.py --model qwen2.5-7b --steps 16     # on a GPU
    python scripts/gpu_qlora_bench.py --model smollm2-135m --device cpu --steps 4 --batch-size 2   # smoke test
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import gc
import json
import random
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
import _kit_path  # noqa: E402,F401  (the kit's helpers, without the repo root's datasets/ on sys.path)

from helpers import finetune as ft  # noqa: E402
from helpers.random_models import build_random  # noqa: E402

WARMUP_STEPS = 2


def load(folder: Path, plan, device: str):
    from helpers.models import load_model

    model, _ = load_model(str(folder), precision=plan.precision, device=device, compute_dtype=plan.compute_dtype)
    return model


def baseline(folder: Path, tokenizer, rows, plan, args, steps: int | None = None) -> dict:
    """Plain transformers + peft: padded batches of random rows, a hand-written AdamW loop."""
    import torch

    model = ft.add_lora(load(folder, plan, args.device), ft.lora_config(r=16, alpha=32, dropout=0.05))
    model.config.use_cache = False
    examples = [ft.format_example(tokenizer, row) for row in rows]
    order = list(range(len(examples)))
    random.Random(0).shuffle(order)
    batches = [order[i:i + args.batch_size] for i in range(0, (steps or args.steps) * args.batch_size, args.batch_size)]
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=2e-4)
    model.train()
    sync(args.device, reset=True)
    times, tokens = [], []
    for batch in batches:
        start = time.perf_counter()
        items = [examples[i] for i in batch]
        tensors = {k: v.to(model.device) for k, v in ft.collate(items, tokenizer.pad_token_id).items()}
        loss = model(**tensors).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        sync(args.device)
        times.append(time.perf_counter() - start)
        tokens.append(sum(len(item["input_ids"]) for item in items))
    padded = sum(len(batch) * max(len(examples[i]["input_ids"]) for i in batch) for batch in batches)
    row = summary("plain transformers + peft (SDPA, random order, padded)", times, tokens, args, plan,
                  {"packing": False, "liger": False, "rows_per_step": args.batch_size, "padding_share": round(1 - sum(tokens) / padded, 3)})
    free(model, optimizer)
    return row


def kit(folder: Path, tokenizer, rows, plan, args, liger: bool, autocast: bool = False, steps: int | None = None) -> dict:
    model = ft.add_lora(load(folder, plan, args.device), ft.lora_config(r=16, alpha=32, dropout=0.05))
    longest = max(len(ft.format_example(tokenizer, r)["input_ids"]) for r in rows)
    mixed = {"bfloat16": "bf16", "float16": "fp16"}.get(plan.compute_dtype, "no") if autocast else "no"
    choices = dataclasses.replace(ft.training_choices(plan, longest), liger=liger, mixed_precision=mixed)
    print(f"kit choices: {choices}", flush=True)
    result = ft.train(model, tokenizer, rows, steps=steps or args.steps, batch_size=args.batch_size, learning_rate=2e-4,
                      progress=False, choices=choices)
    name = "kit: finetune.train (packing" + (", Liger" if result.choices["liger"] else "") + (", autocast" if mixed != "no" else "") + ")"
    row = summary(name, result.step_seconds, result.step_tokens, args, plan,
                  {"packing": True, "liger": result.choices["liger"], "token_budget": result.choices["token_budget"],
                   "rows_per_step": round(result.examples_seen / result.steps, 1), "padding_share": 0.0},
                  peak=result.peak_memory_gb)
    free(model)
    return row


def sync(device: str, reset: bool = False) -> None:
    import torch

    if device == "cuda":
        torch.cuda.synchronize()
        if reset:
            torch.cuda.reset_peak_memory_stats()


def free(*objects) -> None:
    import torch

    del objects
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def summary(name, times, tokens, args, plan, extra, peak=None) -> dict:
    import torch

    steady = sum(tokens[WARMUP_STEPS:]) / max(sum(times[WARMUP_STEPS:]), 1e-9)
    if peak is None:
        peak = torch.cuda.max_memory_allocated() / 1e9 if args.device == "cuda" else ft.peak_memory_gb("cpu")
    hardware = torch.cuda.get_device_name(0) if args.device == "cuda" else "cpu"
    return {"variant": name, "hardware": hardware, "model": args.model, "precision": plan.precision, "compute_dtype": plan.compute_dtype,
            "steps": len(times), "tokens_per_s": round(steady, 1), "peak_memory_gb": round(peak, 2), **extra,
            "date": dt.date.today().isoformat(), "source": "scripts/gpu_qlora_bench.py (random weights from the model's real config)"}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="qwen2.5-7b")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--steps", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=None, help="rows a step (default: the plan's batch)")
    parser.add_argument("--tokenizer", default=None, help="a folder with tokenizer files (default: the embedded model's)")
    parser.add_argument("--out", default=str(ROOT / "datasets" / "results" / "gpu_qlora.csv"))
    args = parser.parse_args(argv)
    from transformers import AutoTokenizer

    from helpers.models import ensure_embedded
    from helpers.plan import plan as make_plan

    tier = "" if args.device == "cuda" else ",tier=cpu"
    plan = make_plan("03", override=f"model={args.model},precision=nf4{tier}")
    args.batch_size = args.batch_size or plan.batch
    tokenizer = AutoTokenizer.from_pretrained(args.tokenizer or ensure_embedded())  # any chat tokenizer works with random weights
    rows = ft.load_tickets("train")
    with tempfile.TemporaryDirectory() as tmp:
        build_random(args.model, Path(tmp), vocab_size=len(tokenizer), device=args.device)
        tokenizer.save_pretrained(tmp)
        baseline(Path(tmp), tokenizer, rows, plan, args, steps=3)  # untimed: the process's first CUDA set-up
        results = [baseline(Path(tmp), tokenizer, rows, plan, args)]
        import importlib.util

        if importlib.util.find_spec("liger_kernel"):
            results.append(kit(Path(tmp), tokenizer, rows, plan, args, liger=False))
            # Liger patches RoPE for the whole module, so its rows come last; an untimed run compiles its kernels
            kit(Path(tmp), tokenizer, rows, plan, args, liger=True, steps=3)
            results.append(kit(Path(tmp), tokenizer, rows, plan, args, liger=True))
            results.append(kit(Path(tmp), tokenizer, rows, plan, args, liger=True, autocast=True))
        else:
            results.append(kit(Path(tmp), tokenizer, rows, plan, args, liger=False))
    base = results[0]["tokens_per_s"]
    for row in results:
        row["ratio_to_baseline"] = round(row["tokens_per_s"] / base, 3)
        print(f"{row['variant']:<58} {row['tokens_per_s']:9.1f} tokens/s  {row['ratio_to_baseline']:.2f}x  peak {row['peak_memory_gb']:.1f} GB")
    print(json.dumps(results))
    from helpers.data import write_results

    out = write_results(args.out, results)
    print(f"written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
