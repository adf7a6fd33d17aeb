"""A lean decode loop: where the in-process engine's time goes at batch 1, and how to take it back.

At batch 1 a small model's decode step is mostly *not* reading weights. ``model.generate`` runs, for every
token, a Python loop over logits processors, stopping criteria, cache bookkeeping and mask building, and
the model's forward pass issues a few dozen small PyTorch operators per layer, each paying Python's and
the dispatcher's fixed cost. On the embedded model (30 layers) that overhead is most of each token.
:class:`LeanEngine` decodes the same weights with as little of it as the architecture allows:

- q, k and v in one matrix product per layer, gate and up in one more (weights concatenated once), each
  RMSNorm's weight folded into the projection after it;
- the rotary embedding of a new token from per-position cos and sin tables built once (a batched 64 x 64 rotation
  product per layer was tried: under TorchScript it took about 4x the time of these few elementwise operators);
- a pre-allocated KV cache written in place, ``scaled_dot_product_attention`` with grouped-query heads;
- greedy decoding in a plain loop: no processors, no streamer object, no per-step mask;
- the decode step run by TorchScript's interpreter, which calls the same operators without Python's cost
  per operator (about half of each token here). TorchScript is in maintenance mode in PyTorch, but it
  runs these modules, the dynamic int8 ones included, unchanged; without it the same modules run from
  Python (``script=False``, also the fallback when scripting fails), with the same results;
- fewer bytes per token, by ``weights``: ``"int8"``, PyTorch's dynamic int8 linear layers (fbgemm): a quarter of
  fp32's bytes, but each input is rounded to 8 bits on one scale, and this model's activations have outliers
  (on the embedded model it kept the fp32 model's top token at about a third of positions); ``"int8w"``, int8
  weights with bf16 inputs (PyTorch's weight-only int8 matmul); ``"int4"``, 4-bit weights in groups of 32 with a
  scale and a zero each (the embedded GGUF file's Q4_1 layout, so its own codes come back exactly; the RMSNorm
  weights then scale the activations instead of being folded in) and bf16 inputs, run by PyTorch's packed-int4 CPU
  matmul, with the vocabulary projection at int8 x bf16 as the file keeps it at 8 bits; ``"auto"``, per projection
  the faster of ``int8w`` and ``int4`` on this CPU, timed on its own weights when the engine is built (the int4
  kernel is compute-bound on some CPUs, so fewer bytes are not always faster).

:func:`step_breakdown` says where one step's time goes (each projection over every layer, attention, the rest);
:func:`fidelity` how closely a quantized engine follows the fp32 model (logit gap, top-1 agreement, greedy replies).
``bash kit bench-decode`` prints both beside llama.cpp on the same file.

It covers Llama-architecture decoders (SmolLM2, Llama, Qwen2, Mistral: ``model.model.layers[i].self_attn``
with q/k/v/o projections and a gated MLP); anything else raises an :class:`InputError` naming the
engines that do run it. ``tests/test_bench.py`` checks its fp32 logits against the model's own forward
pass and its greedy reply against ``generate``, with and without TorchScript; ``tests/test_decode.py`` the 4-bit
and auto paths against the fp32 model within stated tolerances, and their bytes by hand.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

from ..errors import InputError
from .metrics import RequestRecord

SUPPORTED = ("LlamaForCausalLM", "Qwen2ForCausalLM", "MistralForCausalLM")


# 4-bit weights: asymmetric groups of 32 along the input dimension (a scale and a minimum each), the layout of the
# embedded GGUF file's Q4_1 that llama.cpp reads, run by PyTorch's packed-int4 CPU matmul
INT4_GROUP = 32
INT4_INNER_K_TILES = 2


def int4_available() -> str | None:
    """None when this PyTorch has the packed-int4 CPU matmul, else why not (in words)."""
    import torch

    missing = [name for name in ("_convert_weight_to_int4pack_for_cpu", "_weight_int4pack_mm_for_cpu") if not hasattr(torch.ops.aten, name)]
    return f"this PyTorch has no {', '.join(missing)} (added in PyTorch 2.5)" if missing else None


def quantize_int4(weight, group: int = INT4_GROUP):
    """(codes 0..15 as int32 (N, K), scales and zeros (K / group, N, 2)) for ``weight`` (N, K): per group of ``group``
    inputs, scale = (max - min) / 15 and the value of code c is (c - 8) * scale + zero, zero = min + 8 * scale."""
    import torch

    rows, columns = weight.shape
    if columns % group:
        raise InputError(f"a {rows}x{columns} weight does not split into groups of {group}", fix="use weights='int8' for this model")
    grouped = weight.detach().float().reshape(-1, group)
    low, high = grouped.amin(1, keepdim=True), grouped.amax(1, keepdim=True)
    scale = (high - low).clamp(min=1e-8) / 15
    codes = grouped.sub(low).div(scale).round().clamp(0, 15).to(torch.int32).reshape(rows, columns)
    zero = low + 8 * scale
    scales_and_zeros = torch.cat([scale.reshape(rows, -1, 1), zero.reshape(rows, -1, 1)], 2).transpose(0, 1).contiguous()
    return codes, scales_and_zeros


def dequantize_int4(codes, scales_and_zeros, group: int = INT4_GROUP):
    """The float weight the 4-bit codes stand for (what the matmul computes with), for checking them."""
    scale = scales_and_zeros[:, :, 0].t().repeat_interleave(group, 1)
    zero = scales_and_zeros[:, :, 1].t().repeat_interleave(group, 1)
    return (codes.float() - 8) * scale + zero


def _linear(weight, bias, kind):
    """``x @ weight.T + bias`` as a module: ``nn.Linear`` on fp32 weights; PyTorch's dynamic int8 linear (fbgemm:
    weights int8 per output channel, activations quantized on each call) for ``"int8"``; the packed-int4 CPU matmul
    for ``"int4"``. ``kind`` True / False mean int8 / fp32 (the loop's first two kinds)."""
    import torch

    kind = {True: "int8", False: "fp32"}.get(kind, kind)
    if kind == "int4":
        return _int4_module()(weight, bias)
    if kind == "int8w":
        return _int4_module(weight_only_int8=True)(weight, bias)
    int8 = kind == "int8"
    layer = torch.nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None)
    with torch.no_grad():
        layer.weight.copy_(weight.detach().float())
        if bias is not None:
            layer.bias.copy_(bias.detach().float())
    if not int8:
        return layer.eval()
    import warnings

    try:
        from torch.ao.nn.quantized.dynamic import Linear as DynamicInt8Linear

        layer.qconfig = torch.ao.quantization.per_channel_dynamic_qconfig
        with warnings.catch_warnings():
            # PyTorch announces the retirement of its quantized tensor types (issue 184982); they still work in the
            # pinned version, and the notice is not the learner's to act on
            warnings.filterwarnings("ignore", message=r"torch\.quantize_per_tensor", category=UserWarning)
            return DynamicInt8Linear.from_float(layer)
    except Exception as error:  # noqa: BLE001 - a PyTorch without them: say what runs instead
        raise InputError(f"this PyTorch cannot build dynamic int8 linear layers ({type(error).__name__}: {error})",
                         fix="use LeanEngine(..., weights='fp32'), or llama.cpp for 4-bit weights on a CPU") from None


