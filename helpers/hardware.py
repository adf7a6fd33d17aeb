"""Hardware: what this machine has, the GPU spec table, and the bandwidth roofline.

``detect_hardware()`` describes the machine it runs on; ``describe_gpu("T4")`` builds the same
description from the spec table, so plans for other machines can be computed (and tested)
anywhere.
"""
from __future__ import annotations

import os
import platform
import shutil
import sys
from pathlib import Path
from dataclasses import dataclass, field
from functools import lru_cache

from .data import load_rows
from .errors import InputError

GPU_NUMERIC = ["vram_gb", "bandwidth_gbps", "fp16_tflops", "bf16_tflops", "int8_tops", "tdp_w", "compute_capability"]


# The share of a device's memory a plan may fill: on a GPU the rest is the allocator's fragmentation and
# other processes; on a CPU the operating system, the notebook server and the browser. The one definition.
USABLE_VRAM = 0.90
USABLE_RAM = 0.70


@dataclass(frozen=True)
class Hardware:
    """A machine as the planner sees it.

    Attributes:
        kind: ``"cpu"`` or ``"cuda"``.
        name: GPU name as the driver reports it, or the CPU model.
        vram_gb: GPU memory in GB (1e9 bytes); 0 on CPU.
        compute_capability: e.g. ``(7, 5)`` for a T4; ``None`` on CPU.
        bf16: whether the GPU computes in bfloat16 natively (compute capability >= 8.0).
        cpu_cores: logical CPU cores usable by this process.
        ram_gb: system memory in GB.
        spec: the matching row of ``datasets/gpu_specs.csv``, if any.
        unused_accelerator: a GPU torch sees but the kit does not plan for (an Apple GPU through MPS), or None.
        gpus: how many GPUs of this kind the machine has (a fleet's replicas and tensor parallelism use them all).
    """

    kind: str
    name: str
    vram_gb: float = 0.0
    compute_capability: tuple[int, int] | None = None
    bf16: bool = False
    cpu_cores: int = 1
    ram_gb: float = 0.0
    spec: dict | None = field(default=None, compare=False)
    unused_accelerator: str | None = None
    gpus: int = 1

    @property
    def has_gpu(self) -> bool:
        return self.kind == "cuda"

    @property
    def bandwidth_gbps(self) -> float | None:
        """Memory bandwidth in GB/s from the spec table, or None if the GPU is not in it."""
        return self.spec["bandwidth_gbps"] if self.spec else None

    def summary(self) -> str:
        if self.has_gpu:
            cc = ".".join(map(str, self.compute_capability or ()))
            count = f"{self.gpus} x " if self.gpus > 1 else ""
            return (
                f"GPU {count}{self.name}, {self.vram_gb:.1f} GB{' each' if count else ''}, compute capability {cc}, "
                f"bf16 {'yes' if self.bf16 else 'no'}; {self.cpu_cores} CPU cores, {self.ram_gb:.1f} GB RAM"
            )
        found = f"{self.unused_accelerator} found, not used" if self.unused_accelerator else "no GPU found"
        return f"CPU only: {self.name}, {self.cpu_cores} cores, {self.ram_gb:.1f} GB RAM ({found})"


@lru_cache(maxsize=1)
def gpu_specs() -> dict[str, dict]:
    """The GPU spec table, keyed by short name (``"T4"``, ``"A100-80GB"``, ...)."""
    rows = load_rows("gpu_specs.csv", numeric=GPU_NUMERIC, required=["name", "aliases", "tier"])
    return {row["name"]: row for row in rows}


def find_spec(gpu_name: str) -> dict | None:
    """Match a driver-reported GPU name (``"Tesla T4"``) to a spec row, or None."""
    wanted = gpu_name.strip().lower()
    for row in gpu_specs().values():
        names = [row["name"]] + row["aliases"].split("|")
        if any(wanted == n.strip().lower() for n in names):
            return row
    # driver names carry extra words ("NVIDIA A100-SXM4-80GB MIG 1g.10gb"); longest alias wins
    best, best_len = None, 0
    for row in gpu_specs().values():
        for alias in [row["name"]] + row["aliases"].split("|"):
            alias_l = alias.strip().lower()
            if alias_l and alias_l in wanted and len(alias_l) > best_len:
                best, best_len = row, len(alias_l)
    return best


def _ram_gb() -> float:
    try:
        import psutil

        return psutil.virtual_memory().total / 1e9
    except Exception:  # pragma: no cover - psutil is a dependency
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1e9


def _cpu_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS
        return os.cpu_count() or 1


def cpu_hardware() -> Hardware:
    """This machine's CPU as a Hardware description (used when no GPU is found)."""
    return Hardware(kind="cpu", name=platform.processor() or platform.machine(), cpu_cores=_cpu_cores(), ram_gb=_ram_gb(),
                    unused_accelerator=_apple_gpu())


def cpu_description() -> str:
    """The CPU a benchmark ran on, in one line: its model name, the cores this process may use, and the vector
    instructions PyTorch's kernels use on it (CPUs of one cloud instance type differ: AVX-512 on some, AVX2 on
    others, and the int8 and 4-bit kernels' speed with them)."""
    name = platform.processor() or platform.machine()
    flags: set[str] = set()
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name") and name in ("", platform.machine(), "x86_64"):
                    name = line.split(":", 1)[1].strip()
                elif line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    break
    except OSError:  # not Linux
        pass
    try:
        import torch

        kernels = f", PyTorch kernels {torch.backends.cpu.get_cpu_capability()}"
    except Exception:  # noqa: BLE001 - without torch the line still names the CPU
        kernels = ""
    extras = [flag for flag in ("avx512_bf16", "avx512_vnni", "avx_vnni", "amx_bf16") if flag in flags]
    return f"{name}, {_cpu_cores()} cores{kernels}" + (f" ({', '.join(extras)})" if extras else "")


