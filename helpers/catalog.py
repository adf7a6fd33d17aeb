"""The model catalog (``datasets/models.csv``) and memory you can predict before loading.

``estimate_memory(model, precision, context, batch)`` = weights + KV cache + runtime overhead,
in GB (1e9 bytes). The rules, written out so a learner can check them by hand:

- weights: the parameters of the transformer blocks' linear layers are stored at the
  precision's bytes per parameter; embeddings, norms and an untied LM head stay in the compute
  dtype (bitsandbytes quantizes ``nn.Linear`` layers only and skips ``lm_head``).
- KV cache: 2 (K and V) x layers x kv_heads x head_dim x context x batch x bytes of the
  compute dtype.
- overhead: a fixed runtime part (CUDA context on a GPU) plus the prefill activations of the
  widest layer (the MLP's two intermediate projections) for the whole batch and context.
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass
from functools import lru_cache

from .data import load_rows
from .errors import InputError, ModelNotFoundError

MODEL_NUMERIC = [
    "params_b", "layers", "hidden", "intermediate", "heads", "kv_heads", "head_dim", "vocab", "context",
    "tied_embeddings", "experts", "experts_active", "qkv_bias", "gated",
]

# bytes per parameter of a quantized linear layer, including its scales
#   int8 (LLM.int8): 1 byte + one fp32 scale per output row (negligible)
#   nf4/fp4 with double quantization: 4 bits + 8-bit absmax per 64 weights + fp32 per 256 blocks
#   nf4/fp4 without: 4 bits + fp32 absmax per 64 weights
#   GGUF Q4_1: blocks of 32 4-bit weights with an fp16 scale and an fp16 minimum = 5 bits
#   GGUF Q5_1: blocks of 32 5-bit weights (4 bits + 1 high bit each) with an fp16 scale and minimum = 6 bits
#   GGUF Q8_0: blocks of 32 int8 weights with an fp16 scale = 8.5 bits
#   GGUF Q4_0: blocks of 32 4-bit weights with an fp16 scale = 4.5 bits
#   (the 4- and 5-bit files, the kit's exports and the embedded model's shipped Q4_1 alike, keep the token
#   embedding, a tied model's output layer too, at Q8_0: GGUF_OTHER_BYTES)
LINEAR_BYTES = {
    "fp32": 4.0,
    "bf16": 2.0,
    "fp16": 2.0,
    "int8": 1.0,
    "nf4": 0.5 + (8 / 64 + 32 / (64 * 256)) / 8,
    "fp4": 0.5 + (8 / 64 + 32 / (64 * 256)) / 8,
    "nf4-nodq": 0.5 + 32 / 64 / 8,
    "gguf-q4_1": 5 / 8,
    "gguf-q5_1": 6 / 8,
    "gguf-q8_0": 8.5 / 8,
    "gguf-q4_0": 4.5 / 8,
}
# bytes per parameter outside the blocks' linear layers (embeddings, output) in a GGUF file, where not the same
GGUF_OTHER_BYTES = {"gguf-q4_0": 8.5 / 8, "gguf-q4_1": 8.5 / 8, "gguf-q5_1": 8.5 / 8}
PRECISIONS = list(LINEAR_BYTES)
# the dtype everything that is not a quantized linear layer is kept in
CUDA_CONTEXT_GB = 0.5  # CUDA context + cuBLAS workspace, typical of recent drivers (measured in Lab 02)


@dataclass(frozen=True)
class ModelSpec:
    """One catalog row. Numbers are as published in the model's config.json."""

    key: str
    hub_id: str
    params_b: float
    layers: int
    hidden: int
    intermediate: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    context: int
    tied_embeddings: bool
    experts: int
    experts_active: int
    qkv_bias: bool
    license: str
    gated: bool
    embedded_package: str
    source: str
    date: object

    @property
    def embedding_params(self) -> int:
        return self.vocab * self.hidden

    @property
    def linear_params_per_layer(self) -> int:
        h, d = self.hidden, self.head_dim
        attention = h * self.heads * d + 2 * h * self.kv_heads * d + self.heads * d * h
        mlp = 3 * h * self.intermediate * self.experts
        return attention + mlp

    @property
    def linear_params(self) -> int:
        """Parameters in the blocks' linear layers (what bitsandbytes quantizes)."""
        return self.layers * self.linear_params_per_layer

    def parameter_count(self) -> int:
        """Parameters computed from the architecture (checked against ``params_b`` in tests)."""
        h = self.hidden
        bias = (self.heads + 2 * self.kv_heads) * self.head_dim if self.qkv_bias else 0
        router = h * self.experts if self.experts > 1 else 0
        per_layer = self.linear_params_per_layer + bias + router + 2 * h
        head = 0 if self.tied_embeddings else self.embedding_params
        return self.layers * per_layer + self.embedding_params + head + h

    def active_parameter_count(self) -> int:
        """Parameters used per token (differs from the total for mixture-of-experts models)."""
        if self.experts <= 1:
            return self.parameter_count()
        unused = self.layers * 3 * self.hidden * self.intermediate * (self.experts - self.experts_active)
        return self.parameter_count() - unused