_LOW_BIT = {}


def _int4_module(weight_only_int8: bool = False):
    """The 4-bit linear module's class (or, with ``weight_only_int8``, the int8-weights / bf16-activations one),
    defined on first use (torch is imported lazily by the kit)."""
    if weight_only_int8 in _LOW_BIT:
        return _LOW_BIT[weight_only_int8]
    import torch

    class Int4Linear(torch.nn.Module):
        """``x @ W.T + b`` with W in 4 bits (groups of 32, a scale and a zero each), packed for PyTorch's CPU matmul."""

        def __init__(self, weight, bias):
            super().__init__()
            reason = int4_available()
            if reason:
                raise InputError(reason, fix="use weights='int8' (or llama.cpp for 4-bit weights on a CPU)")
            codes, scales_and_zeros = quantize_int4(weight)
            self.out_features, self.in_features, self.group = int(weight.shape[0]), int(weight.shape[1]), INT4_GROUP
            self.register_buffer("packed", torch.ops.aten._convert_weight_to_int4pack_for_cpu(codes, INT4_INNER_K_TILES))
            # bf16 activations, scales and zeros: the kernel's vectorised path (fp32 activations run about 8x slower here)
            self.register_buffer("scales_and_zeros", scales_and_zeros.to(torch.bfloat16))
            self.register_buffer("bias", None if bias is None else bias.detach().float().clone())

        def forward(self, x):
            flat = x.reshape(-1, self.in_features)
            out = torch.ops.aten._weight_int4pack_mm_for_cpu(flat.to(torch.bfloat16), self.packed, self.group,
                                                             self.scales_and_zeros).float()
            if self.bias is not None:
                out = out + self.bias
            return out.reshape(list(x.shape[:-1]) + [self.out_features])

    class Int8WeightLinear(torch.nn.Module):
        """``x @ W.T + b`` with W in int8 (a bf16 scale per output row) and bf16 activations: PyTorch's weight-only int8
        CPU matmul. Unlike the dynamic int8 linear it does not round the activations to 8 bits (the vocabulary
        projection after a 4-bit stack: its input has outliers that 8-bit activations flatten)."""

        def __init__(self, weight, bias):
            super().__init__()
            if not hasattr(torch.ops.aten, "_weight_int8pack_mm"):
                raise InputError("this PyTorch has no _weight_int8pack_mm (added in PyTorch 2.3)", fix="use weights='int8'")
            weight = weight.detach().float()
            scale = weight.abs().amax(1).clamp(min=1e-8) / 127
            self.out_features, self.in_features = int(weight.shape[0]), int(weight.shape[1])
            self.register_buffer("values", (weight / scale[:, None]).round().clamp(-127, 127).to(torch.int8))
            self.register_buffer("scales", scale.to(torch.bfloat16))
            self.register_buffer("bias", None if bias is None else bias.detach().float().clone())

        def forward(self, x):
            flat = x.reshape(-1, self.in_features).to(torch.bfloat16)
            out = torch.ops.aten._weight_int8pack_mm(flat, self.values, self.scales).float()
            if self.bias is not None:
                out = out + self.bias
            return out.reshape(list(x.shape[:-1]) + [self.out_features])

    _LOW_BIT.update({False: Int4Linear, True: Int8WeightLinear})
    return _LOW_BIT[weight_only_int8]