def vllm_cli() -> str | None:
    """The ``vllm`` command, if installed: beside this Python (same environment) or on PATH (vLLM pins its own
    torch, so it often lives in an environment of its own). None if not found."""
    beside = Path(sys.executable).with_name("vllm")
    return str(beside) if beside.exists() else shutil.which("vllm")


def llamacpp_server() -> bool:
    """True if llama-cpp-python and its OpenAI-compatible server's packages are installed (``pip install
    'llama-cpp-python[server]'``; it compiles from source where no wheel exists)."""
    import importlib.util

    return all(importlib.util.find_spec(name) is not None for name in ("llama_cpp", "sse_starlette", "starlette_context",
                                                                        "pydantic_settings", "uvicorn"))


def _apple_gpu() -> str | None:
    """"Apple GPU (MPS)" on a Mac whose torch can use it: the plan says why the kit runs on the CPU there."""
    try:
        import torch

        return "Apple GPU (MPS)" if torch.backends.mps.is_available() else None
    except (ImportError, AttributeError):
        return None


# Make a bigger GPU plan and run like a smaller one (e.g. OTS_SIMULATE_GPU=T4 on an H100): the kit is
# told the smaller card's name, memory and bf16 support, and torch's allocator is capped at its memory.
# Used by `bash kit gpu-check` to prove the Colab (T4) plan on whatever GPU the instructor has.
SIMULATE_VAR = "OTS_SIMULATE_GPU"


def _simulated(real_vram_gb: float) -> Hardware | None:
    name = os.environ.get(SIMULATE_VAR, "").strip()
    if not name:
        return None
    fake = describe_gpu(name, ram_gb=_ram_gb(), cpu_cores=_cpu_cores())
    if fake.vram_gb > real_vram_gb:
        raise InputError(f"{SIMULATE_VAR}={name}: {fake.vram_gb:.0f} GB is more than this GPU's {real_vram_gb:.0f} GB",
                         fix=f"simulate a smaller GPU, or unset {SIMULATE_VAR}")
    _cap_memory(fake.vram_gb / real_vram_gb)
    return Hardware(kind="cuda", name=f"{fake.name} (simulated by {SIMULATE_VAR})", vram_gb=fake.vram_gb,
                    compute_capability=fake.compute_capability, bf16=fake.bf16, cpu_cores=fake.cpu_cores,
                    ram_gb=fake.ram_gb, spec=fake.spec)


@lru_cache(maxsize=1)
def _cap_memory(fraction: float) -> None:
    import torch

    torch.cuda.set_per_process_memory_fraction(min(1.0, fraction))


def half_dtype(hw: Hardware) -> str:
    """The 16-bit compute dtype of ``hw``: bfloat16 where the GPU has it (and on CPU), float16 on older GPUs (T4)."""
    return "float16" if hw.has_gpu and not hw.bf16 else "bfloat16"


def detect_hardware() -> Hardware:
    """Describe this machine: the first CUDA GPU if torch sees one, else the CPU.

    With ``OTS_SIMULATE_GPU=<name from gpu_specs.csv>`` a bigger GPU describes itself as that one.
    """
    try:
        import torch

        if torch.cuda.is_available():
            props = torch.cuda.get_device_properties(0)
            simulated = _simulated(props.total_memory / 1e9)
            if simulated is not None:
                return simulated
            props = torch.cuda.get_device_properties(0)
            cc = (props.major, props.minor)
            return Hardware(
                kind="cuda",
                name=props.name,
                vram_gb=props.total_memory / 1e9,
                compute_capability=cc,
                bf16=cc >= (8, 0),
                cpu_cores=_cpu_cores(),
                ram_gb=_ram_gb(),
                spec=find_spec(props.name),
                gpus=torch.cuda.device_count(),
            )
    except ImportError:
        pass
    return cpu_hardware()


def describe_gpu(name: str, ram_gb: float = 32.0, cpu_cores: int = 8, gpus: int = 1) -> Hardware:
    """A Hardware description of a machine with ``gpus`` GPUs from the spec table (for planning other machines)."""
    spec = find_spec(name)
    if spec is None:
        known = ", ".join(gpu_specs())
        raise InputError(f"GPU {name!r} is not in datasets/gpu_specs.csv", fix=f"use one of: {known}, or describe it with Hardware(...)")
    cc_value = spec["compute_capability"]
    major = int(cc_value)
    minor = int(round((cc_value - major) * 10))
    return Hardware(
        kind="cuda",
        name=spec["name"],
        vram_gb=spec["vram_gb"],
        compute_capability=(major, minor),
        bf16=spec["bf16_tflops"] > 0,
        cpu_cores=cpu_cores,
        ram_gb=ram_gb,
        spec=spec,
        gpus=gpus,
    )


def roofline_tokens_per_s(bandwidth_gbps: float, bytes_per_token: float) -> float:
    """Upper bound on batch-1 decode speed: each token reads every weight byte once.

    Args:
        bandwidth_gbps: memory bandwidth in GB/s (1e9 bytes/s).
        bytes_per_token: bytes read from memory per generated token (weights + KV cache).
    """
    if bandwidth_gbps <= 0 or bytes_per_token <= 0:
        raise InputError("bandwidth and bytes per token must be positive", fix="pass values > 0")
    return bandwidth_gbps * 1e9 / bytes_per_token


def versions() -> dict[str, str]:
    """Versions of the stack, for the first cell of every notebook."""
    from importlib import metadata

    out = {"python": platform.python_version()}
    for package in ["own-the-stack", "torch", "transformers", "peft", "bitsandbytes", "accelerate", "otter-grader"]:
        try:
            out[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            out[package] = "not installed"
    return out
