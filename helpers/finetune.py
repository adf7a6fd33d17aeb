"""Lab 03: LoRA / QLoRA fine-tuning on the support-desk triage task, with a before/after evaluation.

The task: read a customer message, answer with strict JSON
``{"category", "priority", "product", "personal_data", "needs_human"}``. Data:
``datasets/support_desk/{train,validation,test}.jsonl`` (see its datasheet).
"""
from __future__ import annotations

import contextlib
import json
import math
import re
import warnings
import time
from dataclasses import dataclass, field
from pathlib import Path

from .errors import DataError, InputError
from .paths import dataset

FIELDS = ["category", "priority", "product", "personal_data", "needs_human"]
ALLOWED = {
    "category": ["billing", "refund", "shipping", "technical_issue", "account_access", "cancellation", "product_question", "privacy_request"],
    "priority": ["low", "medium", "high", "urgent"],
    "product": ["app", "thermostat", "router", "camera", "subscription", "none"],
    "personal_data": [True, False],
    "needs_human": [True, False],
}
SYSTEM_PROMPT = (
    "Triage the support message. Reply with JSON only, keys: "
    "category (billing|refund|shipping|technical_issue|account_access|cancellation|product_question|privacy_request), "
    "priority (low|medium|high|urgent), product (app|thermostat|router|camera|subscription|none), "
    "personal_data (true|false), needs_human (true|false)."
)
SHORT_PROMPT = "Triage the support message as JSON."


# ---------------------------------------------------------------- data
def validate_row(row: object, where: str) -> dict:
    """Check one dataset row; raise DataError naming the row and the field."""
    if not isinstance(row, dict):
        raise DataError(f"{where}: not a JSON object", fix="each line must be one JSON object")
    message = row.get("message")
    if not isinstance(message, str) or not message.strip():
        raise DataError(f"{where}: field 'message' is missing or empty", fix="give every row a non-empty customer message")
    target = row.get("target")
    if isinstance(target, str):
        try:
            target = json.loads(target)
        except json.JSONDecodeError:
            raise DataError(f"{where}: field 'target' is not valid JSON", fix="write the target as a JSON object") from None
    if not isinstance(target, dict):
        raise DataError(f"{where}: field 'target' is missing", fix=f"add a target object with keys {', '.join(FIELDS)}")
    for name in FIELDS:
        if name not in target:
            raise DataError(f"{where}: target has no '{name}'", fix=f"add '{name}' (one of {ALLOWED[name]})")
        if target[name] not in ALLOWED[name]:
            raise DataError(f"{where}: target '{name}' is {target[name]!r}", fix=f"use one of {ALLOWED[name]}")
    return {**row, "target": {name: target[name] for name in FIELDS}}


def load_rows(path: str | Path) -> list[dict]:
    """Read and validate a JSONL split. Every bad row is reported (by line number) before anything trains."""
    path = Path(path)
    if not path.exists():
        path = dataset(f"support_desk/{path.name if path.suffix else str(path) + '.jsonl'}")
    rows, problems = [], []
    for number, raw in enumerate(path.read_bytes().split(b"\n"), start=1):
        if not raw.strip():
            continue
        where = f"{path.name} line {number}"
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            problems.append(f"{where}: not valid UTF-8")
            continue
        try:
            rows.append(validate_row(json.loads(text), where))
        except json.JSONDecodeError:
            problems.append(f"{where}: not valid JSON")
        except DataError as error:
            problems.append(error.problem)
    if problems:
        shown = "\n  ".join(problems[:10]) + (f"\n  ... and {len(problems) - 10} more" if len(problems) > 10 else "")
        raise DataError(f"{len(problems)} bad row(s) in {path.name}; training will not start:\n  {shown}",
                        fix="fix or remove these rows; nothing was skipped silently")
    return rows


def target_json(target: dict) -> str:
    """The answer the model learns: compact JSON, keys in a fixed order."""
    return json.dumps({name: target[name] for name in FIELDS}, separators=(",", ":"))


# ---------------------------------------------------------------- formatting
def prompt_messages(message: str, examples: list[dict] | None = None, schema: bool = True) -> list[dict]:
    """Chat messages for one prediction; ``examples`` (rows) become few-shot turns.

    ``schema=True`` spells out the keys and allowed values (what an untuned model needs);
    a fine-tuned model has learned them and gets the short instruction only.
    """
    messages = [{"role": "system", "content": SYSTEM_PROMPT if schema else SHORT_PROMPT}]
    for example in examples or []:
        messages += [{"role": "user", "content": example["message"]}, {"role": "assistant", "content": target_json(example["target"])}]
    return messages + [{"role": "user", "content": message}]