@lru_cache(maxsize=1)
def catalog() -> dict[str, ModelSpec]:
    """All catalog models, keyed by short key (``"qwen2.5-1.5b"``)."""
    out = {}
    for row in load_rows("models.csv", numeric=MODEL_NUMERIC, required=["key", "hub_id", "license"]):
        values = {name: row[name] for name in ModelSpec.__dataclass_fields__}
        for name in ["layers", "hidden", "intermediate", "heads", "kv_heads", "head_dim", "vocab", "context", "experts", "experts_active"]:
            values[name] = int(values[name])
        for name in ["tied_embeddings", "qkv_bias", "gated"]:
            values[name] = bool(values[name])
        out[row["key"]] = ModelSpec(**values)
    return out


def find_model(ref: str) -> ModelSpec | None:
    """A catalog entry by key or hub id (case-insensitive), or None."""
    wanted = ref.strip().lower()
    for spec in catalog().values():
        if wanted in (spec.key.lower(), spec.hub_id.lower()):
            return spec
    return None


def get_model(ref: str) -> ModelSpec:
    """Like :func:`find_model` but raises a clear error with close matches."""
    spec = find_model(ref)
    if spec is None:
        names = [s.key for s in catalog().values()] + [s.hub_id for s in catalog().values()]
        close = difflib.get_close_matches(ref, names, n=3, cutoff=0.4)
        hint = f"did you mean {', '.join(close)}? " if close else ""
        raise ModelNotFoundError(
            f"model {ref!r} is not in the course catalog (datasets/models.csv)",
            fix=f"{hint}catalog keys: {', '.join(catalog())}",
        )
    return spec


@dataclass(frozen=True)
class MemoryEstimate:
    """A memory prediction in GB (1e9 bytes), with its parts."""

    model: str
    precision: str
    context: int
    batch: int
    weights_gb: float
    kv_cache_gb: float
    overhead_gb: float

    @property
    def total_gb(self) -> float:
        return self.weights_gb + self.kv_cache_gb + self.overhead_gb

    def as_row(self) -> dict:
        return {
            "model": self.model, "precision": self.precision, "context": self.context, "batch": self.batch,
            "weights GB": round(self.weights_gb, 3), "KV cache GB": round(self.kv_cache_gb, 3),
            "overhead GB": round(self.overhead_gb, 3), "total GB": round(self.total_gb, 3),
        }


def compute_bytes(precision: str) -> float:
    """Bytes per value of the dtype that non-quantized tensors and activations use."""
    return 4.0 if precision == "fp32" else 2.0


def estimate_weights_bytes(spec: ModelSpec, precision: str) -> float:
    """Bytes of weights at ``precision`` (see the module docstring for the rules)."""
    if precision not in LINEAR_BYTES:
        raise InputError(f"unknown precision {precision!r}", fix=f"use one of: {', '.join(PRECISIONS)}")
    other_params = spec.parameter_count() - spec.linear_params
    if precision.startswith("gguf"):
        # GGUF files quantize the embeddings too (output and token-embedding tensors)
        return spec.linear_params * LINEAR_BYTES[precision] + other_params * GGUF_OTHER_BYTES.get(precision, LINEAR_BYTES[precision])
    return spec.linear_params * LINEAR_BYTES[precision] + other_params * compute_bytes(precision)


def kv_cache_bytes(spec: "ModelSpec", tokens: float, bytes_per_value: float = 2.0) -> float:
    """Bytes of KV cache for ``tokens`` tokens (summed over sequences): keys and values, every layer,
    every KV head (grouped-query attention keeps fewer KV heads than query heads). The one definition."""
    return 2 * spec.layers * spec.kv_heads * spec.head_dim * tokens * bytes_per_value