# fp32; int8: dynamic int8 linears (8-bit weights and activations); int8w: 8-bit weights, bf16 activations; int4: 4-bit
# weights, bf16 activations; auto: per projection the faster of int8w and int4 on this CPU, measured when built
WEIGHTS = ("fp32", "int8", "int8w", "int4", "auto")
ROLES = ("qkv", "o", "gate_up", "down")  # the layers' projections; the vocabulary projection ("head") is int8 below fp32


def _stream(modules, script: bool = True):
    """A function running every module in ``modules`` once on one token (each layer's projection in turn, as a decode
    step reads them: the weights stream from memory rather than sit in the CPU's cache), through TorchScript as the
    step runs them where ``script`` and this PyTorch can script them."""
    import torch

    Each, _ = _part_modules()
    run, x = Each(modules), torch.randn(1, 1, modules[0].in_features)
    if script:
        try:
            run = torch.jit.script(run)
        except Exception:  # noqa: BLE001 - a PyTorch without TorchScript: from Python, like the step then
            pass
    return lambda: run(x)


def _medians(runs: dict, rounds: int) -> dict[str, float]:
    """Median seconds of each function in ``runs`` (name -> function), after two warm-up calls each; rounds alternate
    the functions so a machine that speeds up or slows down moves them alike."""
    import statistics

    import torch

    times = {name: [] for name in runs}
    with torch.inference_mode():
        for round_ in range(rounds + 2):
            for name, run in runs.items():
                start = time.perf_counter()
                run()
                if round_ >= 2:
                    times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def fastest(candidates: dict[str, list], rounds: int = 5) -> str:
    """The kind whose modules (one projection role over every layer) run fastest on this CPU: ``candidates`` maps a
    kind ("int8w", "int4") to its modules. Timed on the role's own weights because the packed-int4 matmul is
    compute-bound on some CPUs, so fewer bytes are not always faster; the lowest median wins."""
    if len(candidates) == 1:  # nothing to choose between (no 4-bit kernel, or a shape it cannot take)
        return next(iter(candidates))
    medians = _medians({kind: _stream(modules) for kind, modules in candidates.items()}, rounds)
    return min(medians, key=medians.get)


