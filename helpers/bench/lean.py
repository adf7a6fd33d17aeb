"""A lean decode loop: where the in-process engine's time goes at batch 1, and how to take it back.

At batch 1 a small model's decode step is mostly *not* reading weights. ``model.generate`` runs, for every
token, a Python loop over logits processors, stopping criteria, cache bookkeeping and mask building, and
the model's forward pass issues a few dozen small PyTorch operators per layer, each paying Python's and
the dispatcher's fixed cost. On the embedded model (30 layers) that overhead is most of each token.
:class:`LeanEngine` decodes the same weights with as little of it as the architecture allows:

- q, k and v in one matrix product per layer, gate and up in one more (weights concatenated once), each
  RMSNorm's weight folded into the projection after it;
- the rotary embedding of a new token as one batched matrix product (a rotation per position, built once);
- a pre-allocated KV cache written in place, ``scaled_dot_product_attention`` with grouped-query heads;
- greedy decoding in a plain loop: no processors, no streamer object, no per-step mask;
- the decode step run by TorchScript's interpreter, which calls the same operators without Python's cost
  per operator (about half of each token here). TorchScript is in maintenance mode in PyTorch, but it
  runs these modules, the dynamic int8 ones included, unchanged; without it the same modules run from
  Python (``script=False``, also the fallback when scripting fails), with the same results;
- optionally (``weights="int8"``), PyTorch's dynamic int8 linear layers (fbgemm): a quarter of fp32's
  bytes read per token, activations quantized on the fly.

It covers Llama-architecture decoders (SmolLM2, Llama, Qwen2, Mistral: ``model.model.layers[i].self_attn``
with q/k/v/o projections and a gated MLP); anything else raises an :class:`InputError` naming the
engines that do run it. ``tests/test_bench.py`` checks its fp32 logits against the model's own forward
pass and its greedy reply against ``generate``, with and without TorchScript.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

from ..errors import InputError
from .metrics import RequestRecord

SUPPORTED = ("LlamaForCausalLM", "Qwen2ForCausalLM", "MistralForCausalLM")


def _linear(weight, bias, int8: bool):
    """``x @ weight.T + bias`` as a module: ``nn.Linear`` on fp32 weights, or PyTorch's dynamic int8 linear
    (fbgemm: weights int8 per output channel, activations quantized on each call)."""
    import torch

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


def _cat_bias(*layers):
    import torch

    biases = [layer.bias for layer in layers]
    return None if all(b is None for b in biases) else torch.cat([b if b is not None else torch.zeros(l.weight.shape[0])
                                                                  for b, l in zip(biases, layers)])


def _modules():
    """The decode-step modules, defined on first use (torch is imported lazily by the kit)."""
    import torch
    import torch.nn.functional as F

    class Layer(torch.nn.Module):
        """One decoder layer for one new token: RMSNorm (its weight folded into the next projection), q/k/v in one
        product, the rotary embedding as one batched product, in-place KV cache, attention, gated MLP."""

        def __init__(self, qkv, o, gate_up, down, eps1: float, eps2: float, heads: int, kv_heads: int, dim: int):
            super().__init__()
            self.qkv, self.o, self.gate_up, self.down = qkv, o, gate_up, down
            self.eps1, self.eps2, self.heads, self.kv_heads, self.dim = eps1, eps2, heads, kv_heads, dim

        def forward(self, x, turn, cache, start: int):
            heads, kv_heads, end = self.heads, self.kv_heads, start + 1
            h = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps1)
            mixed = torch.matmul(self.qkv(h).view(1, heads + 2 * kv_heads, 1, self.dim), turn)
            cache[:, :, start:end] = mixed[:, heads:]
            attended = F.scaled_dot_product_attention(mixed[:, :heads], cache[:, :kv_heads, :end], cache[:, kv_heads:, :end],
                                                      enable_gqa=heads != kv_heads)
            x = x + self.o(attended.reshape(1, 1, heads * self.dim))
            h = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps2)
            gate, up = self.gate_up(h).chunk(2, dim=-1)
            return x + self.down(F.silu(gate) * up)

    class Stack(torch.nn.Module):
        """Every layer, the final norm and the vocabulary projection: logits for one new token."""

        def __init__(self, layers, head, eps: float):
            super().__init__()
            self.layers, self.head, self.eps = torch.nn.ModuleList(layers), head, eps

        def forward(self, x, turn, caches: list[torch.Tensor], start: int):
            i = 0
            for layer in self.layers:
                x = layer(x, turn, caches[i], start)
                i += 1
            return self.head(x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps))[0, -1]

    return Layer, Stack


@dataclass
class LeanEngine:
    """Greedy batch-1 decoding of ``model``'s weights (fp32, or dynamic int8 linears) without ``generate``.

    Same ``run(prompt, max_tokens)`` as the other engines (a :class:`RequestRecord` with every token's
    time). ``max_length``: prompt plus reply tokens the pre-allocated cache holds. ``script``: run the
    decode step through TorchScript's interpreter instead of Python's (see the module's notes); if this
    PyTorch cannot script it, the Python loop runs, with the same results, and ``scripted`` says so.
    """

    model: object
    tokenizer: object
    weights: str = "fp32"
    max_length: int = 1024
    script: bool = True
    name: str = ""
    scripted: bool = field(default=False, init=False)

    def __post_init__(self):
        import torch

        kind = type(self.model).__name__
        if kind not in SUPPORTED or not hasattr(getattr(self.model, "model", None), "layers"):
            raise InputError(f"the lean decode loop does not know {kind}",
                             fix=f"use InProcessEngine (any model) or an OpenAI-compatible server; LeanEngine covers {', '.join(SUPPORTED)}")
        if self.weights not in ("fp32", "int8"):
            raise InputError(f"unknown weights {self.weights!r}", fix="use weights='fp32' or weights='int8'")
        if str(self.model.device) != "cpu":
            raise InputError("the lean decode loop runs on the CPU", fix="on a GPU use InProcessEngine with a compiled static cache, or vLLM")
        config, int8 = self.model.config, self.weights == "int8"
        base = self.model.model
        projection = base.layers[0].self_attn.q_proj
        if type(projection) is not torch.nn.Linear or not projection.weight.is_floating_point():
            raise InputError(f"the lean loop reads float weights; this model's projections are {type(projection).__name__}",
                             fix="load the model in fp32 or bf16 (the loop makes its own int8 copy with weights='int8')")
        self.heads = config.num_attention_heads
        self.kv_heads = getattr(config, "num_key_value_heads", None) or self.heads
        self.head_dim = dim = getattr(config, "head_dim", None) or config.hidden_size // self.heads
        Layer, Stack = _modules()
        layers = []
        with torch.no_grad():
            for layer in base.layers:
                attn, mlp = layer.self_attn, layer.mlp
                # each RMSNorm's weight scales the inputs of the projections after it: folded into their columns
                norm1, norm2 = layer.input_layernorm.weight.float(), layer.post_attention_layernorm.weight.float()
                qkv = torch.cat([attn.q_proj.weight, attn.k_proj.weight, attn.v_proj.weight]).float() * norm1
                gate_up = torch.cat([mlp.gate_proj.weight, mlp.up_proj.weight]).float() * norm2
                layers.append(Layer(_linear(qkv, _cat_bias(attn.q_proj, attn.k_proj, attn.v_proj), int8),
                                    _linear(attn.o_proj.weight, attn.o_proj.bias, int8),
                                    _linear(gate_up, _cat_bias(mlp.gate_proj, mlp.up_proj), int8),
                                    _linear(mlp.down_proj.weight, mlp.down_proj.bias, int8),
                                    layer.input_layernorm.variance_epsilon, layer.post_attention_layernorm.variance_epsilon,
                                    self.heads, self.kv_heads, dim))
            head = self.model.get_output_embeddings()
            self.stack = Stack(layers, _linear(head.weight.float() * base.norm.weight.float(), head.bias, int8), base.norm.variance_epsilon)
            self.embed = base.embed_tokens.weight.detach().float()
            cos, sin = base.rotary_emb(self.embed[:1][None], torch.arange(self.max_length)[None])
            self.cos, self.sin = cos[0].float(), sin[0].float()  # (positions, head_dim)
            # one token's rotary embedding as a matrix product: x * cos + rotate_half(x) * sin = x @ (diag(cos) + P diag(sin)),
            # P the rotate-half permutation; per position, for the q and k heads, and the identity for the v heads
            half = dim // 2
            rotate = torch.zeros(dim, dim)
            rotate[torch.arange(half) + half, torch.arange(half)] = -1.0
            rotate[torch.arange(half), torch.arange(half) + half] = 1.0
            self._turns = torch.diag_embed(self.cos) + rotate @ torch.diag_embed(self.sin)  # (positions, dim, dim)
            self._identity = torch.eye(dim).expand(self.kv_heads, dim, dim)
            # k and v of every layer in one tensor per layer (k heads first), written in place
            self.kv_cache = [torch.zeros(1, 2 * self.kv_heads, self.max_length, dim) for _ in layers]
        self._step = self.stack
        if self.script:
            try:
                self._step = torch.jit.script(self.stack)
                self.scripted = True
            except Exception:  # noqa: BLE001 - a PyTorch without TorchScript: the Python loop, same results
                self._step = self.stack
        self.name = self.name or f"lean loop ({self.weights} weights{', TorchScript' if self.scripted else ''})"

    def weights_bytes(self) -> int:
        """Bytes of the projection weights one decode step reads (int8 values and per-channel scales, or fp32)."""
        import torch

        total = 0
        for module in self.stack.modules():
            weight = getattr(module, "weight", None)
            if callable(weight):  # a dynamic int8 linear: weight() unpacks its quantized tensor
                weight = weight()
                total += weight.numel() + 4 * weight.q_per_channel_scales().numel()
            elif isinstance(weight, torch.Tensor):
                total += weight.numel() * weight.element_size()
        return total

    def model_weights_bytes(self) -> int:
        """Bytes of the original model's weights (what the other engines read per token)."""
        from ..models import weights_bytes

        return weights_bytes(self.model)

    def forward(self, ids, start: int):
        """Logits of the last position for token ids ``ids`` (1 x T) placed at positions ``start``...``start + T - 1``."""
        import torch

        length = ids.shape[1]
        if length == 1:
            turn = torch.cat((self._turns[start].expand(self.heads + self.kv_heads, self.head_dim, self.head_dim), self._identity))
            return self._step(self.embed[ids], turn, self.kv_cache, start)
        if start:
            raise InputError("the lean loop prefills only at position 0", fix="pass the whole prompt first, then one token at a time")
        return self._prefill(ids)

    def _prefill(self, ids):
        """The prompt, once, in plain Python: the same layers over all its positions with a causal mask."""
        import torch
        import torch.nn.functional as F

        length, heads, kv_heads, dim = ids.shape[1], self.heads, self.kv_heads, self.head_dim
        qk_heads, half = heads + kv_heads, dim // 2
        cos, sin = self.cos[:length], self.sin[:length]
        x = self.embed[ids]
        for layer, cache in zip(self.stack.layers, self.kv_cache):
            h = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + layer.eps1)
            mixed = layer.qkv(h).view(1, length, qk_heads + kv_heads, dim).transpose(1, 2)
            qk = mixed[:, :qk_heads]  # rotate-half with the position tables, as the model was trained
            mixed = torch.cat((qk * cos + torch.cat((-qk[..., half:], qk[..., :half]), dim=-1) * sin, mixed[:, qk_heads:]), dim=1)
            cache[:, :, :length] = mixed[:, heads:]
            attended = F.scaled_dot_product_attention(mixed[:, :heads], cache[:, :kv_heads, :length], cache[:, kv_heads:, :length],
                                                      is_causal=True, enable_gqa=kv_heads != heads)
            x = x + layer.o(attended.transpose(1, 2).reshape(1, length, heads * dim))
            h = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + layer.eps2)
            gate, up = layer.gate_up(h).chunk(2, dim=-1)
            x = x + layer.down(F.silu(gate) * up)
        x = x[:, -1:]
        return self.stack.head(x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.stack.eps))[0, -1]

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
