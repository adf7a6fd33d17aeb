"""Lab 03's tests of the source articles' fine-tuning claims (C9-C12)."""
from __future__ import annotations

from ..catalog import get_model
from ..ledger import verdict_from_fit
from .lora import full_finetune_memory
from ..hardware import USABLE_VRAM, gpu_specs

FULL_FLOPS_PER_TOKEN = 6  # x parameters: forward 2N, backward 4N (activation and weight gradients)
LORA_FLOPS_PER_TOKEN = 4  # x parameters: forward 2N, activation gradients 2N; adapter gradients are tiny


def check_c9(spec, trainable: int) -> dict:
    """C9: LoRA cuts fine-tuning compute about 90% while keeping quality."""
    memory = full_finetune_memory(spec).loc["total"]
    compute_cut = 1 - LORA_FLOPS_PER_TOKEN / FULL_FLOPS_PER_TOKEN
    memory_cut = 1 - memory["LoRA r=16 (bf16 base)"] / memory["full fine-tuning"]
    share = trainable / spec.parameter_count()
    evidence = (f"{spec.key}: LoRA trains {share:.2%} of the parameters; per-token compute about {LORA_FLOPS_PER_TOKEN}N vs "
                f"{FULL_FLOPS_PER_TOKEN}N FLOPs ({compute_cut:.0%} less: the frozen base still runs forward and backward); "
                f"training memory {memory_cut:.0%} less (no gradients or Adam state for frozen weights)")
    verdict = ("does not hold for compute, which falls by about a third; it holds for trained parameters and memory"
               if compute_cut < 0.8 else "holds")
    return {"verdict": verdict, "evidence": evidence, "compute_cut": compute_cut, "memory_cut": memory_cut}


def check_c10(activations_gb: float | None = None) -> dict:
    """C10: one A100 can fine-tune a 70B model with QLoRA."""
    spec = get_model("llama3-70b")
    qlora = full_finetune_memory(spec).loc["total", "QLoRA r=16 (NF4 base)"]
    if activations_gb is None:  # gradient checkpointing: one hidden state per layer, batch 1 x 2048 tokens, bf16
        activations_gb = spec.layers * 2048 * spec.hidden * 2 / 1e9
    need = qlora + activations_gb
    cards = {name: gpu_specs()[name]["vram_gb"] * USABLE_VRAM for name in ("A100-40GB", "A100-80GB")}
    fits = [name for name, usable in cards.items() if need <= usable]
    evidence = (f"Llama 3 70B QLoRA: NF4 weights + adapters + optimizer {qlora:.1f} GB + checkpointed activations "
                f"{activations_gb:.1f} GB = {need:.1f} GB; usable: " + ", ".join(f"{k} {v:.0f} GB" for k, v in cards.items()))
    verdict = verdict_from_fit(len(fits) == len(cards), bool(fits), f"the A100 has 80 GB ({', '.join(fits)}); a 40 GB A100 is too small")
    return {"verdict": verdict, "evidence": evidence, "need_gb": need}


def check_c11(result, spec, rows: int, epochs: int = 3, corpus_tokens: float = 50e6) -> dict:
    """C11: a developer can fine-tune Mistral/LLaMA on one high-end GPU in hours to days."""
    mistral = get_model("mistral-7b")
    tokens_per_row = result.tokens_seen / max(result.examples_seen, 1)
    task_tokens = rows * tokens_per_row * epochs
    h100 = gpu_specs()["H100"]["bf16_tflops"] * 1e12 * 0.35
    task_minutes = LORA_FLOPS_PER_TOKEN * mistral.parameter_count() * task_tokens / h100 / 60
    corpus_hours = LORA_FLOPS_PER_TOKEN * mistral.parameter_count() * corpus_tokens / h100 / 3600
    measured = result.tokens_per_s * spec.parameter_count() * LORA_FLOPS_PER_TOKEN / 1e12
    evidence = (f"measured here: {result.tokens_per_s:.0f} tokens/s on {spec.key} ({measured:.2f} TFLOP/s effective); "
                f"Mistral 7B LoRA on one H100 at 35% of peak: this task ({rows} rows x {epochs} epochs) about {task_minutes:.0f} min, "
                f"a {corpus_tokens / 1e6:.0f}M-token corpus about {corpus_hours:.1f} h")
    verdict = "holds" if corpus_hours < 24 * 7 else "holds only if the corpus is small"
    verdict += ": hours for a large corpus, minutes for a task this size"
    return {"verdict": verdict, "evidence": evidence, "task_minutes": task_minutes, "corpus_hours": corpus_hours}


def check_c12(zero_shot, few_shot, after, plan) -> dict:
    """C12: a fine-tuned small open model can beat much larger general models on a narrow domain."""
    evidence = (f"{plan.model} exact match: zero-shot {zero_shot.loc['exact match', 'rate']:.0%}, few-shot "
                f"{few_shot.loc['exact match', 'rate']:.0%}, after LoRA {after.loc['exact match', 'rate']:.0%} "
                f"(95% interval {after.loc['exact match', 'low']:.0%}-{after.loc['exact match', 'high']:.0%}); "
                "no larger general model was run in this lab")
    verdict = "cannot tell yet: the tuned model beats its own untuned self; Lab 04 compares it with a larger general model"
    return {"verdict": verdict, "evidence": evidence}