def _module_bytes(module) -> int:
    """Bytes of weights ``module`` itself holds (not its children's): 4-bit codes, int8 values or fp32."""
    import torch

    if hasattr(module, "packed"):  # 4-bit: half a byte a weight, and a scale and a zero per group of 32 (bf16)
        return module.out_features * module.in_features // 2 + module.scales_and_zeros.numel() * 2
    if hasattr(module, "values"):  # weight-only int8: a byte a weight, a bf16 scale per row
        return module.values.numel() + module.scales.numel() * 2
    weight = getattr(module, "weight", None)
    if callable(weight):  # a dynamic int8 linear: weight() unpacks its quantized tensor
        weight = weight()
        return weight.numel() + 4 * weight.q_per_channel_scales().numel()
    if isinstance(weight, torch.Tensor):
        return weight.numel() * weight.element_size()
    return 0


def _cat_bias(*layers):
    import torch

    biases = [layer.bias for layer in layers]
    return None if all(b is None for b in biases) else torch.cat([b if b is not None else torch.zeros(l.weight.shape[0])
                                                                  for b, l in zip(biases, layers)])


def _modules():
    """The decode-step modules, defined on first use (torch is imported lazily by the kit)."""
    from typing import Optional

    import torch
    import torch.nn.functional as F

    class Layer(torch.nn.Module):
        """One decoder layer for one new token: RMSNorm, q/k/v in one product, the rotary embedding as one batched
        product, in-place KV cache, attention, gated MLP. Each RMSNorm's weight is folded into the columns of the
        projection after it, except before 4-bit weights (``norm1`` / ``norm2`` given): there the weights keep the
        model file's own 4-bit values and the norm multiplies the activations instead."""

        # real types, not this module's postponed strings: TorchScript reads them to compile the optional norms
        __annotations__ = {"norm1": Optional[torch.Tensor], "norm2": Optional[torch.Tensor]}

        def __init__(self, qkv, o, gate_up, down, eps1: float, eps2: float, heads: int, kv_heads: int, dim: int,
                     norm1=None, norm2=None):
            super().__init__()
            self.qkv, self.o, self.gate_up, self.down = qkv, o, gate_up, down
            self.eps1, self.eps2, self.heads, self.kv_heads, self.dim = eps1, eps2, heads, kv_heads, dim
            self.norm1, self.norm2 = norm1, norm2

        def norm_in(self, x):
            """The RMSNorm before attention (its weight applied here only when not folded)."""
            h = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps1)
            norm = self.norm1
            return h if norm is None else h * norm

        def norm_mid(self, x):
            """The RMSNorm before the MLP."""
            h = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps2)
            norm = self.norm2
            return h if norm is None else h * norm

        def attend(self, q, cache, end: int):
            """The new token's queries (1, heads, 1, dim) against the first ``end`` cached keys and values."""
            kv_heads = self.kv_heads
            return F.scaled_dot_product_attention(q, cache[:, :kv_heads, :end], cache[:, kv_heads:, :end],
                                                  enable_gqa=self.heads != kv_heads)

        def forward(self, x, cos, sin, cache, start: int):
            heads, kv_heads, end, half = self.heads, self.kv_heads, start + 1, self.dim // 2
            mixed = self.qkv(self.norm_in(x)).view(1, heads + 2 * kv_heads, 1, self.dim)
            qk = mixed[:, :heads + kv_heads]  # rotate-half with this position's cos and sin, as the model was trained
            qk = qk * cos + torch.cat((-qk[..., half:], qk[..., :half]), dim=-1) * sin
            cache[:, :kv_heads, start:end] = qk[:, heads:]
            cache[:, kv_heads:, start:end] = mixed[:, heads + kv_heads:]
            attended = self.attend(qk[:, :heads], cache, end)
            x = x + self.o(attended.reshape(1, 1, heads * self.dim))
            gate, up = self.gate_up(self.norm_mid(x)).chunk(2, dim=-1)
            return x + self.down(F.silu(gate) * up)

    class Stack(torch.nn.Module):
        """Every layer, the final norm and the vocabulary projection: logits for one new token."""

        def __init__(self, layers, head, eps: float):
            super().__init__()
            self.layers, self.head, self.eps = torch.nn.ModuleList(layers), head, eps

        def forward(self, x, cos, sin, caches: list[torch.Tensor], start: int):
            i = 0
            for layer in self.layers:
                x = layer(x, cos, sin, caches[i], start)
                i += 1
            return self.head(x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps))[0, -1]

    return Layer, Stack


