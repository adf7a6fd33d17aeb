"""The plan: what a lab runs on this hardware, and why.

``plan("00")`` returns a :class:`Plan` (model, precision, batch, context, expected memory and
time, and every fallback taken, in words). Notebooks never hard-code a model or a precision:
they ask the plan. One environment variable overrides it::

    OTS_PLAN="tier=cpu"                              # force the CPU tier (CI does this)
    OTS_PLAN="model=qwen2.5-1.5b,precision=nf4"      # pick a model and precision yourself
    OTS_PLAN="batch=4,context=1024"
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import lru_cache

from .catalog import PRECISIONS, estimate_memory, estimate_training_memory, get_model
from .data import load_rows
from .errors import InputError, KitError, NotEnoughMemoryError
from .hardware import USABLE_RAM, USABLE_VRAM, Hardware, detect_hardware, half_dtype, llamacpp_server, vllm_cli
from .paths import QUICK_VAR, quick_mode

TIERS = ("cpu", "colab", "local-gpu")
# the local OpenAI-compatible servers a plan can choose for the labs that serve (tier_defaults.csv's server column)
SERVERS = {"transformers": "transformers serve", "vllm": "vLLM", "llamacpp": "llama.cpp server"}
ENV_VAR = "OTS_PLAN"
SLOW_OVERRIDE_MINUTES = 60  # a forced tier that plans longer than this on a CPU gets a note saying how to undo it
# a GPU with less memory than this is planned like Colab's T4 (small-GPU tier)
SMALL_GPU_GB = 20.0
# when a plan does not fit, batches are halved down to this before the precision is lowered (then on down to 1)
BATCH_FLOOR = 4
# smaller precisions tried, in order, when the planned one does not fit
FALLBACK_PRECISION = {"fp32": "bf16", "bf16": "int8", "fp16": "int8", "int8": "nf4"}


@lru_cache(maxsize=1)
def tier_defaults() -> dict[tuple[str, str], dict]:
    rows = load_rows(
        "tier_defaults.csv", numeric=["batch", "context", "decode_tokens", "train_tokens", "fixed_s", "copies"],
        required=["lab", "tier", "model", "precision"], sourced=False,
    )
    return {(row["lab"], row["tier"]): row for row in rows}


@lru_cache(maxsize=1)
def rates() -> dict[str, float]:
    return {row["name"]: row["value"] for row in load_rows("planner_rates.csv", numeric=["value"], required=["name", "unit"])}


@dataclass(repr=False)
class Plan:
    """What a lab runs here. Memory in GB (1e9 bytes), time in minutes."""

    lab: str
    tier: str
    hardware: str
    device: str
    model: str | None
    hub_id: str | None
    precision: str | None
    batch: int
    context: int
    expected_memory_gb: float
    memory_available_gb: float
    expected_minutes: float
    notes: list[str] = field(default_factory=list)
    quick: bool = False
    compute_dtype: str = "float32"
    server: str | None = None  # labs that serve the model (04, 05): a key of SERVERS (transformers, vllm, llamacpp)
    copies: int = 1  # copies of the model's weights the lab holds at its peak (in process, behind a server, ...)
    model_memory_gb: float = 0.0  # one copy: weights + KV cache + overhead (what one server needs)
    replicas: int = 1  # labs that serve: copies of the server behind the fleet's router (one per GPU or GPU group)
    tensor_parallel: int = 1  # GPUs one server spreads the model over (vLLM's --tensor-parallel-size)
    gpus: int = 0  # GPUs the machine has (a fleet's replicas are placed on them in turn)
    adapted_layers: int | None = None  # a lab that trains: LoRA on the top N of the model's layers (None: all of them)
    layers: int = 0  # the model's layers

    def as_rows(self) -> list[tuple[str, str]]:
        rows = [
            ("lab", self.lab), ("tier", self.tier), ("hardware", self.hardware), ("device", self.device),
            ("model", f"{self.model} ({self.hub_id})" if self.model else "none needed"),
            ("precision", self.precision or "-"), ("compute dtype", self.compute_dtype), ("batch", str(self.batch)), ("context", str(self.context)),
            ("expected memory", f"{self.expected_memory_gb:.2f} GB of {self.memory_available_gb:.1f} GB usable"
                                + (f" ({self.copies} copies of the weights at the peak)" if self.copies > 1 else "")),
            ("expected time", f"about {self.expected_minutes:.1f} min"),
        ]
        if self.adapted_layers:
            rows.append(("LoRA layers", f"the top {self.adapted_layers} of {self.layers} (the backward pass stops there)"))
        if self.server:
            gguf = ", on the GGUF file's own quantized weights" if self.server == "llamacpp" else ""
            rows.append(("local server", SERVERS[self.server] + gguf))
            tp = f", each over {self.tensor_parallel} GPUs (tensor parallel)" if self.tensor_parallel > 1 else ""
            if self.lab == FLEET_LAB or tp:
                rows.append(("fleet", f"{self.replicas} replica{'s' if self.replicas > 1 else ''}{tp}"
                                      + (" behind vllm-router" if self.lab == FLEET_LAB else "")))
        rows += [(f"note {i + 1}", note) for i, note in enumerate(self.notes)]
        return rows

    def to_frame(self):
        import pandas as pd

        return pd.DataFrame(self.as_rows(), columns=["plan", "value"]).set_index("plan")

    def __repr__(self) -> str:
        return str(self)

    def __str__(self) -> str:
        width = max(len(k) for k, _ in self.as_rows())
        return "\n".join(f"{k:>{width}}: {v}" for k, v in self.as_rows())

    def _repr_html_(self) -> str:
        return self.to_frame().to_html()


def parse_override(text: str | None) -> dict[str, str]:
    """Parse ``OTS_PLAN`` (``"tier=cpu"``, ``"model=...,precision=..."``; a bare tier name works too)."""
    if not text or not text.strip():
        return {}
    out: dict[str, str] = {}
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        if "=" not in part:
            if part in TIERS:
                out["tier"] = part
                continue
            raise InputError(f"{ENV_VAR}: cannot read {part!r}", fix=f"write key=value pairs, e.g. {ENV_VAR}='tier=cpu,precision=fp32'")
        key, value = (s.strip() for s in part.split("=", 1))
        if key not in {"tier", "model", "precision", "batch", "context", "server"}:
            raise InputError(f"{ENV_VAR}: unknown key {key!r}", fix="use tier, model, precision, batch, context or server")
        out[key] = value
    if "tier" in out and out["tier"] not in TIERS:
        raise InputError(f"{ENV_VAR}: unknown tier {out['tier']!r}", fix=f"use one of: {', '.join(TIERS)}")
    if "server" in out and out["server"] not in SERVERS:
        raise InputError(f"{ENV_VAR}: unknown server {out['server']!r}", fix=f"use one of: {', '.join(SERVERS)}")
    if "precision" in out and out["precision"] not in PRECISIONS:
        raise InputError(f"{ENV_VAR}: unknown precision {out['precision']!r}", fix=f"use one of: {', '.join(PRECISIONS)}")
    for key in ("batch", "context"):
        if key in out and not (out[key].isdigit() and int(out[key]) > 0):
            raise InputError(f"{ENV_VAR}: {key}={out[key]!r} is not a positive whole number", fix=f"e.g. {ENV_VAR}='{key}=4', or drop {key}=")
    return out


def tier_for(hw: Hardware) -> str:
    if not hw.has_gpu:
        return "cpu"
    return "colab" if hw.vram_gb < SMALL_GPU_GB else "local-gpu"


def _expected_minutes(row: dict, hw: Hardware, weights_gb: float, params: float, notes: list[str]) -> float:
    r = rates()
    if hw.has_gpu:
        if hw.spec:
            bandwidth = hw.spec["bandwidth_gbps"] * r["gpu_bandwidth_efficiency"]
            peak = hw.spec["bf16_tflops"] or hw.spec["fp16_tflops"]
            tflops = peak * r["gpu_flops_efficiency"]
        else:
            bandwidth, tflops = r["unknown_gpu_bandwidth"], r["unknown_gpu_tflops"]
            notes.append(f"{hw.name} is not in datasets/gpu_specs.csv: time assumes {bandwidth:.0f} GB/s and {tflops:.0f} TFLOP/s")
    else:
        bandwidth, tflops = r["cpu_decode_bandwidth"], r["cpu_train_tflops"]
    seconds = row["fixed_s"] + weights_gb / r["load_bandwidth"]
    seconds += row["decode_tokens"] * weights_gb / bandwidth
    seconds += row["train_tokens"] * 6 * params / (tflops * 1e12)
    return seconds / 60


def plan(lab: str, hardware: Hardware | None = None, override: str | None = None) -> Plan:
    """Plan ``lab`` ("00".."05") for ``hardware`` (default: this machine).

    ``override`` defaults to the ``OTS_PLAN`` environment variable. Every fallback the planner
    takes (no bf16, not enough memory, no GPU) is written into ``Plan.notes``.
    """
    lab = f"{int(lab):02d}" if str(lab).isdigit() else str(lab)
    hw = hardware or detect_hardware()
    quick = quick_mode()
    wanted = parse_override(os.environ.get(ENV_VAR) if override is None else override)
    notes: list[str] = []
    tier = tier_for(hw)
    if "tier" in wanted and wanted["tier"] != tier:
        notes.append(f"tier forced to {wanted['tier']} by {ENV_VAR} (hardware suggests {tier})")
        tier = wanted["tier"]
    if (lab, tier) not in tier_defaults():
        labs = sorted({key[0] for key in tier_defaults()})
        raise InputError(f"no plan for lab {lab!r}", fix=f"use one of: {', '.join(labs)}")
    row = dict(tier_defaults()[(lab, tier)])
    if tier != "cpu" and not hw.has_gpu:
        notes.append(f"tier {tier} asked for but no GPU found: the model runs on CPU and will be slow")
    for key in ("model", "precision", "batch", "context"):
        if key in wanted:
            row[key] = int(wanted[key]) if key in ("batch", "context") else wanted[key]
            notes.append(f"{key} set to {wanted[key]} by {ENV_VAR}")
    device = "cuda" if hw.has_gpu and tier != "cpu" else "cpu"
    if device == "cpu" and hw.unused_accelerator:
        notes.append(f"{hw.unused_accelerator} found but not used: the kit's GPU paths need CUDA (bitsandbytes int8/NF4, "
                     "the GPU tiers' models and timings); every lab runs on the CPU tier here, as on a laptop without a GPU")
    available = hw.vram_gb * USABLE_VRAM if device == "cuda" else hw.ram_gb * USABLE_RAM
    base = dict(lab=lab, tier=tier, hardware=hw.summary(), device=device, batch=int(row["batch"]), context=int(row["context"]),
                memory_available_gb=available, quick=quick)
    if quick:
        notes.append(f"quick mode ({QUICK_VAR}=1): fewer steps and evaluation rows, for CI")
    if row["model"] == "-":
        return Plan(model=None, hub_id=None, precision=None, expected_memory_gb=0.0, notes=notes or ["this lab loads no model"],
                    expected_minutes=row["fixed_s"] / 60, **base)

    try:
        spec = get_model(row["model"])
    except KitError as error:
        if "model" not in wanted:
            raise
        raise InputError(f"{ENV_VAR} asks for model {wanted['model']!r}, which the kit cannot resolve ({error.problem.splitlines()[0]})",
                         fix=f"{error.fix}; or drop model= from {ENV_VAR} (now {os.environ.get(ENV_VAR, override)!r})") from None
    precision = row["precision"]
    if precision == "bf16" and device == "cuda" and not hw.bf16:
        notes.append(f"{hw.name}: no bf16 on this GPU (compute capability < 8.0), using fp16")
        precision = "fp16"
    if precision == "fp16" and device == "cpu":
        notes.append("CPU: fp16 matrix kernels are slow on CPU, using fp32")
        precision = "fp32"
    if spec.gated:
        notes.append(f"{spec.hub_id} is gated: accept its licence on the Hub and set HF_TOKEN before loading")
    copies = max(1, int(row.get("copies") or 1))
    adapted = int(float(row.get("adapted_layers") or 0)) or None  # LoRA on the top N layers only (None: all)
    adapted = adapted if adapted is None or adapted < spec.layers else None

    def needed(estimate) -> float:  # the KV cache and overhead once, the weights once per copy the lab holds
        return estimate.total_gb + (copies - 1) * estimate.weights_gb

    training = float(row.get("train_tokens") or 0) > 0  # a lab that trains holds activations for the backward pass

    def estimate_for(precision: str, batch: int):
        if training:
            return estimate_training_memory(spec, precision, base["context"], batch, device=device, adapted_layers=adapted)
        return estimate_memory(spec, precision, base["context"], batch, device=device)

    # a node of several GPUs serving with vLLM can spread one copy over them (tensor parallel) before it lowers the
    # precision; the fit check then counts the node's memory, and the layout below picks the GPUs per copy
    node = row.get("server") == "vllm" and wanted.get("server", "vllm") == "vllm" and device == "cuda" and hw.gpus > 1 \
        and precision in ("bf16", "fp16") and vllm_cli() is not None
    if node:
        available = available * hw.gpus
    estimate = estimate_for(precision, base["batch"])
    while needed(estimate) > available:
        # smaller batches first, down to BATCH_FLOOR (a sweep or a server with fewer requests in flight still teaches
        # the lesson), then smaller precisions, then batches down to 1; each step is a note
        batch, smaller = base["batch"], FALLBACK_PRECISION.get(precision)
        if smaller == "bf16" and device == "cuda" and not hw.bf16:
            smaller = "fp16"
        if batch > BATCH_FLOOR or (smaller is None and batch > 1):
            new_batch = max(BATCH_FLOOR, batch // 2) if batch > BATCH_FLOOR else max(1, batch // 2)
        elif smaller is not None:
            new_batch = None
        else:
            raise NotEnoughMemoryError(
                f"{spec.key} needs about {needed(estimate):.1f} GB even at {precision} and batch {batch}"
                + (f" ({copies} copies of its weights at this lab's peak)" if copies > 1 else "")
                + f", but {available:.1f} GB is usable here",
                fix=f"pick a smaller model with {ENV_VAR}='model=qwen2.5-1.5b' (or smaller), or lower the context",
            )
        notes.append(f"{spec.key} at {precision}, batch {batch} needs about {needed(estimate):.1f} GB > {available:.1f} GB usable: "
                     f"trying {f'batch {new_batch}' if new_batch else smaller}")
        if new_batch:
            base["batch"] = new_batch
        else:
            precision = smaller
            if node and precision not in ("bf16", "fp16"):  # vLLM serves 16-bit weights: below that, one GPU per copy
                node, available = False, base["memory_available_gb"]
                notes.append(f"the node's {hw.gpus} GPUs together cannot hold it at 16 bits either: sized for one GPU")
        estimate = estimate_for(precision, base["batch"])
    minutes = _expected_minutes(row, hw, estimate.weights_gb, spec.parameter_count(), notes)
    if "tier" in wanted and device == "cpu" and tier != "cpu" and minutes > SLOW_OVERRIDE_MINUTES:
        notes.append(f"about {minutes:.0f} min on this machine: {ENV_VAR} forces the {tier} tier's sizes onto a CPU. "
                     f"To undo: unset {ENV_VAR} (or {ENV_VAR}=tier=cpu) for the CPU plan")
    server = None
    if row.get("server", "-") != "-":  # a lab that serves the model: the tier's server, or the one OTS_PLAN names
        if "server" in wanted:
            notes.append(f"server set to {wanted['server']} by {ENV_VAR}")
        server = server_for(wanted.get("server", row["server"]), precision, device, notes, gguf=bool(spec.embedded_package))
    replicas, tensor_parallel = fleet_layout(hw, device, server, estimate.total_gb, base["memory_available_gb"], spec.heads,
                                             spec.kv_heads, notes, fleet=lab == FLEET_LAB) if server else (1, 1)
    return Plan(model=spec.key, hub_id=spec.hub_id, precision=precision, expected_memory_gb=needed(estimate),
                expected_minutes=minutes, notes=notes, compute_dtype=compute_dtype_for(precision, device, hw), server=server,
                copies=copies, model_memory_gb=estimate.total_gb, replicas=replicas, tensor_parallel=tensor_parallel,
                gpus=hw.gpus if device == "cuda" else 0, adapted_layers=adapted, layers=spec.layers, **base)


# a CPU's fleet: two replicas, so one can fail over to the other (they share the machine's cores)
CPU_REPLICAS = 2
FLEET_LAB = "05"  # the lab that runs a fleet; the others that serve run one server (tensor parallel where needed)


def fleet_layout(hw: Hardware, device: str, server: str, one_copy_gb: float, per_gpu_gb: float, heads: int, kv_heads: int,
                 notes: list[str], fleet: bool = True) -> tuple[int, int]:
    """(replicas, tensor parallel) for a lab that serves. On a CPU: two replicas sharing the cores. On GPUs: one copy
    per GPU where it fits one (data parallel: ``gpus`` replicas behind the router); where it does not and vLLM serves,
    the fewest GPUs per copy that hold it (a power of two dividing the attention and KV heads, as vLLM requires), and
    as many such groups as the node has. A note says which and why. ``fleet`` False (a lab that runs one server):
    one replica, still tensor parallel where one GPU cannot hold the model."""
    if device != "cuda":
        if not fleet:
            return 1, 1
        notes.append(f"fleet (Lab 05): {CPU_REPLICAS} replicas on this machine's {hw.cpu_cores} cores; they share them, so "
                     "two replicas show failover and routing, not twice the speed (on GPUs each replica has its own)")
        return CPU_REPLICAS, 1
    gpus = max(1, hw.gpus)
    if gpus == 1 and fleet:  # one GPU: two replicas share it where two copies fit, so one can fail over to the other
        from .bench.server import VLLM_HEADROOM, VLLM_MAX_SHARE

        # vLLM takes a share of the card per server (its estimate with headroom), at most VLLM_MAX_SHARE of it for all
        fits = (2 * VLLM_HEADROOM * one_copy_gb <= per_gpu_gb / USABLE_VRAM * VLLM_MAX_SHARE if server == "vllm"
                else 2 * one_copy_gb <= per_gpu_gb)
        if fits:
            notes.append(f"fleet (Lab 05): 2 replicas share this GPU ({one_copy_gb:.1f} GB each of {per_gpu_gb:.1f} GB usable); "
                         "they show failover and routing, not twice the speed (on a node with more GPUs each replica has its own)")
            return 2, 1
        notes.append(f"fleet (Lab 05): one replica ({one_copy_gb:.1f} GB) fills this GPU, so the fleet has nothing to fail over "
                     f"to: the drill needs two replicas (a second GPU, a smaller model or precision with {ENV_VAR})")
    if one_copy_gb <= per_gpu_gb or server != "vllm":
        if gpus > 1 and fleet:
            notes.append(f"fleet: {gpus} replicas, one per GPU (data parallel: one copy of the model on each, the router "
                         "spreads requests over them)")
        return gpus, 1
    tp = 2
    while tp <= gpus and (one_copy_gb / tp > per_gpu_gb or heads % tp or kv_heads % tp):
        tp *= 2
    if tp > gpus:  # the fit check counted the node's memory: only reached when the heads do not divide
        raise NotEnoughMemoryError(f"one copy needs about {one_copy_gb:.0f} GB; no power-of-two group of this node's {gpus} GPUs "
                                   f"({per_gpu_gb:.0f} GB usable each) holds it with {heads} attention heads split evenly",
                                   fix="a smaller model or precision (OTS_PLAN='precision=int8' with transformers serve)")
    replicas = gpus // tp if fleet else 1
    notes.append(f"one copy needs about {one_copy_gb:.0f} GB > {per_gpu_gb:.0f} GB usable on one GPU: vLLM splits it over "
                 f"{tp} GPUs (tensor parallel)" + (f", {replicas} replica{'s' if replicas > 1 else ''} on this node's {gpus} GPUs"
                                                    if fleet else ""))
    return replicas, tp


def server_for(wanted: str | None, precision: str, device: str, notes: list[str], gguf: bool = False) -> str | None:
    """The local server of a lab that serves: vLLM where the tier asks for it and it can run (a CUDA GPU, 16-bit
    weights, the ``vllm`` command installed); llama.cpp's server when asked for (``OTS_PLAN='server=llamacpp'``) and
    the model ships as a GGUF file (the embedded one); else ``transformers serve``. Each fallback is written into
    ``notes``, and so is the llama.cpp option on a CPU where it is installed. None for a lab that serves nothing."""
    if wanted in (None, "", "-"):
        return None
    if wanted == "llamacpp":
        if not gguf:
            notes.append("llama.cpp's server needs the model as a GGUF file, which the kit has only for the embedded model: "
                         "the local server is transformers serve")
        elif not llamacpp_server():
            notes.append("llama.cpp's server is not installed: the local server is transformers serve "
                         "(pip install 'llama-cpp-python[server]'; it compiles from source, about 8 min on 2 cores)")
        else:
            return "llamacpp"
        return "transformers"
    if wanted != "vllm":
        if device == "cpu" and gguf and llamacpp_server():
            notes.append(f"llama.cpp is installed: {ENV_VAR}='server=llamacpp' serves the embedded model's GGUF file with "
                         "its server instead (4-bit weights read per token instead of 32-bit; `bash kit bench-decode` compares them)")
        return "transformers"
    if device != "cuda":
        notes.append("vLLM needs a CUDA GPU: the local server is transformers serve")
    elif precision not in ("bf16", "fp16"):
        notes.append(f"the kit serves 16-bit weights with vLLM; at {precision} the local server is transformers serve "
                     f"(or {ENV_VAR}='precision=bf16' if it fits)")
    elif vllm_cli() is None:
        notes.append("vLLM is not installed: the local server is transformers serve (no paged KV cache, so fewer requests "
                     "in flight at once). pip install vllm on this machine (in its own environment if its torch pin "
                     "differs; the kit finds `vllm` on PATH) and re-run")
    else:
        return "vllm"
    return "transformers"


def compute_dtype_for(precision: str, device: str, hw: Hardware) -> str:
    """The dtype matrix products run in: fp32 stays fp32; fp16/bf16 are themselves; quantized weights
    (int8, NF4, FP4) compute in the GPU's 16-bit type (bf16, or fp16 on a T4) and in fp32 on a CPU: most
    CPUs (AVX2, AVX-512 without BF16) have no fast bf16 matrix product, and one QLoRA step of the embedded
    model took 25 s with bf16 compute vs 4.4 s with fp32 on this kit's 2-core CI machine."""
    if precision == "fp32":
        return "float32"
    if precision in ("fp16", "bf16"):
        return {"fp16": "float16", "bf16": "bfloat16"}[precision]
    return half_dtype(hw) if device == "cuda" else "float32"


def plan_all_tiers(lab: str) -> "object":
    """The plan of ``lab`` on a reference machine of each tier (CPU here, a T4, an A100-80GB), as a table."""
    import pandas as pd

    from .hardware import cpu_hardware, describe_gpu

    machines = {"cpu": cpu_hardware(), "colab": describe_gpu("T4", ram_gb=12.7, cpu_cores=2), "local-gpu": describe_gpu("A100-80GB")}
    rows = []
    for tier, hw in machines.items():
        p = plan(lab, hw, override="")
        rows.append({"tier": tier, "reference machine": hw.name, "model": p.model or "-", "precision": p.precision or "-",
                     "memory GB": round(p.expected_memory_gb, 2), "about minutes": round(p.expected_minutes, 1)})
    return pd.DataFrame(rows).set_index("tier")