def format_example(tokenizer, row: dict, max_length: int = 384, schema: bool = False) -> dict:
    """Token ids for one training example, with labels -100 on every prompt token (loss on the answer only)."""
    prompt = prompt_messages(row["message"], schema=schema)
    prompt_ids = tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=True, return_dict=True)["input_ids"]
    full_ids = tokenizer.apply_chat_template(prompt + [{"role": "assistant", "content": target_json(row["target"])}],
                                             tokenize=True, return_dict=True)["input_ids"]
    if full_ids[: len(prompt_ids)] != prompt_ids:
        raise InputError("the chat template does not extend the prompt with the answer", fix="use a model whose chat template is prefix-stable")
    full_ids = full_ids[:max_length]
    labels = [-100] * len(prompt_ids) + full_ids[len(prompt_ids):]
    return {"input_ids": full_ids, "attention_mask": [1] * len(full_ids), "labels": labels[: len(full_ids)]}


def collate(batch: list[dict], pad_id: int) -> dict:
    import torch

    width = max(len(item["input_ids"]) for item in batch)
    out = {"input_ids": [], "attention_mask": [], "labels": []}
    for item in batch:
        pad = width - len(item["input_ids"])
        out["input_ids"].append(item["input_ids"] + [pad_id] * pad)
        out["attention_mask"].append(item["attention_mask"] + [0] * pad)
        out["labels"].append(item["labels"] + [-100] * pad)
    return {k: torch.tensor(v) for k, v in out.items()}


# ---------------------------------------------------------------- LoRA
def lora_config(r: int = 16, alpha: int = 32, dropout: float = 0.05, targets: list[str] | None = None):
    from peft import LoraConfig

    return LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, task_type="CAUSAL_LM",
                      target_modules=targets or ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])


def lora_parameter_count(spec, r: int, targets: list[str]) -> int:
    """LoRA parameters for a catalog model: each adapted (d_in x d_out) matrix adds r x (d_in + d_out)."""
    h, d, i = spec.hidden, spec.head_dim, spec.intermediate
    shapes = {"q_proj": (h, spec.heads * d), "k_proj": (h, spec.kv_heads * d), "v_proj": (h, spec.kv_heads * d),
              "o_proj": (spec.heads * d, h), "gate_proj": (h, i), "up_proj": (h, i), "down_proj": (i, h)}
    unknown = set(targets) - set(shapes)
    if unknown:
        raise InputError(f"unknown target modules {sorted(unknown)}", fix=f"use some of {list(shapes)}")
    return spec.layers * sum(r * (shapes[t][0] + shapes[t][1]) for t in targets)


@contextlib.contextmanager
def quiet_peft():
    """peft calls a transformers API that warns about its own rename (FutureWarning): not the learner's concern."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        yield


def add_lora(model, config, quantized: bool = False):
    """Wrap ``model`` with LoRA adapters (QLoRA: prepare the 4-bit base for training first)."""
    from peft import get_peft_model, prepare_model_for_kbit_training

    with quiet_peft():
        if quantized:
            model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
        # new LoRA dropout layers start in training mode; eval until the Trainer switches to train()
        return get_peft_model(model, config).eval()


def trainable_parameters(model) -> tuple[int, int, float]:
    """(trainable, total, trainable %)."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return trainable, total, 100 * trainable / total


# ---------------------------------------------------------------- training
def _check_datasets_not_shadowed() -> None:
    """The kit's ``datasets/`` folder passes for Hugging Face's ``datasets`` package when the repo root
    is on sys.path (``python -m ...`` from the root) and that package is not installed."""
    import importlib.util

    spec = importlib.util.find_spec("datasets")
    if spec is not None and spec.origin in (None, "namespace") and not spec.has_location:
        raise InputError("the kit's datasets/ folder is on sys.path and hides Hugging Face's `datasets` package from the Trainer",
                         fix="run from the notebook's folder or use the `pytest` script instead of `python -m pytest` "
                             "(or pip install datasets)")


@dataclass
class TrainResult:
    steps: int
    seconds: float
    losses: list[float] = field(default_factory=list)
    peak_memory_gb: float = float("nan")
    examples_seen: int = 0
    tokens_seen: int = 0

    @property
    def tokens_per_s(self) -> float:
        return self.tokens_seen / self.seconds if self.seconds else float("nan")


def peak_memory_gb(device: str) -> float:
    import torch

    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated() / 1e9
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6  # kilobytes on Linux