@dataclass
class LeanEngine:
    """Greedy batch-1 decoding of ``model``'s weights (fp32, int8, int8w, int4 or auto: see the module's notes)
    without ``generate``.

    Same ``run(prompt, max_tokens)`` as the other engines (a :class:`RequestRecord` with every token's
    time). ``max_length``: prompt plus reply tokens the pre-allocated cache holds. ``script``: run the
    decode step through TorchScript's interpreter instead of Python's (see the module's notes); if this
    PyTorch cannot script it, the Python loop runs, with the same results, and ``scripted`` says so.
    """

    model: object
    tokenizer: object
    weights: str = "fp32"  # fp32, int8, int4, or auto: per projection the faster of int8 and int4 here
    max_length: int = 1024
    script: bool = True
    name: str = ""
    scripted: bool = field(default=False, init=False)
    kinds: dict = field(default_factory=dict, init=False)  # projection role -> the weights it runs with

    def __post_init__(self):
        import torch

        kind = type(self.model).__name__
        if kind not in SUPPORTED or not hasattr(getattr(self.model, "model", None), "layers"):
            raise InputError(f"the lean decode loop does not know {kind}",
                             fix=f"use InProcessEngine (any model) or an OpenAI-compatible server; LeanEngine covers {', '.join(SUPPORTED)}")
        if self.weights not in WEIGHTS:
            raise InputError(f"unknown weights {self.weights!r}", fix=f"use one of: {', '.join(repr(w) for w in WEIGHTS)}")
        if self.weights == "int4" and int4_available():
            raise InputError(int4_available(), fix="use weights='int8' (or llama.cpp for 4-bit weights on a CPU)")
        if str(self.model.device) != "cpu":
            raise InputError("the lean decode loop runs on the CPU", fix="on a GPU use InProcessEngine with a compiled static cache, or vLLM")
        config = self.model.config
        base = self.model.model
        projection = base.layers[0].self_attn.q_proj
        if type(projection) is not torch.nn.Linear or not projection.weight.is_floating_point():
            raise InputError(f"the lean loop reads float weights; this model's projections are {type(projection).__name__}",
                             fix="load the model in fp32 or bf16 (the loop makes its own int8 copy with weights='int8')")
        self.heads = config.num_attention_heads
        self.kv_heads = getattr(config, "num_key_value_heads", None) or self.heads
        self.head_dim = dim = getattr(config, "head_dim", None) or config.hidden_size // self.heads
        Layer, Stack = _modules()
        head = self.model.get_output_embeddings()
        count = len(base.layers)
        with torch.no_grad():
            # per projection role, over every layer: the model's own weights and biases, and the RMSNorm weight in front
            raw = {"qkv": [torch.cat([l.self_attn.q_proj.weight, l.self_attn.k_proj.weight, l.self_attn.v_proj.weight]).float()
                           for l in base.layers],
                   "o": [l.self_attn.o_proj.weight.float() for l in base.layers],
                   "gate_up": [torch.cat([l.mlp.gate_proj.weight, l.mlp.up_proj.weight]).float() for l in base.layers],
                   "down": [l.mlp.down_proj.weight.float() for l in base.layers]}
            biases = {"qkv": [_cat_bias(l.self_attn.q_proj, l.self_attn.k_proj, l.self_attn.v_proj) for l in base.layers],
                      "o": [l.self_attn.o_proj.bias for l in base.layers],
                      "gate_up": [_cat_bias(l.mlp.gate_proj, l.mlp.up_proj) for l in base.layers],
                      "down": [l.mlp.down_proj.bias for l in base.layers]}
            norms = {"qkv": [l.input_layernorm.weight.float() for l in base.layers],
                     "gate_up": [l.post_attention_layernorm.weight.float() for l in base.layers]}

            def build(role, kind):
                """(modules, the norm weight each layer applies itself): a norm's weight is folded into the columns
                after it, except before 4-bit weights, which keep the model's own values (a 4-bit file's codes)."""
                if role in norms and kind != "int4":
                    return [_linear(w * n, b, kind) for w, n, b in zip(raw[role], norms[role], biases[role])], [None] * count
                return [_linear(w, b, kind) for w, b in zip(raw[role], biases[role])], norms.get(role, [None] * count)

            built = {}
            for role in ROLES:
                if self.weights != "auto":
                    self.kinds[role], built[role] = self.weights, build(role, self.weights)
                    continue
                # both keep the activations in bf16: the dynamic int8 linear's 8-bit activations lost most of the
                # fp32 model's top tokens on the embedded model (its down projections' inputs have large outliers)
                options = {"int8w": build(role, "int8w")}
                if raw[role][0].shape[1] % INT4_GROUP == 0 and not int4_available():
                    options["int4"] = build(role, "int4")
                self.kinds[role] = fastest({kind: modules for kind, (modules, _) in options.items()})
                built[role] = options[self.kinds[role]]
            # the vocabulary projection: 8-bit weights below fp32, as the 4-bit file keeps it (4 bits there changed the
            # top token on a third of the embedded model's positions); beside 4-bit layers with bf16 activations (the
            # dynamic int8 linear rounds its input to 8 bits, and the final hidden state's outliers made that the
            # largest gap to the fp32 model's logits)
            self.kinds["head"] = {"fp32": "fp32", "int8": "int8"}.get(self.weights, "int8w")
            head_weight = head.weight.float() * base.norm.weight.float()
            layers = [Layer(built["qkv"][0][i], built["o"][0][i], built["gate_up"][0][i], built["down"][0][i],
                            layer.input_layernorm.variance_epsilon, layer.post_attention_layernorm.variance_epsilon,
                            self.heads, self.kv_heads, dim, built["qkv"][1][i], built["gate_up"][1][i])
                      for i, layer in enumerate(base.layers)]
            self.stack = Stack(layers, _linear(head_weight, head.bias, self.kinds["head"]), base.norm.variance_epsilon)
            self.embed = base.embed_tokens.weight.detach().float()
            cos, sin = base.rotary_emb(self.embed[:1][None], torch.arange(self.max_length)[None])
            self.cos, self.sin = cos[0].float(), sin[0].float()  # (positions, head_dim)
            # k and v of every layer in one tensor per layer (k heads first), written in place
            self.kv_cache = [torch.zeros(1, 2 * self.kv_heads, self.max_length, dim) for _ in layers]
        self._step = self.stack
        if self.script:
            try:
                self._step = torch.jit.script(self.stack)
                self.scripted = True
            except Exception:  # noqa: BLE001 - a PyTorch without TorchScript: the Python loop, same results
                self._step = self.stack
        layer_kinds = sorted({self.kinds[role] for role in ROLES})
        chosen = f"{self.weights} weights" if self.weights != "auto" else "/".join(layer_kinds) + " weights by measurement"
        head_note = ", int8 x bf16 vocabulary projection" if self.kinds["head"] == "int8w" and self.weights != "int8w" else ""
        self.name = self.name or f"lean loop ({chosen}{head_note}{', TorchScript' if self.scripted else ''})"

    def weights_bytes(self) -> int:
        """Bytes of the projection weights one decode step reads (4-bit codes with group scales and zeros, int8 values
        and per-channel scales, or fp32)."""
        return sum(_module_bytes(module) for module in self.stack.modules())

    def model_weights_bytes(self) -> int:
        """Bytes of the original model's weights (what the other engines read per token)."""
        from ..models import weights_bytes

        return weights_bytes(self.model)

    def forward(self, ids, start: int):
        """Logits of the last position for token ids ``ids`` (1 x T) placed at positions ``start``...``start + T - 1``."""
        length = ids.shape[1]
        if length == 1:
            return self._step(self.embed[ids], self.cos[start], self.sin[start], self.kv_cache, start)
        if start:
            raise InputError("the lean loop prefills only at position 0", fix="pass the whole prompt first, then one token at a time")
        return self._prefill(ids)

    def _prefill(self, ids, every_position: bool = False):
        """The prompt, once, in plain Python: the same layers over all its positions with a causal mask; the last
        position's logits (every position's with ``every_position``)."""
        import torch
        import torch.nn.functional as F

        length, heads, kv_heads, dim = ids.shape[1], self.heads, self.kv_heads, self.head_dim
        qk_heads, half = heads + kv_heads, dim // 2
        cos, sin = self.cos[:length], self.sin[:length]
        x = self.embed[ids]
        for layer, cache in zip(self.stack.layers, self.kv_cache):
            mixed = layer.qkv(layer.norm_in(x)).view(1, length, qk_heads + kv_heads, dim).transpose(1, 2)
            qk = mixed[:, :qk_heads]  # rotate-half with the position tables, as the model was trained
            mixed = torch.cat((qk * cos + torch.cat((-qk[..., half:], qk[..., :half]), dim=-1) * sin, mixed[:, qk_heads:]), dim=1)
            cache[:, :, :length] = mixed[:, heads:]
            attended = F.scaled_dot_product_attention(mixed[:, :heads], cache[:, :kv_heads, :length], cache[:, kv_heads:, :length],
                                                      is_causal=True, enable_gqa=kv_heads != heads)
            x = x + layer.o(attended.transpose(1, 2).reshape(1, length, heads * dim))
            gate, up = layer.gate_up(layer.norm_mid(x)).chunk(2, dim=-1)
            x = x + layer.down(F.silu(gate) * up)
        x = x if every_position else x[:, -1:]
        logits = self.stack.head(x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.stack.eps))[0]
        return logits if every_position else logits[-1]

    def generate(self, ids: list[int], max_tokens: int, eos: int | None = None, times: list | None = None) -> list[int]:
        """Greedy continuation of ``ids`` (a prompt's token ids): up to ``max_tokens`` new ids, stopping after ``eos``."""
        import torch

        if len(ids) + max_tokens > self.max_length:
            raise InputError(f"{len(ids)} prompt + {max_tokens} new tokens exceed the cache's {self.max_length}",
                             fix="build the engine with a larger max_length, or ask for fewer tokens")
        out, position = [], 0
        step = torch.tensor([ids])
        with torch.inference_mode():
            for _ in range(max_tokens):
                token = int(self.forward(step, position).argmax())
                if times is not None:
                    times.append(time.perf_counter())
                out.append(token)
                position += step.shape[1]
                if token == eos:
                    break
                step = torch.tensor([[token]])
        return out

    def run(self, prompt: str, max_tokens: int = 32) -> RequestRecord:
        from ..models import chat_inputs

        ids = chat_inputs(self.tokenizer, prompt)["input_ids"][0].tolist()
        times: list[float] = []
        start = time.perf_counter()
        try:
            out = self.generate(ids, max_tokens, times=times)  # a fixed length, like the other engines' min_new_tokens
        except Exception as error:  # noqa: BLE001 - recorded as a failed request, the sweep goes on
            return RequestRecord(start, time.perf_counter(), error=f"{type(error).__name__}: {error}", engine=self.name)
        return RequestRecord(start, time.perf_counter(), times, len(out), len(ids), engine=self.name)