# Training with LoRA keeps every layer's activations for the backward pass: bytes per token, per layer, per unit of
# (hidden + intermediate) width, at a 2-byte compute dtype (twice that in fp32). Fitted to the course's recorded H100
# QLoRA run (Qwen2.5-7B NF4, packed rows of 2,192 tokens a step, no Liger: 44.5 GB peak; datasets/results/gpu_qlora.csv)
# and checked against the CPU tier's Lab 03 (3.3 GB measured): the estimate lands within TRAIN_ESTIMATE_FACTOR of both.
TRAIN_ACTIVATION_BYTES = 27.5
TRAIN_ROW_TOKENS = 140  # the support-desk task's longest formatted row (2,192 tokens / 16 rows in the recorded run)
TRAIN_ESTIMATE_FACTOR = 2.0  # the stated accuracy: measured peaks lie between half and twice the estimate


def estimate_training_memory(model: str | ModelSpec, precision: str, context: int = 512, batch: int = 8,
                             device: str = "cuda", lora_rank: int = 16, adapted_layers: int | None = None) -> MemoryEstimate:
    """Predict the peak memory of LoRA/QLoRA training: the (frozen) weights, the adapters with their gradients and
    Adam state (16 bytes a parameter), and the activations kept for the backward pass for ``batch`` rows a step of
    at most ``context`` tokens (the task's rows are shorter: :data:`TRAIN_ROW_TOKENS`). ``kv_cache_gb`` is 0 (no cache
    while training); the activations and the CUDA context are the overhead. ``adapted_layers``: LoRA on the top N layers
    only (default: all); the backward pass stops at the lowest adapted one, so only those layers keep activations."""
    spec = model if isinstance(model, ModelSpec) else get_model(model)
    for name, value in (("context", context), ("batch", batch)):
        if not isinstance(value, int) or value < 1:
            raise InputError(f"{name} must be a positive integer, got {value!r}", fix=f"pass {name} >= 1")
    weights = estimate_weights_bytes(spec, precision)
    tokens = batch * min(context, TRAIN_ROW_TOKENS)
    kept = min(adapted_layers or spec.layers, spec.layers)
    activations = tokens * kept * (spec.hidden + spec.intermediate) * TRAIN_ACTIVATION_BYTES * compute_bytes(precision) / 2
    adapters = 16 * kept * lora_rank * 2 * (spec.hidden + spec.heads * spec.head_dim)  # q and v projections, order of
    overhead = (CUDA_CONTEXT_GB * 1e9 if device == "cuda" else 0.0) + activations + adapters
    return MemoryEstimate(spec.key, precision, context, batch, weights / 1e9, 0.0, overhead / 1e9)


def estimate_memory(model: str | ModelSpec, precision: str, context: int = 4096, batch: int = 1, device: str = "cuda") -> MemoryEstimate:
    """Predict memory for running ``model`` at ``precision`` with ``batch`` sequences of ``context`` tokens.

    Args:
        model: catalog key, hub id or a ModelSpec.
        precision: one of ``PRECISIONS`` (fp32, bf16, fp16, int8, nf4, fp4, gguf-q4_1, ...).
        context: tokens per sequence held in the KV cache (prompt + generated).
        batch: sequences decoded together.
        device: ``"cuda"`` adds the CUDA context to the overhead; ``"cpu"`` does not.

    Returns:
        MemoryEstimate with weights, KV cache and overhead in GB (1e9 bytes).
    """
    spec = model if isinstance(model, ModelSpec) else get_model(model)
    for name, value in (("context", context), ("batch", batch)):
        if not isinstance(value, int) or value < 1:
            raise InputError(f"{name} must be a positive integer, got {value!r}", fix=f"pass {name} >= 1")
    weights = estimate_weights_bytes(spec, precision)
    kv_bytes = compute_bytes(precision)
    kv = kv_cache_bytes(spec, context * batch, kv_bytes)
    activations = batch * context * (2 * spec.intermediate + spec.hidden) * compute_bytes(precision)
    overhead = (CUDA_CONTEXT_GB * 1e9 if device == "cuda" else 0.0) + activations
    return MemoryEstimate(spec.key, precision, context, batch, weights / 1e9, kv / 1e9, overhead / 1e9)