def train(model, tokenizer, rows: list[dict], steps: int = 60, batch_size: int = 8, learning_rate: float = 2e-3, seed: int = 0,
          output_dir: str | None = None, progress: bool = True, bf16: bool | None = None) -> TrainResult:
    """Train the LoRA adapters with transformers' Trainer (loss on answers only). Shows a progress bar."""
    import tempfile

    import torch
    from transformers import Trainer, TrainingArguments, set_seed

    _check_datasets_not_shadowed()
    set_seed(seed)
    examples = [format_example(tokenizer, row) for row in rows]
    if not examples:
        raise InputError("no training rows", fix="pass the rows of datasets/support_desk/train.jsonl")
    device = str(model.device)
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    args = TrainingArguments(
        output_dir=output_dir or tempfile.mkdtemp(prefix="lora-"), max_steps=steps, per_device_train_batch_size=batch_size,
        learning_rate=learning_rate, lr_scheduler_type="linear", warmup_steps=max(1, steps // 10), logging_steps=1, save_strategy="no",
        report_to=[], disable_tqdm=not progress, seed=seed, data_seed=seed, use_cpu=not device.startswith("cuda"),
        dataloader_num_workers=0, remove_unused_columns=False,
        bf16=bf16 if bf16 is not None else (device.startswith("cuda") and torch.cuda.is_bf16_supported()),
    )
    trainer = Trainer(model=model, args=args, train_dataset=examples,
                      data_collator=lambda batch: collate(batch, tokenizer.pad_token_id))
    if not progress:  # without a progress bar the Trainer prints every log line instead
        from transformers import PrinterCallback

        trainer.remove_callback(PrinterCallback)
    start = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - start
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    seen = steps * batch_size
    # the Trainer samples rows at random: count tokens at the training set's mean length
    tokens = round(seen * sum(len(e["input_ids"]) for e in examples) / len(examples))
    model.eval()
    return TrainResult(steps, seconds, losses, peak_memory_gb(device), seen, tokens)


# ---------------------------------------------------------------- prediction and evaluation
def predict(model, tokenizer, messages: list[str], examples: list[dict] | None = None, batch_size: int = 16,
            max_new_tokens: int = 40, progress: bool = True, schema: bool = True) -> list[str]:
    """Greedy predictions for many messages, batched with left padding."""
    import torch
    from tqdm.auto import tqdm

    tokenizer.padding_side = "left"
    outputs = []
    for start in tqdm(range(0, len(messages), batch_size), desc="predicting", disable=not progress):
        chunk = messages[start:start + batch_size]
        texts = [tokenizer.apply_chat_template(prompt_messages(m, examples, schema), add_generation_prompt=True, tokenize=False)
                 for m in chunk]
        batch = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(model.device)
        with torch.no_grad():
            generated = model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tokenizer.pad_token_id)
        outputs += tokenizer.batch_decode(generated[:, batch["input_ids"].shape[1]:], skip_special_tokens=True)
    tokenizer.padding_side = "right"
    return [text.strip() for text in outputs]


def parse_prediction(text: str) -> dict | None:
    """The first JSON object in ``text`` with all five fields, or None."""
    match = re.search(r"\{.*?\}", text, re.S)
    if not match:
        return None
    try:
        value = json.loads(match.group(0))
    except json.JSONDecodeError:
        return None
    if not isinstance(value, dict) or any(name not in value for name in FIELDS):
        return None
    return value


