"""Lab 02's tests of the source articles' hardware claims (C6, C7, C8), from the catalog, the
spec table and the learner's own measurements."""
from __future__ import annotations

from ..catalog import catalog, estimate_memory
from ..ledger import verdict_from_fit
from ..hardware import USABLE_VRAM, gpu_specs, roofline_tokens_per_s
from .measure import gpus_to_fit, memory_saving


def check_c6(context: int = 8192, your_largest_on_l4: str | None = None) -> dict:
    """C6: 8B models run on a single A100; 70B needs 4-8 GPUs.

    ``your_largest_on_l4``: the learner's exercise 2 (the largest catalog model on one 24 GB L4 in int8);
    when it is 8B or bigger, an A100 is more than an 8B model needs, and the verdict says so."""
    small = {gpu: gpus_to_fit("llama3.1-8b", "bf16", gpu, context) for gpu in ("A100-40GB", "A100-80GB")}
    big = {(gpu, p): gpus_to_fit("llama3-70b", p, gpu, context) for gpu in ("A100-40GB", "A100-80GB") for p in ("bf16", "int8", "nf4")}
    evidence = (f"at {context} tokens of context: Llama 3.1 8B bf16 needs {small['A100-40GB']} x A100-40GB / {small['A100-80GB']} x A100-80GB; "
                "Llama 3 70B needs " + ", ".join(f"{n} x {g} in {p}" for (g, p), n in big.items()))
    eight_ok = max(small.values()) == 1
    seventy_in_range = [k for k, n in big.items() if 4 <= n <= 8]
    if eight_ok and seventy_in_range and all(4 <= n <= 8 for k, n in big.items() if k[1] == "bf16"):
        verdict = "holds"
    elif eight_ok:
        verdict = ("holds only if 70B runs in bf16 on 40 GB cards: on 80 GB A100s it needs "
                   f"{big[('A100-80GB', 'bf16')]} in bf16 and {big[('A100-80GB', 'nf4')]} in 4-bit (more for long contexts and batches)")
    else:
        verdict = "does not hold"
    if your_largest_on_l4 is not None:
        from ..catalog import get_model
        from ..errors import KitError

        try:
            billions = get_model(your_largest_on_l4).parameter_count() / 1e9
        except KitError:
            return {"verdict": verdict, "evidence": evidence + f"; your exercise 2 answer {your_largest_on_l4!r} is not a catalog key",
                    "counts": {**{("llama3.1-8b", g): n for g, n in small.items()}, **big}}
        evidence += f"; your exercise 2: the largest catalog model on one 24 GB L4 in int8 is {your_largest_on_l4} ({billions:.1f}B)"
        if billions >= 7.5 and verdict != "does not hold":
            verdict += "; an A100 is more than an 8B model needs: a 24 GB L4 holds one in int8 (your exercise 2)"
    else:
        evidence += "; finish exercise 2 (until its check passes) to test the claim on a smaller card"
    return {"verdict": verdict, "evidence": evidence, "counts": {**{("llama3.1-8b", g): n for g, n in small.items()}, **big}}


def check_c7(measured=None) -> dict:
    """C7: quantization cuts memory 50-75% with little quality loss.

    ``measured``: the Lab 02 profile table (perplexity ratio per precision), if available.
    """
    int8 = [memory_saving(key, "int8") for key in catalog()]
    nf4 = [memory_saving(key, "nf4") for key in catalog()]
    evidence = (f"weights saved vs bf16 across the catalog: int8 {min(int8):.0%}-{max(int8):.0%}, NF4 {min(nf4):.0%}-{max(nf4):.0%} "
                "(bitsandbytes, not AWQ/GPTQ, but the same bit widths)")
    verdict = "holds" if min(int8) >= 0.4 and max(nf4) <= 0.8 else "does not hold"
    if measured is not None:
        column = next(c for c in measured.columns if c.startswith("perplexity vs"))
        ratios = {p: measured.loc[p, column] for p in measured.index if p in ("int8", "nf4", "fp4")}
        evidence += "; measured perplexity vs full precision: " + ", ".join(f"{p} {r:.2f}x" for p, r in ratios.items())
        if any(r > 1.10 for r in ratios.values()):
            worst = max(ratios, key=ratios.get)
            # the verdict names the threshold, not the measured digits (those vary with the CPU's kernels
            # and stay in the evidence), so it reads the same on every machine
            verdict = f"holds only if the model is large enough or the precision 8-bit: {worst} costs more than 10% perplexity on this model"
    return {"verdict": verdict, "evidence": evidence, "int8": (min(int8), max(int8)), "nf4": (min(nf4), max(nf4))}


def check_c8(context: int = 4096, vram_gb: float = 16.0, your_load_gb: float | None = None) -> dict:
    """C8: Mistral 7B runs well on a consumer GPU with 16 GB (T4-like bandwidth used for 'well').

    ``your_load_gb``: the learner's exercise 1 (a 7B in NF4 serving 4 conversations of 8,192 tokens); when that
    load does not fit in 16 GB, "runs well" holds for one short conversation, not for a desk's load."""
    usable = vram_gb * USABLE_VRAM
    totals = {p: estimate_memory("mistral-7b", p, context, 1).total_gb for p in ("bf16", "int8", "nf4")}
    fits = [p for p, gb in totals.items() if gb <= usable]
    t4 = gpu_specs()["T4"]["bandwidth_gbps"]
    speed = {p: roofline_tokens_per_s(t4, estimate_memory("mistral-7b", p, context, 1).weights_gb * 1e9) for p in fits}
    evidence = (f"Mistral 7B at {context} tokens: " + ", ".join(f"{p} {gb:.1f} GB" for p, gb in totals.items())
                + f" vs {usable:.1f} GB usable of {vram_gb:.0f} GB; decode roofline at {t4:.0f} GB/s: "
                + ", ".join(f"{p} <= {v:.0f} tokens/s" for p, v in speed.items()))
    verdict = verdict_from_fit("bf16" in fits, bool(fits), f"quantized ({' or '.join(fits)}): bf16 weights alone nearly fill 16 GB")
    if your_load_gb is not None:
        evidence += f"; your exercise 1: a 7B in NF4 serving 4 x 8,192 tokens needs {your_load_gb:.1f} GB"
        if your_load_gb > usable and fits:
            verdict += f", and for one conversation at a time: 4 x 8,192 tokens needs more than {usable:.1f} GB (your exercise 1)"
    else:
        evidence += "; finish exercise 1 (until its check passes) to test it at a support desk's load"
    return {"verdict": verdict, "evidence": evidence, "totals": totals}
