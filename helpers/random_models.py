"""Random-weight models built from real configs, for GPU benchmarks without a model hub.

Speed and memory do not depend on weight values, so a checkpoint with the catalog model's exact
architecture and random weights measures what the real one would (quality does not: that is
measured with the embedded model). Used by scripts/gpu_quant_bench.py and scripts/gpu_qlora_bench.py.
"""
from __future__ import annotations

import gc
from pathlib import Path

from .catalog import get_model
from .errors import InputError

CONFIG_CLASS = {"smollm2": "LlamaConfig", "llama": "LlamaConfig", "qwen2.5": "Qwen2Config", "mistral": "MistralConfig"}


def config_for(key: str, vocab_size: int | None = None):
    """A transformers config with the catalog model's architecture (``vocab_size`` may only grow it)."""
    import transformers

    spec = get_model(key)
    family = next((f for f in CONFIG_CLASS if key.startswith(f)), None)
    if family is None:
        raise InputError(f"no config recipe for {key!r}", fix=f"use a model of these families: {', '.join(CONFIG_CLASS)}")
    cls = getattr(transformers, CONFIG_CLASS[family])
    return cls(vocab_size=max(spec.vocab, vocab_size or 0), hidden_size=spec.hidden, intermediate_size=spec.intermediate,
               num_hidden_layers=spec.layers, num_attention_heads=spec.heads, num_key_value_heads=spec.kv_heads,
               head_dim=spec.head_dim, max_position_embeddings=spec.context, tie_word_embeddings=spec.tied_embeddings)


def build_random(key: str, folder: Path, vocab_size: int | None = None, seed: int = 0, device: str | None = None) -> Path:
    """Save a random-weight bf16 checkpoint of catalog model ``key`` in ``folder``; returns the folder.

    The model is created on PyTorch's meta device (shapes only, no memory, no slow initialisers),
    materialised on ``device`` (default: the GPU when there is one) and filled with normal(0, 0.02)
    noise there: a 7B takes about 20 s on an H100, where initialising it on the CPU took over 5 min.
    """
    import time

    import torch
    from transformers import AutoModelForCausalLM

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    start = time.perf_counter()
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config_for(key, vocab_size), dtype=torch.bfloat16)
    model = model.to_empty(device=device)
    generator = torch.Generator(device=device).manual_seed(seed)
    with torch.no_grad():
        for tensor in model.parameters():  # (non-persistent buffers such as rotary frequencies are not saved)
            if tensor.dim() >= 2:
                tensor.normal_(0.0, 0.02, generator=generator)
            else:
                tensor.fill_(1.0)  # norm weights
    model.tie_weights()
    model.save_pretrained(folder)
    del model
    gc.collect()
    if device == "cuda":
        torch.cuda.empty_cache()
    print(f"[random_models] {key}: random bf16 checkpoint built on {device} in {time.perf_counter() - start:.0f} s", flush=True)
    return Path(folder)
