"""Lab 03's yardstick for LoRA: full fine-tuning of the same top layers (their own weights, no adapters).

C9 says LoRA keeps full fine-tuning's quality at a fraction of its compute. On the CPU tier both fit: the same rows,
steps and layers, once with LoRA and once with every weight of those layers trained, scored on the same held-out rows.
The plan decides beforehand which of the two the desk deploys (``RunSettings.deploy``), so the held-out rows that judge
the deployed model were not also used to pick it.
"""
from __future__ import annotations

from pathlib import Path

from ..errors import InputError
from .lora import directory_mb, is_quantized, top_layers


def unfreeze_top_layers(model, count: int | None):
    """Full fine-tuning of the top ``count`` layers (None: every layer): their own weights train, every other
    weight (embeddings, lower layers, final norm, head) stays frozen. Returns ``model`` in eval mode (the Trainer
    switches it to training)."""
    if is_quantized(model) or hasattr(model, "peft_config"):
        raise InputError("full fine-tuning needs a plain 16- or 32-bit model (this one is quantized or already has adapters)",
                         fix="load a fresh copy with load_model(plan=p) and pass that")
    layers = model.model.layers
    chosen = top_layers(len(layers), count)
    for weight in model.parameters():
        weight.requires_grad = False
    for index in chosen if chosen is not None else range(len(layers)):
        for weight in layers[index].parameters():
            weight.requires_grad = True
    return model.eval()


def full_skip_reason(plan) -> str:
    """Why the plan does not run the full fine-tuning yardstick on this tier (a GPU tier's base is 4-bit)."""
    return (f"the plan skips full fine-tuning on this tier: its base model is {plan.precision}, and full fine-tuning trains "
            "16- or 32-bit weights with their gradients and Adam state (section 9's table counts them); the LoRA run above "
            "is the model the desk deploys")


def save_full(model, tokenizer, path: str | Path) -> float:
    """Save a fully fine-tuned model as a plain checkpoint (it loads like the merged LoRA export); returns MB."""
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return directory_mb(path)


def _steady_step_s(result) -> float:
    steps = result.step_seconds[2:] or result.step_seconds
    return sum(steps) / len(steps) if steps else float("nan")


def yardstick(lora_result, lora_table, full_result, full_table, lora_trainable: int, full_trainable: int,
              names: tuple[str, str] = ("LoRA", "full fine-tuning")):
    """LoRA and full fine-tuning of the same layers side by side: what each trained, its time and memory, and its
    quality on the same held-out rows (rate and 95 % interval)."""
    import pandas as pd

    rows = {}
    for name, result, table, trainable in ((names[0], lora_result, lora_table, lora_trainable),
                                            (names[1], full_result, full_table, full_trainable)):
        row = {"trained weights": int(trainable), "steps": result.steps, "training min": result.seconds / 60,
               "s per step": _steady_step_s(result)}
        for metric in ("category", "priority", "exact match"):
            row[metric] = float(table.loc[metric, "rate"])
            if metric == "category":
                row["category low"], row["category high"] = float(table.loc[metric, "low"]), float(table.loc[metric, "high"])
        row["test rows"] = int(table.loc["category", "n"])
        rows[name] = row
    return pd.DataFrame(rows).T.astype({"trained weights": int, "steps": int, "test rows": int})


def _kept(lora_low: float, lora_high: float, full_low: float, full_high: float) -> str:
    return "lost" if lora_high < full_low else "beat" if lora_low > full_high else "kept"


def quality_kept(lora_table, full_table, metric: str = "category") -> str:
    """C9's quality half on the learner's rows: "kept" when LoRA's interval reaches full fine-tuning's, "lost" when
    LoRA's whole interval is below full fine-tuning's, "beat" when it is above."""
    lora, full = lora_table.loc[metric], full_table.loc[metric]
    return _kept(lora["low"], lora["high"], full["low"], full["high"])


def yardstick_reading(table, names: tuple[str, str] = ("LoRA", "full fine-tuning")) -> str:
    """Two sentences from :func:`yardstick`'s table: quality (category, intervals) and time per step."""
    lora, full = table.loc[names[0]], table.loc[names[1]]
    said = {n: f"{r['category']:.0%} ({r['category low']:.0%}-{r['category high']:.0%})" for n, r in ((names[0], lora), (names[1], full))}
    kept = _kept(lora["category low"], lora["category high"], full["category low"], full["category high"])
    quality = {"lost": f"{names[0]} did not keep {names[1]}'s quality: its whole interval is below",
               "beat": f"{names[0]} did better than {names[1]}: its whole interval is above",
               "kept": f"{names[0]} kept {names[1]}'s quality within the intervals"}[kept]
    ratio = lora["s per step"] / full["s per step"]
    return (f"category on the same {int(full['test rows'])} held-out rows: {names[0]} {said[names[0]]}, {names[1]} "
            f"{said[names[1]]}; {quality}. A {names[0]} step took {ratio:.2f}x the time of a {names[1]} step on the same "
            f"layers ({lora['s per step']:.1f} s vs {full['s per step']:.1f} s), while it trained "
            f"{lora['trained weights'] / full['trained weights']:.1%} as many weights.")


def tuned_by(settings, depth: int, deployed: str | None = None) -> str:
    """The deployed tuned model's recipe in words, e.g. "full fine-tuning of the top 10 of 30 layers"."""
    layers = settings.lora_top_layers
    where = f"the top {layers} of {depth} layers" if layers and layers < depth else f"all {depth} layers"
    if (deployed or settings.deploy) == "full":
        return f"full fine-tuning of {where}"
    return f"LoRA adapters on {where}"