def step_breakdown(engine: LeanEngine, position: int = 64, rounds: int = 15) -> list[dict]:
    """Where one decode step's time goes, at ``position`` tokens already cached: each projection (q/k/v, output, gate
    and up, down) over every layer, the vocabulary projection, and attention over every layer, each timed on its own
    the way the step runs it (one layer after another, so its weights stream from memory as in decoding), and the rest
    of the step (norms, the rotary embedding, cache writes, the interpreter's dispatch between operators) as what the
    whole step takes beyond them. Rows: part, ms per token, share of the step, MB of weights read, GB/s; rounds
    alternate the parts so a machine that speeds up or slows down moves them alike; each figure is a median.

    Each part runs through TorchScript's interpreter when the step does, so the dispatch between its own operators
    is counted in it; timed alone, a part's weights may partly stay in the CPU's cache between rounds (the vocabulary
    projection's 28 MB of int8 fits a 32 MB L3), so the GB/s of a part can exceed what the whole step streams."""
    import torch

    if position + 1 > engine.max_length:
        raise InputError(f"position {position} is past the cache's {engine.max_length} tokens", fix="pass a smaller position")
    layers = list(engine.stack.layers)
    q = torch.randn(1, engine.heads, 1, engine.head_dim)
    token = torch.tensor([[1]])
    _, Attention = _part_modules()
    runs, weights = {}, {}
    for role in ("qkv", "o", "gate_up", "down", "head"):
        modules = [getattr(layer, role) for layer in layers] if role != "head" else [engine.stack.head]
        name = f"{role} projections" if role != "head" else "vocabulary projection"
        runs[name], weights[name] = _stream(modules, engine.scripted), sum(_module_bytes(module) for module in modules)
    attention = Attention(layers)
    attention = torch.jit.script(attention) if engine.scripted else attention  # through TorchScript like the step
    runs["attention"], weights["attention"] = (lambda: attention(q, engine.kv_cache, position + 1)), 0
    runs["step"] = lambda: engine.forward(token, position)
    medians = _medians(runs, rounds)
    step = medians.pop("step")
    rows = [{"part": name, "ms per token": seconds * 1e3, "MB read": weights[name] / 1e6} for name, seconds in medians.items()]
    rows.append({"part": "the rest (norms, rotary, cache writes, dispatch)",
                 "ms per token": max(step * 1e3 - sum(r["ms per token"] for r in rows), 0.0), "MB read": 0.0})
    rows.append({"part": "whole step", "ms per token": step * 1e3, "MB read": engine.weights_bytes() / 1e6})
    for row in rows:
        row["share of step"] = row["ms per token"] / (step * 1e3)
        row["GB/s"] = row["MB read"] / row["ms per token"] if row["MB read"] else float("nan")
    return rows