def wilson_interval(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95 % Wilson score interval for a proportion (works at 0 and n)."""
    if n == 0:
        return (float("nan"), float("nan"))
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (max(0.0, centre - half), min(1.0, centre + half))


def evaluate(predictions: list[str], rows: list[dict]):
    """Valid-JSON rate, per-field accuracy and exact match, each with a 95 % Wilson interval.

    A prediction that is not valid JSON counts as wrong on every field.
    """
    import pandas as pd

    if len(predictions) != len(rows):
        raise InputError("predictions and rows differ in length", fix="predict every evaluation row")
    parsed = [parse_prediction(p) for p in predictions]
    n = len(rows)
    counts = {"valid JSON": sum(p is not None for p in parsed)}
    for name in FIELDS:
        counts[name] = sum(p is not None and p.get(name) == row["target"][name] for p, row in zip(parsed, rows))
    counts["exact match"] = sum(p is not None and all(p.get(f) == row["target"][f] for f in FIELDS) for p, row in zip(parsed, rows))
    table = pd.DataFrame([{"metric": k, "correct": v, "n": n, "rate": v / n, "low": wilson_interval(v, n)[0], "high": wilson_interval(v, n)[1]}
                          for k, v in counts.items()]).set_index("metric")
    return table


# ---------------------------------------------------------------- saving, merging, sizes
def directory_mb(path: str | Path) -> float:
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file()) / 1e6


def save_adapter(model, path: str | Path) -> float:
    """Save only the LoRA adapter; returns its size in MB."""
    model.save_pretrained(path)
    return directory_mb(path)


def load_adapter(base_model, path: str | Path):
    from peft import PeftModel

    with quiet_peft():
        return PeftModel.from_pretrained(base_model, path).eval()


def merge_and_export(peft_model, tokenizer, path: str | Path) -> float:
    """Fold the adapter into the base weights and save a plain checkpoint (loads without peft); returns MB."""
    with quiet_peft():
        merged = peft_model.merge_and_unload()
    merged.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return directory_mb(path)


def adapter_roundtrip(model, tokenizer, plan, folder: str | Path, probe_text: str = "Hi, my router keeps disconnecting.") -> dict:
    """Save the trained adapter, reload it on a fresh base, merge and export, reload the export;
    compare logits at each step. Returns sizes (MB), the checks, and the merged model."""
    import torch

    from .catalog import get_model
    from .models import load_model

    folder = Path(folder)
    adapter_mb = save_adapter(model, folder / "adapter")
    reloaded = load_adapter(load_model(plan=plan)[0], folder / "adapter")
    probe = tokenizer([probe_text], return_tensors="pt").to(model.device)
    with torch.no_grad():
        original, again = model(**probe).logits, reloaded(**probe).logits
    merged_mb = merge_and_export(reloaded, tokenizer, folder / "merged")
    merged = load_model(str(folder / "merged"), precision=plan.precision, device=plan.device)[0]
    with torch.no_grad():
        merged_logits = merged(**probe).logits
    return {"adapter_mb": adapter_mb, "merged_mb": merged_mb, "base_fp32_mb": get_model(plan.model).parameter_count() * 4 / 1e6,
            "reload_same": bool(torch.allclose(original, again, atol=1e-5)),
            "merge_same": bool(torch.allclose(original, merged_logits, atol=5e-4)), "merged_model": merged}


def full_finetune_memory(spec, weight_bytes: float = 2, optimizer_bytes_per_param: float = 8, master_bytes: float = 4):
    """Memory of full fine-tuning with Adam in mixed precision vs LoRA, in GB (activations excluded).

    Full: weights + gradients (same dtype) + fp32 master copy + Adam's two fp32 moments.
    """
    import pandas as pd

    params = spec.parameter_count()
    full = {"weights": params * weight_bytes, "gradients": params * weight_bytes, "fp32 master weights": params * master_bytes,
            "Adam moments": params * optimizer_bytes_per_param}
    targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    lora = lora_parameter_count(spec, 16, targets)
    lora_mem = {"weights": params * weight_bytes, "gradients": lora * 4, "fp32 master weights": 0.0, "Adam moments": lora * 8}
    from .catalog import estimate_weights_bytes

    qlora_mem = dict(lora_mem, weights=estimate_weights_bytes(spec, "nf4"))
    table = pd.DataFrame({"full fine-tuning": full, "LoRA r=16 (bf16 base)": lora_mem, "QLoRA r=16 (NF4 base)": qlora_mem}) / 1e9
    table.loc["total"] = table.sum()
    return table


@dataclass(frozen=True)
class RunSettings:
    """How much Lab 03 trains and evaluates on this plan (the tier decides; quick mode shrinks it for CI)."""

    steps: int
    batch_size: int
    learning_rate: float
    eval_rows: int
    few_shot_rows: int
    few_shot_examples: int
    qlora_steps: int


def run_settings(plan) -> RunSettings:
    """Training and evaluation sizes for the plan's tier (about 3 minutes of training on 2 CPU cores)."""
    if plan.quick:
        return RunSettings(steps=3, batch_size=4, learning_rate=3e-3, eval_rows=8, few_shot_rows=4, few_shot_examples=2, qlora_steps=1)
    if plan.tier == "cpu":
        return RunSettings(steps=30, batch_size=8, learning_rate=3e-3, eval_rows=64, few_shot_rows=32, few_shot_examples=2, qlora_steps=2)
    if plan.tier == "colab":
        return RunSettings(steps=300, batch_size=16, learning_rate=2e-4, eval_rows=400, few_shot_rows=400, few_shot_examples=3, qlora_steps=300)
    return RunSettings(steps=600, batch_size=16, learning_rate=2e-4, eval_rows=400, few_shot_rows=400, few_shot_examples=3, qlora_steps=600)