def _part_modules():
    """Modules that run one part of the step over every layer (for :func:`step_breakdown`), defined on first use."""
    import torch

    class Each(torch.nn.Module):
        """Every module in turn on the same input (one projection role over all layers)."""

        def __init__(self, modules):
            super().__init__()
            self.items = torch.nn.ModuleList(modules)

        def forward(self, x):
            outs: list[torch.Tensor] = []  # every output kept: TorchScript drops a call whose result is unused
            for module in self.items:
                outs.append(module(x))
            return outs

    class Attention(torch.nn.Module):
        """Every layer's attention for one new token over its own cache."""

        def __init__(self, layers):
            super().__init__()
            self.layers = torch.nn.ModuleList(layers)

        def forward(self, q, caches: list[torch.Tensor], end: int):
            outs: list[torch.Tensor] = []
            i = 0
            for layer in self.layers:
                outs.append(layer.attend(q, caches[i], end))
                i += 1
            return outs

    return Each, Attention


def format_breakdown(rows: list[dict], title: str) -> str:
    """The breakdown as a small text table (what ``bash kit bench-decode`` prints)."""
    lines = [title, f"  {'part':<50}{'ms/token':>10}{'share':>8}{'MB read':>10}{'GB/s':>8}"]
    for row in rows:
        rate = f"{row['GB/s']:>8.1f}" if row["MB read"] else f"{'':>8}"
        lines.append(f"  {row['part']:<50}{row['ms per token']:>10.3f}{row['share of step']:>8.0%}{row['MB read']:>10.1f}{rate}")
    return "\n".join(lines)


def reference_replies(model, tokenizer, prompts: list[str], reply_tokens: int = 16) -> list[dict]:
    """The model's own reading of ``prompts`` (chat messages) to compare quantized engines against: per prompt its
    token ids, logits at every prompt position, and its first ``reply_tokens`` greedy tokens from ``generate``."""
    import torch

    from ..models import chat_inputs

    if not prompts:
        raise InputError("no prompts to compare on", fix="pass a few chat messages, e.g. the desk's test tickets")
    out = []
    with torch.inference_mode():
        for prompt in prompts:
            ids = chat_inputs(tokenizer, prompt)["input_ids"]
            logits = model(ids).logits[0].float()
            greedy = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=reply_tokens,
                                    min_new_tokens=reply_tokens, do_sample=False,
                                    pad_token_id=tokenizer.pad_token_id or 0)[0, ids.shape[1]:].tolist()
            out.append({"ids": ids, "logits": logits, "greedy": greedy})
    return out


def fidelity(engine: LeanEngine, reference: list[dict]) -> dict:
    """How closely ``engine`` (int8 or 4-bit weights) follows the model it was built from, on the prompts of
    ``reference`` (:func:`reference_replies`): the largest and the median gap between its logits and the model's at
    each prompt's last position, the share of prompt positions where both put the same token first, and the share of
    prompts whose greedy reply starts with the same tokens as the model's own. A quantized engine is not expected to
    match exactly: near-ties between two tokens flip, and one flip changes the rest of a reply."""
    import torch

    if not reference:
        raise InputError("no reference replies to compare with", fix="build them with reference_replies(model, tokenizer, prompts)")
    gaps, same_top, positions, same_reply = [], 0, 0, 0
    with torch.inference_mode():
        for case in reference:
            ids, logits, greedy = case["ids"], case["logits"], case["greedy"]
            ours = engine._prefill(ids, every_position=True)
            gaps.append(float((ours[-1] - logits[-1]).abs().max()))
            same_top += int((ours.argmax(-1) == logits.argmax(-1)).sum())
            positions += ids.shape[1]
            same_reply += engine.generate(ids[0].tolist(), len(greedy)) == greedy
    return {"prompts": len(reference), "max logit gap": max(gaps), "median logit gap": sorted(gaps)[len(gaps) // 2],
            "top-1 agreement": same_top / positions, "same greedy reply": same_reply / len(reference)}
