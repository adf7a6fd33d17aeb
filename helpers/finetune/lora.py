"""Lab 03: LoRA / QLoRA fine-tuning on the support-desk triage task, with a before/after evaluation.

The task: read a customer message, answer with strict JSON
``{"category", "priority", "product", "personal_data", "needs_human"}``. Data:
``datasets/support_desk/{train,validation,test}.jsonl`` (see its datasheet).
"""
from __future__ import annotations

import contextlib
import functools
import json
import math
import re
import warnings
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import DataError, InputError
from ..paths import dataset

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


def load_tickets(path: str | Path) -> list[dict]:
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


def pack(batch: list[dict], pad_id: int, length: int | None = None) -> dict:
    """Padding-free batch: the rows laid end to end in one sequence, positions restarting at each row.

    Without a 2-D attention mask, transformers reads the restarts in ``position_ids`` and builds a
    block-diagonal causal mask, so no row attends to another (``tests/test_finetune.py`` checks that
    the loss equals the padded batch's). Every token computed is a real one: nothing is spent on padding.
    """
    import torch

    ids, positions, labels = [], [], []
    for item in batch:
        ids += item["input_ids"]
        positions += list(range(len(item["input_ids"])))
        labels += [-100] + item["labels"][1:]  # the first token of a row has no predecessor in it
    if length and len(ids) < length:  # a fixed length keeps every step the same shape (kernels compile once)
        tail = length - len(ids)
        ids, positions, labels = ids + [pad_id] * tail, positions + list(range(tail)), labels + [-100] * tail
    return {"input_ids": torch.tensor([ids]), "position_ids": torch.tensor([positions]), "labels": torch.tensor([labels])}


def make_steps(examples: list[dict], rows_per_step: int, token_budget: int | None, steps: int, seed: int = 0) -> list[list[dict]]:
    """Group examples into training steps: a seeded shuffle, then either ``rows_per_step`` rows a step or,
    with ``token_budget``, as many rows as fit in that many tokens (more rows when they are short)."""
    import random

    order = list(range(len(examples)))
    groups: list[list[dict]] = []
    rng = random.Random(seed)
    while len(groups) < steps:
        rng.shuffle(order)
        current, used = [], 0
        for index in order:
            length = len(examples[index]["input_ids"])
            full = (len(current) >= rows_per_step) if token_budget is None else (used + length > token_budget and current)
            if full:
                groups.append(current)
                current, used = [], 0
                if len(groups) == steps:
                    break
            current.append(examples[index])
            used += length
    return groups[:steps]


# ---------------------------------------------------------------- LoRA
def lora_config(r: int = 16, alpha: int = 32, dropout: float = 0.05, targets: list[str] | None = None,
                layers: list[int] | None = None):
    """LoRA on ``targets`` (default: every projection) of ``layers`` (default: all). Adapting only the top layers
    makes a step cheaper: the backward pass stops at the lowest adapted layer."""
    from peft import LoraConfig

    return LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, task_type="CAUSAL_LM", layers_to_transform=layers,
                      target_modules=targets or ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])


def top_layers(model_or_depth, count: int | None) -> list[int] | None:
    """The indices of the top ``count`` layers of a model (or of ``depth`` layers), for :func:`lora_config`'s
    ``layers``; None (every layer) when ``count`` is None or covers them all."""
    depth = model_or_depth if isinstance(model_or_depth, int) else model_or_depth.config.num_hidden_layers
    return None if count is None or count >= depth else list(range(depth - count, depth))


def lora_parameter_count(spec, r: int, targets: list[str], layers: int | None = None) -> int:
    """LoRA parameters for a catalog model: each adapted (d_in x d_out) matrix adds r x (d_in + d_out), in each of
    ``layers`` layers (default: all of them)."""
    h, d, i = spec.hidden, spec.head_dim, spec.intermediate
    shapes = {"q_proj": (h, spec.heads * d), "k_proj": (h, spec.kv_heads * d), "v_proj": (h, spec.kv_heads * d),
              "o_proj": (spec.heads * d, h), "gate_proj": (h, i), "up_proj": (h, i), "down_proj": (i, h)}
    unknown = set(targets) - set(shapes)
    if unknown:
        raise InputError(f"unknown target modules {sorted(unknown)}", fix=f"use some of {list(shapes)}")
    return min(layers or spec.layers, spec.layers) * sum(r * (shapes[t][0] + shapes[t][1]) for t in targets)


@contextlib.contextmanager
def quiet_peft():
    """peft calls a transformers API that warns about its own rename (FutureWarning): not the learner's concern."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        yield


def prepare_quantized(model):
    """Ready a 4-/8-bit base for LoRA training (peft: layer norms and embeddings in fp32, input grads on)."""
    from peft import prepare_model_for_kbit_training

    with quiet_peft():
        return prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)


def is_quantized(model) -> bool:
    return bool(getattr(model, "is_loaded_in_4bit", False) or getattr(model, "is_loaded_in_8bit", False))


def add_lora(model, config, quantized: bool | None = None):
    """Wrap ``model`` with LoRA adapters (QLoRA: a 4-/8-bit base is prepared for training first;
    ``quantized=None`` asks the model)."""
    if quantized is None:
        quantized = is_quantized(model)
    from peft import get_peft_model

    with quiet_peft():
        if quantized:
            model = prepare_quantized(model)
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
    """What a training run did. ``tokens_seen`` counts real (non-padding) tokens; ``step_seconds`` and
    ``step_tokens`` allow a throughput that leaves out the first (warm-up) steps."""

    steps: int
    seconds: float
    losses: list[float] = field(default_factory=list)
    peak_memory_gb: float = float("nan")
    examples_seen: int = 0
    tokens_seen: int = 0
    step_seconds: list[float] = field(default_factory=list)
    step_tokens: list[int] = field(default_factory=list)
    choices: dict = field(default_factory=dict)

    @property
    def tokens_per_s(self) -> float:
        return self.tokens_seen / self.seconds if self.seconds else float("nan")

    def steady_tokens_per_s(self, warmup_steps: int = 2) -> float:
        """Real tokens per second after the first ``warmup_steps`` steps (kernels compiled, memory pools grown)."""
        seconds = sum(self.step_seconds[warmup_steps:])
        return sum(self.step_tokens[warmup_steps:]) / seconds if seconds > 0 else self.tokens_per_s


def peak_memory_gb(device: str) -> float:
    import torch

    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated() / 1e9
    import resource
    import sys

    # the process's peak resident memory: kilobytes on Linux, bytes on macOS
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (1e9 if sys.platform == "darwin" else 1e6)


@dataclass(frozen=True)
class TrainingChoices:
    """How the kit trains on this hardware (decided by :func:`training_choices` from the plan)."""

    packing: bool = True          # padding-free rows (see :func:`pack`)
    token_budget: int | None = None  # GPU: fill each step with rows up to this many tokens (None: fixed rows a step)
    liger: bool = False           # Triton kernels from liger-kernel (RMSNorm, SwiGLU, RoPE), see training_choices
    mixed_precision: str = "no"   # "bf16", "fp16" or "no": autocast for the Trainer


def training_choices(plan, longest_row: int) -> TrainingChoices:
    """The kit's training choices for ``plan``.

    - Rows are always packed without padding (same loss, fewer tokens computed).
    - On a GPU, throughput grows with tokens per step, so each step is filled with rows up to the
      tokens a padded batch of ``plan.batch`` rows of the longest row would take: the memory the
      plan already budgets for, spent on real tokens instead of padding. On a CPU time grows with
      tokens, so a step keeps ``plan.batch`` rows.
    - Liger kernels on a CUDA GPU when ``liger-kernel`` is installed (RMSNorm, SwiGLU, RoPE and the fused
      linear cross-entropy, which never materialises the logits), with autocast in the plan's 16-bit
      dtype. Packed steps have a fixed length, so their Triton kernels compile once.
    - Without Liger, autocast only for a 16-bit base: a 4-/8-bit base already computes in the plan's
      16-bit dtype, and autocast on top of it halved QLoRA throughput.
    Measured side by side on an H100 (``scripts/gpu_qlora_bench.py``, datasets/results/gpu_qlora.csv):
    packing + Liger + autocast 1.25x the plain transformers + peft baseline at 30 GB instead of 43 GB;
    packing alone 0.93x (packed rows need a masked attention kernel).
    """
    import importlib.util

    gpu = plan.device == "cuda"
    quantized = plan.precision in ("int8", "nf4", "fp4")
    liger = gpu and importlib.util.find_spec("liger_kernel") is not None
    mixed = {"bfloat16": "bf16", "float16": "fp16"}.get(plan.compute_dtype, "no") if gpu and (liger or not quantized) else "no"
    return TrainingChoices(packing=True, token_budget=plan.batch * longest_row if gpu else None, liger=liger, mixed_precision=mixed)


def apply_liger(model) -> bool:
    """Swap in Liger's Triton kernels (RMSNorm, SwiGLU, RoPE, fused linear cross-entropy: the logits are
    never materialised) on ``model`` in place; False if unsupported."""
    try:
        from liger_kernel.transformers import _apply_liger_kernel_to_instance

        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        _apply_liger_kernel_to_instance(model=base, rope=True, rms_norm=True, swiglu=True, cross_entropy=False,
                                        fused_linear_cross_entropy=True)
        return True
    except Exception as error:  # an architecture Liger does not know: train without it, and say so
        print(f"Liger kernels not applied ({type(error).__name__}: {str(error)[:120]}); training without them")
        return False


def answer_logits_loss(model, inputs: dict, num_items: int | None = None):
    """The training loss with the vocabulary projection computed only where a label is scored.

    The loss reads the logits at answer tokens only (the prompt is masked with -100), but a plain forward
    pass projects every position onto the whole vocabulary (49,152 entries for SmolLM2): on the CPU tier
    that projection and its backward pass were about an eighth of each step. ``logits_to_keep`` with the
    scored positions gives the same loss (``tests/test_finetune.py`` compares it with the model's own) for
    less compute. ``num_items``: the count to divide the summed loss by (the Trainer's, for gradient
    accumulation); by default the scored tokens here, i.e. the mean.
    """
    import torch

    labels = inputs["labels"]
    targets = labels[:, 1:]  # position t predicts token t + 1
    keep = (targets != -100).any(dim=0).nonzero().squeeze(1)
    forward = {k: v for k, v in inputs.items() if k != "labels"}
    logits = model(**forward, logits_to_keep=keep).logits
    picked = targets[:, keep]
    summed = torch.nn.functional.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), picked.reshape(-1),
                                               ignore_index=-100, reduction="sum")
    count = num_items if num_items is not None else (picked != -100).sum()
    return summed / count


def answer_only_trainer(base):
    """``base`` (transformers' Trainer) with :func:`answer_logits_loss` as its loss."""

    class AnswerOnlyTrainer(base):
        loss_is_scaled_for_ga = True  # divided by the Trainer's count of scored tokens in the whole step

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            if return_outputs:
                return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            return answer_logits_loss(model, inputs, num_items_in_batch)

    return AnswerOnlyTrainer


def _run_fingerprint(rows: list[dict], steps: int, batch_size: int, learning_rate: float, schedule: tuple, seed: int, choices, model) -> str:
    """What a checkpoint must match to be resumed: the same rows, sizes, seed, choices and base model."""
    import hashlib

    text = json.dumps([[r["message"], r["target"]] for r in rows], sort_keys=True) + repr(
        (steps, batch_size, learning_rate, schedule, seed, sorted(choices.__dict__.items()), getattr(model.config, "_name_or_path", ""),
         getattr(model.config, "num_hidden_layers", 0), str(getattr(model, "peft_config", ""))))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def last_checkpoint(folder: str | Path, fingerprint: str | None = None) -> Path | None:
    """The newest ``checkpoint-N`` in ``folder`` written by a run with this fingerprint, or None."""
    folder = Path(folder)
    if not folder.is_dir() or (fingerprint and (folder / "RUN").exists() and (folder / "RUN").read_text() != fingerprint):
        return None
    found = [c for c in folder.glob("checkpoint-*") if c.name.split("-")[-1].isdigit() and (c / "trainer_state.json").exists()]
    return max(found, key=lambda c: int(c.name.split("-")[-1]), default=None)


@functools.cache
def _tail_average_class():
    from transformers import TrainerCallback

    class TailAverage(TrainerCallback):
        """The running mean of the trainable weights after each step from ``start`` on (tail averaging, as in stochastic
        weight averaging): ``apply()`` puts it in the model. The mean is kept in fp32 and saved beside each checkpoint."""

        FILE = "tail_average.pt"

        def __init__(self, model, start: int, folder=None):
            self.weights = {name: w for name, w in model.named_parameters() if w.requires_grad}
            self.start, self.folder, self.mean, self.count = start, folder, None, 0

        def on_step_end(self, args, state, control, **kwargs):
            import torch

            if state.global_step <= self.start:
                return
            with torch.no_grad():
                if self.mean is None:
                    self.mean = {name: w.detach().float().clone() for name, w in self.weights.items()}
                    self.count = 1
                    return
                self.count += 1
                for name, w in self.weights.items():
                    self.mean[name].lerp_(w.detach().float(), 1 / self.count)

        def on_save(self, args, state, control, **kwargs):
            import torch

            if self.folder is not None and self.mean is not None:
                torch.save({"mean": self.mean, "count": self.count}, Path(self.folder) / f"checkpoint-{state.global_step}" / self.FILE)

        def load(self, checkpoint: Path) -> None:
            import torch

            saved = Path(checkpoint) / self.FILE
            if saved.exists():
                state = torch.load(saved, map_location="cpu")
                self.mean, self.count = state["mean"], state["count"]

        def apply(self) -> None:
            import torch

            if self.mean is None:
                return
            with torch.no_grad():
                for name, w in self.weights.items():
                    w.copy_(self.mean[name].to(device=w.device, dtype=w.dtype))

    return TailAverage


def TailAverage(model, steps: int, share: float, folder=None):
    """A Trainer callback keeping the mean of ``model``'s trainable weights after each of the last ``share`` of a run's
    ``steps`` (at least the last one); ``.apply()`` loads it into the model (what ``train(average=share)`` ends with)."""
    return _tail_average_class()(model, steps - max(1, round(steps * share)), folder)


def train(model, tokenizer, rows: list[dict], steps: int = 60, batch_size: int = 8, learning_rate: float = 2e-3, seed: int = 0,
          output_dir: str | None = None, progress: bool = True, choices: TrainingChoices | None = None, plan=None,
          checkpoint_dir: str | Path | None = None, save_every: int | None = None, stop_after: int | None = None,
          schedule: str = "linear", warmup: float = 0.1, schema: bool = False, neftune: float | None = None,
          average: float | None = None, callbacks: list | None = None) -> TrainResult:
    """Train the LoRA adapters with transformers' Trainer (loss on answers only). Shows a progress bar.

    ``choices`` (default: :func:`training_choices` of ``plan``, else padding-free fixed-size steps with
    no autocast) decide packing, tokens per step, Liger and mixed precision.

    ``checkpoint_dir``: save the adapter, optimizer, schedule and random state every ``save_every`` steps (default:
    a quarter of the run) and, when a checkpoint of the same run (same rows, sizes, seed and base) is there, continue
    from it and say so: a Colab session that died mid-training loses at most ``save_every`` steps. The checkpoints are
    removed when the run completes. ``stop_after``: stop after that many steps, as a lost session would (tests).

    ``schedule``: the learning rate's shape after ``warmup`` (a share of the steps): transformers' names
    ("linear", "cosine", "constant_with_warmup"). ``schema``: train on the prompt that spells out the keys and values
    (then ask the tuned model with ``predict(..., schema=True)``); by default the one-line instruction. ``neftune``:
    noise on the input embeddings while training (NEFTune's alpha, e.g. 5; transformers' ``neftune_noise_alpha``).
    ``average``: the model ends with the mean of its trained weights over that last share of the steps (0.5: the weights
    after each step of the second half), not the last step's weights (:func:`TailAverage`); a checkpoint carries the
    running mean, so a resumed run ends with the same one. ``callbacks``: more ``TrainerCallback`` objects for the run
    (e.g. a :func:`TailAverage` the caller applies itself, to score the last step's weights and the mean from one run).
    """
    import shutil
    import tempfile

    import torch
    from transformers import Trainer, TrainerCallback, TrainingArguments, set_seed

    _check_datasets_not_shadowed()
    set_seed(seed)
    examples = [format_example(tokenizer, row, schema=schema) for row in rows]
    if not examples:
        raise InputError("no training rows", fix="pass the rows of datasets/support_desk/train.jsonl")
    longest = max(len(e["input_ids"]) for e in examples)
    if choices is None:
        choices = training_choices(plan, longest) if plan is not None else TrainingChoices()
    device = str(model.device)
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    if choices.liger:
        choices = TrainingChoices(choices.packing, choices.token_budget, apply_liger(model), choices.mixed_precision)
    groups = make_steps(examples, batch_size, choices.token_budget if choices.packing else None, steps, seed)
    tokens_per_step = [sum(len(e["input_ids"]) for e in group) for group in groups]
    resume = None
    if checkpoint_dir is not None:
        checkpoint_dir = Path(checkpoint_dir)
        fingerprint = _run_fingerprint(rows, steps, batch_size, learning_rate, (schedule, warmup, schema, neftune, average), seed,
                                       choices, model)
        resume = last_checkpoint(checkpoint_dir, fingerprint)
        if resume is None and checkpoint_dir.exists():
            shutil.rmtree(checkpoint_dir)  # another run's checkpoints (other rows, sizes or base): not resumable
        checkpoint_dir.mkdir(parents=True, exist_ok=True)
        (checkpoint_dir / "RUN").write_text(fingerprint)
        save_every = save_every or max(1, steps // 4)
        if resume is not None:
            print(f"Continuing from step {resume.name.split('-')[-1]} of {steps}: the checkpoint a previous session saved "
                  f"in {checkpoint_dir} (the steps before it are not trained again).")
    args = TrainingArguments(
        output_dir=str(checkpoint_dir) if checkpoint_dir is not None else (output_dir or tempfile.mkdtemp(prefix="lora-")),
        save_strategy="steps" if checkpoint_dir is not None else "no", save_steps=save_every or steps, save_total_limit=1,
        max_steps=steps, per_device_train_batch_size=1,
        learning_rate=learning_rate, lr_scheduler_type=schedule, warmup_steps=max(1, round(steps * warmup)), logging_steps=1,
        report_to=[], disable_tqdm=not progress, seed=seed, data_seed=seed, use_cpu=not device.startswith("cuda"),
        dataloader_num_workers=0, remove_unused_columns=False,
        bf16=choices.mixed_precision == "bf16", fp16=choices.mixed_precision == "fp16", neftune_noise_alpha=neftune,
    )

    def collator(batch: list[list[dict]]) -> dict:
        group = batch[0]
        if not choices.packing:
            return collate(group, tokenizer.pad_token_id)
        return pack(group, tokenizer.pad_token_id, length=choices.token_budget)

    class StepClock(TrainerCallback):
        def __init__(self):
            self.times: list[float] = []

        def on_step_begin(self, args, state, control, **kwargs):
            self.started = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            self.times.append(time.perf_counter() - self.started)
            if stop_after is not None and state.global_step >= stop_after:
                control.should_training_stop = True
                control.should_save = False

    clock = StepClock()
    callbacks = [clock, *(callbacks or [])]
    if average:
        averager = TailAverage(model, steps, average, folder=checkpoint_dir)
        if resume is not None:
            averager.load(resume)
        callbacks.append(averager)
    # the steps are already grouped and shuffled; the Trainer's sampler only reorders whole steps. Liger's fused
    # loss never builds the logits at all; otherwise they are built only where there is an answer token to score
    trainer_class = Trainer if choices.liger else answer_only_trainer(Trainer)
    trainer = trainer_class(model=model, args=args, train_dataset=groups, data_collator=collator, callbacks=callbacks)
    if not progress:  # without a progress bar the Trainer prints every log line instead
        from transformers import PrinterCallback

        trainer.remove_callback(PrinterCallback)
    use_cache = getattr(model.config, "use_cache", None)
    model.config.use_cache = False  # a cache would hide the packed rows' boundaries from the attention mask
    start = time.perf_counter()
    try:
        trainer.train(resume_from_checkpoint=str(resume) if resume is not None else None)
    finally:
        model.config.use_cache = use_cache
    seconds = time.perf_counter() - start
    if average and trainer.state.global_step >= steps:
        averager.apply()
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    if checkpoint_dir is not None and trainer.state.global_step >= steps:
        shutil.rmtree(checkpoint_dir, ignore_errors=True)  # done: the adapter lives on in the model and its export
    if resume is not None:  # this session's share of the work: the resumed steps and their tokens
        done = int(resume.name.split("-")[-1])
        groups, tokens_per_step = groups[done:], tokens_per_step[done:]
    model.eval()
    # the Trainer's sampler visits the steps in its own order: per-step tokens are matched by count, and
    # the totals are exact because every group is used exactly once
    return TrainResult(steps, seconds, losses, peak_memory_gb(device), sum(len(g) for g in groups), sum(tokens_per_step),
                       clock.times, tokens_per_step[: len(clock.times)], choices=choices.__dict__)


# ---------------------------------------------------------------- prediction and evaluation
class Predictions(list):
    """Greedy replies (a list of strings, as before) that also know which replies ended with the model's
    end-of-turn token before the token limit (``stopped``)."""

    stopped: list[bool]


def end_token_ids(model, tokenizer) -> set[int]:
    """The tokens that end a reply: the tokenizer's end token and the generation config's (one id or several)."""
    ids = {tokenizer.eos_token_id}
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids |= set(configured) if isinstance(configured, (list, tuple)) else {configured}
    return {i for i in ids if i is not None}


def predict(model, tokenizer, messages: list[str], examples: list[dict] | None = None, batch_size: int = 16,
            max_new_tokens: int = 40, progress: bool = True, schema: bool = True) -> Predictions:
    """Greedy predictions for many messages, in batches; the prompt text every message shares (system prompt,
    schema, few-shot turns) is computed once per batch (:func:`generate_sharing_prefix`). ``.stopped`` says
    which replies ended with the end-of-turn token within ``max_new_tokens`` (:func:`stop_share`)."""
    from tqdm.auto import tqdm

    outputs, stopped = [], []
    ends = end_token_ids(model, tokenizer)
    for start in tqdm(range(0, len(messages), batch_size), desc="predicting", disable=not progress):
        chunk = messages[start:start + batch_size]
        texts = [tokenizer.apply_chat_template(prompt_messages(m, examples, schema), add_generation_prompt=True, tokenize=False)
                 for m in chunk]
        ids = [tokenizer(text, add_special_tokens=False)["input_ids"] for text in texts]
        new = generate_sharing_prefix(model, ids, tokenizer.pad_token_id, max_new_tokens)
        outputs += tokenizer.batch_decode(new, skip_special_tokens=True)
        stopped += [any(token in ends for token in row) for row in new]
    result = Predictions(text.strip() for text in outputs)
    result.stopped = stopped
    return result


STOP_BAR = 0.95  # a desk cannot use a model that runs on to the token limit on more than 1 reply in 20


def stop_share(predictions: Predictions) -> dict:
    """The share of replies that ended with the end-of-turn token before the token limit, with its 95 % interval,
    and whether it clears :data:`STOP_BAR` (a model trained without the end token on its labels runs on)."""
    stopped = getattr(predictions, "stopped", None)
    if stopped is None:
        raise InputError("these predictions do not record where the replies stopped", fix="use the list ft.predict returns")
    n, k = len(stopped), sum(stopped)
    low, high = wilson_interval(k, n)
    return {"stopped": k, "n": n, "share": k / n if n else float("nan"), "low": low, "high": high,
            "passes": bool(n and k / n >= STOP_BAR), "passes beyond interval": bool(n and low >= STOP_BAR)}


def stop_sentence(stops: dict) -> str:
    """:func:`stop_share`'s result in the words the memo uses for a bar: beyond the interval, on the point estimate
    only (the interval still reaches below the bar), or failing."""
    said = (f"replies that end with the end-of-turn token before the token limit: {stops['stopped']} of {stops['n']} "
            f"({stops['share']:.0%}, 95% interval {stops['low']:.0%} to {stops['high']:.0%}); the bar is {STOP_BAR:.0%}: ")
    if stops["passes beyond interval"]:
        return said + "passes, beyond its interval"
    if stops["passes"]:
        return said + "passes on the point estimate, not yet beyond its interval (more test rows would tell)"
    return said + "fails: check that the training labels end with the end-of-turn token"


def untuned_reading(replies: list[str], rows: list[dict]) -> str:
    """Why the untuned model scores what it scores: how many replies parse as the schema's JSON, how many name the right
    category anywhere, and one reply as the model wrote it (sentences computed from the replies)."""
    verdicts = row_verdicts(replies, rows)
    n = len(rows)
    parsed = sum(v["valid JSON"] for v in verdicts)
    with_brace = sum("{" in reply for reply in replies)
    named = sum(v[LENIENT] for v in verdicts)
    example = next((reply for reply, v in zip(replies, verdicts) if not v["valid JSON"]), replies[0] if replies else "")
    example = " ".join(example.split())
    return (f"{parsed} of {n} replies parse as JSON with the five fields ({with_brace} contain a brace at all), and every "
            f"strict metric needs that parse, so a reply that is not the schema's JSON is wrong on every field. "
            f"{named} of {n} name the right category somewhere in their text (the lenient row). "
            f"One reply, as the model wrote it: {example[:160]!r}{'...' if len(example) > 160 else ''}")


BASELINE_NAME = "text classifier (TF-IDF)"


def text_classifier_baseline(train_rows: list[dict], rows: list[dict]) -> list[str]:
    """A baseline that can score, with no language model: TF-IDF features of the message (words and word pairs) and one
    logistic regression per field, trained on the same training rows; its predictions come back as the schema's JSON,
    so :func:`evaluate` scores them like the model's replies. If a tuned model cannot beat this, its gain over its
    untuned self says little."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    if not train_rows:
        raise InputError("the text classifier needs training rows", fix="pass the training split (ft.load_tickets('train'))")
    texts = [row["message"] for row in train_rows]
    predicted: list[dict] = [{} for _ in rows]
    for name in FIELDS:
        labels = [json.dumps(row["target"][name]) for row in train_rows]  # true/false and strings alike
        if len(set(labels)) == 1:
            guesses = labels[:1] * len(rows)
        else:
            model = make_pipeline(TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=2),
                                  LogisticRegression(max_iter=2000, C=10.0))
            model.fit(texts, labels)
            guesses = list(model.predict([row["message"] for row in rows]))
        for target, guess in zip(predicted, guesses):
            target[name] = json.loads(guess)
    return [target_json(target) for target in predicted]


def versus(after, baseline, metrics=("category", "priority", "product", "exact match"), name: str = BASELINE_NAME) -> list[str]:
    """Per metric, the tuned model against a baseline on the same rows: ahead or behind beyond both 95 % intervals,
    or within the noise (the intervals overlap)."""
    lines = []
    for metric in metrics:
        if metric not in after.index or metric not in baseline.index:
            continue
        a, b = after.loc[metric], baseline.loc[metric]
        said = ("ahead beyond both intervals" if a["low"] > b["high"] else "behind beyond both intervals" if a["high"] < b["low"]
                else "within the noise (the intervals overlap)")
        lines.append(f"{metric}: tuned {a['rate']:.0%} ({a['low']:.0%}-{a['high']:.0%}) vs {name} {b['rate']:.0%} "
                     f"({b['low']:.0%}-{b['high']:.0%}): {said}")
    return lines


def shared_prefix_length(rows: list[list[int]]) -> int:
    """Tokens at the start of every row (at most all but one token of the shortest row)."""
    shortest = min(len(row) for row in rows)
    length = 0
    while length < shortest - 1 and all(row[length] == rows[0][length] for row in rows):
        length += 1
    return length


def generate_sharing_prefix(model, rows: list[list[int]], pad_id: int, max_new_tokens: int, min_shared: int = 32) -> list[list[int]]:
    """Greedy continuations of token rows, the tokens they all start with computed once (prefix caching).

    A batch of prompts with a long common start (the schema; the few-shot turns) spends most of its
    prefill recomputing the same keys and values. Here the shared tokens run once, their KV cache is copied
    to every row, and only each row's own tokens are prefilled, left-padded *after* the shared part (the
    attention mask hides the padding; positions follow the mask, so every row sees its tokens where an
    unpadded prompt would). vLLM and llama.cpp do the same across requests ("prefix caching"). With fewer
    than ``min_shared`` tokens in common, a plain left-padded batch. Returns the new tokens of each row.
    """
    import torch

    shared = shared_prefix_length(rows) if len(rows) > 1 else 0
    shared = shared if shared >= min_shared else 0
    tails = [row[shared:] for row in rows]
    width = max(len(tail) for tail in tails)
    ids = torch.tensor([rows[0][:shared] + [pad_id] * (width - len(t)) + t for t in tails], device=model.device)
    mask = torch.tensor([[1] * shared + [0] * (width - len(t)) + [1] * len(t) for t in tails], device=model.device)
    settings = dict(max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=pad_id)
    with torch.no_grad():
        if shared:
            from transformers import DynamicCache

            cache = DynamicCache(config=model.config)
            model(input_ids=ids[:1, :shared], use_cache=True, past_key_values=cache)
            cache.batch_repeat_interleave(len(rows))
            settings["past_key_values"] = cache
        generated = model.generate(input_ids=ids, attention_mask=mask, **settings)
    return [list(row) for row in generated[:, ids.shape[1]:].tolist()]


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
    # clamped so the interval always holds p (at p = 0 or 1, rounding can put a bound a hair past it)
    return (max(0.0, min(p, centre - half)), min(1.0, max(p, centre + half)))


LENIENT = "category (lenient)"  # the category a reply names anywhere: a score an untuned model can earn


def named_category(text: str) -> str | None:
    """The first allowed category a reply names anywhere, JSON or prose ("technical issue" counts for technical_issue),
    or None. Lenient on purpose: a small untuned model rarely writes valid JSON, and a baseline that scores 0 on every
    strict metric makes any before/after comparison trivially "better"; this one it can score on."""
    first = None
    for category in ALLOWED["category"]:
        found = re.search(r"\b" + category.replace("_", "[_ ]") + r"\b", str(text), re.I)
        if found and (first is None or found.start() < first[0]):
            first = (found.start(), category)
    return first[1] if first else None


def row_verdicts(predictions: list[str], rows: list[dict]) -> list[dict[str, bool]]:
    """Per row: valid JSON, each field right, all fields right (a reply that is not valid JSON is wrong everywhere),
    and the lenient category (named anywhere in the reply)."""
    verdicts = []
    for prediction, row in zip(predictions, rows):
        parsed = parse_prediction(prediction)
        right = {name: parsed is not None and parsed.get(name) == row["target"][name] for name in FIELDS}
        verdicts.append({"valid JSON": parsed is not None, **right, "exact match": all(right.values()),
                         LENIENT: named_category(prediction) == row["target"]["category"]})
    return verdicts


def evaluate(predictions: list[str], rows: list[dict]):
    """Valid-JSON rate, per-field accuracy and exact match, each with a 95 % Wilson interval.

    A prediction that is not valid JSON counts as wrong on every field; ``category (lenient)`` scores the category a
    reply names anywhere (:func:`named_category`), the row a model that cannot write JSON yet can score on.
    """
    import pandas as pd

    if len(predictions) != len(rows):
        raise InputError("predictions and rows differ in length", fix="predict every evaluation row")
    verdicts = row_verdicts(predictions, rows)
    n = len(rows)
    metrics = ("valid JSON", "category", LENIENT, *FIELDS[1:], "exact match")
    counts = {metric: sum(v[metric] for v in verdicts) for metric in metrics}
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


# how far logits may move when the same network is computed another way (reloaded, or merged into the
# weights): a share of the largest logit. fp32 rounding is ~1e-7 relative, but 30 layers and a different
# summation order add up to ~1e-5; fp16 keeps 11 bits (~5e-4 relative per operation), bf16 8 bits (~4e-3),
# and a merge rounds every merged weight once more in that dtype.
# Measured on CPU with a random adapter that moves the logits by 8 %: reloads exact in every dtype;
# merges 1.6 % off in bf16 and 0.3 % in fp16 (tests/test_finetune.py::test_adapter_roundtrip_at_gpu_dtypes).
# Merged tolerance = 3 x these: above the rounding, well below what a lost or doubled adapter does.
LOGIT_TOLERANCE = {"float32": 1e-5, "float16": 5e-3, "bfloat16": 1e-2}


def logits_close(a, b, dtype: str, merged: bool = False) -> bool:
    """Same network, computed two ways: max |a - b| within the dtype's tolerance of the largest logit
    (compared in float32, so logits of different dtypes can be compared)."""
    a, b = a.float(), b.float()
    tolerance = LOGIT_TOLERANCE.get(dtype, 3e-2) * (3 if merged else 1)
    return bool((a - b).abs().max() <= tolerance * a.abs().max())


def adapter_roundtrip(model, tokenizer, plan, folder: str | Path, probe_text: str = "Hi, my router keeps disconnecting.") -> dict:
    """Save the trained adapter, reload it on a fresh base, merge and export, reload the export;
    compare logits at each step. Returns sizes (MB), the checks, and the merged model.

    A 4-bit (QLoRA) base is not merged in 4-bit (that would round the merged weights to 4 bits): the
    adapter is merged into a 16-bit copy of the base, the way QLoRA models are exported, and the merge
    is checked against that 16-bit base with the adapter.
    """
    import torch

    from ..catalog import get_model
    from ..models import load_model

    folder = Path(folder)
    dtype = plan.compute_dtype
    quantized_base = is_quantized(model.get_base_model() if hasattr(model, "get_base_model") else model)
    probe = tokenizer([probe_text], return_tensors="pt").to(model.device)
    # the trained model's logits first, in eval mode (no dropout), the model put back as it was. First, because on a
    # CPU with avx512_bf16 bitsandbytes keeps 4-bit weights repacked for its faster kernel, and saving unpacks them in
    # place: repacked again, they computed another network (a logit gap of about 1 on the embedded model, bitsandbytes
    # 0.50.2), so logits taken after saving compared bitsandbytes with itself, not the adapter with its reload
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            original = model(**probe).logits
    finally:
        model.train(was_training)
    adapter_mb = save_adapter(model, folder / "adapter")
    fresh = load_model(plan=plan)[0]
    # a fresh base prepared as the trained one was, so both compute the same network
    reloaded = load_adapter(prepare_quantized(fresh) if quantized_base else fresh, folder / "adapter").eval()
    with torch.no_grad():
        again = reloaded(**probe).logits
    if quantized_base:
        export_precision = "bf16" if dtype == "bfloat16" else ("fp16" if dtype == "float16" else "fp32")
        del reloaded
        reloaded = load_adapter(load_model(plan.model, precision=export_precision, device=plan.device)[0], folder / "adapter")
        with torch.no_grad():
            reference = reloaded(**probe).logits
    else:
        export_precision, reference = plan.precision, original
    merged_mb = merge_and_export(reloaded, tokenizer, folder / "merged")
    merged = load_model(str(folder / "merged"), precision=export_precision, device=plan.device)[0]
    with torch.no_grad():
        merged_logits = merged(**probe).logits
    return {"adapter_mb": adapter_mb, "merged_mb": merged_mb, "base_fp32_mb": get_model(plan.model).parameter_count() * 4 / 1e6,
            "compute_dtype": dtype, "merged_precision": export_precision,
            "reload_same": logits_close(original, again, dtype),
            "merge_same": logits_close(reference, merged_logits, dtype, merged=True), "merged_model": merged}


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
    from ..catalog import estimate_weights_bytes

    qlora_mem = dict(lora_mem, weights=estimate_weights_bytes(spec, "nf4"))
    table = pd.DataFrame({"full fine-tuning": full, "LoRA r=16 (bf16 base)": lora_mem, "QLoRA r=16 (NF4 base)": qlora_mem}) / 1e9
    table.loc["total"] = table.sum()
    return table


def gpu_qlora_results():
    """The recorded GPU QLoRA comparison (``scripts/gpu_qlora_bench.py``), or None if none was recorded."""
    import pandas as pd

    from ..paths import DATASETS

    path = DATASETS / "results" / "gpu_qlora.csv"
    if not path.exists():
        return None
    table = pd.read_csv(path)
    return table[["variant", "hardware", "model", "tokens_per_s", "ratio_to_baseline", "peak_memory_gb", "rows_per_step", "date"]]


def _recorded_runs(name: str):
    """A results CSV written by ``scripts/cpu_learning_curve.py``, with ``run`` naming each run's recipe (layers and
    how they trained, steps in the schedule, learning rate, prompt, NEFTune, machine, date, test rows scored)."""
    import pandas as pd

    from ..catalog import get_model
    from ..paths import DATASETS

    path = DATASETS / "results" / name
    if not path.exists():
        return None
    table = pd.read_csv(path)
    depth = get_model("smollm2-135m").layers  # the CPU tier's model; a run that adapted every layer records none or all
    layers = table["layers"].fillna(depth).astype(int)
    planned = table["run steps"].fillna(table.groupby(["machine", "learning rate"])["steps"].transform("max")).astype(int)
    machine = table["machine"].str.split(",").str[0].str.replace(r"\(R\)", "", regex=True).str.strip()

    def column(key):
        return table[key].astype(object).fillna("") if key in table else pd.Series([""] * len(table))

    full, prompt, neftune, seed = column("targets").eq("full"), column("prompt"), column("neftune"), column("seed")
    average = column("average")
    extras = [("" if not p else f", {p} prompt") + ("" if n == "" else f", NEFTune {float(n):g}") + ("" if r == "" else f", seed {int(r)}")
              + ("" if a == "" else f", weights averaged over the last {float(a):.0%} of steps")
              for p, n, r, a in zip(prompt, neftune, seed, average)]
    table["run"] = [f"{'full weights of ' if f else ''}{'all' if n >= depth else f'top {n} of {depth}'} layers, {s} steps, lr {lr:g}"
                    f"{x}, {rows} test rows ({m}, {d})"
                    for f, n, s, lr, x, rows, m, d in zip(full, layers, planned, table["learning rate"], extras, table["n"], machine,
                                                          table["date"])]
    return table


def learning_curve_results():
    """The course's recorded CPU learning curves (``scripts/cpu_learning_curve.py``): one row per evaluation of a run,
    with its recipe, machine and date, or None if none was recorded. A run is its recipe on its machine
    (``run`` names it: layers adapted, steps in the schedule, learning rate, machine, test rows scored)."""
    return _recorded_runs("cpu_learning_curve.csv")


def recipe_search_results():
    """The other levers the course measured for the CPU tier (``datasets/results/cpu_recipe_search.csv``: one
    evaluation at the end of each run on the held-out test rows): a row per run with its minutes, category (95 %
    interval), priority and exact match; None if the file is missing."""
    table = _recorded_runs("cpu_recipe_search.csv")
    if table is None:
        return None
    wide = table.pivot_table(index=["run", "training minutes"], columns="metric", values=["rate", "low", "high"], aggfunc="first")
    out = wide["rate"][["category", "priority", "exact match"]].copy()
    out.insert(1, "category low", wide["low"]["category"])
    out.insert(2, "category high", wide["high"]["category"])
    return out.reset_index().set_index("run").sort_values("category", ascending=False)


def plot_learning_curve(curve, bar: float, mine=None, metric: str = "category", ax=None):
    """``metric`` (rate and 95 % interval) against training minutes for each recorded run, the desk's ``bar`` as a
    line, and the learner's own runs as stars: ``mine`` is one run, (training minutes, ``evaluate`` table), or a list
    of (label, training minutes, table). A point clears the bar in the memo's sense only when its interval's low end
    is above it."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(8, 3.6))
    rows = curve[curve["metric"] == metric]
    for run, points in rows.groupby("run", sort=False):
        points = points.sort_values("training minutes")
        ax.errorbar(points["training minutes"], points["rate"], yerr=[points["rate"] - points["low"], points["high"] - points["rate"]],
                    marker="o", capsize=3, label=f"course's run: {run}")
    yours = [] if mine is None else [("your run", *mine)] if isinstance(mine[0], (int, float)) else list(mine)
    for (label, minutes, table), colour in zip(yours, ("black", "gold", "white", "grey")):  # outlined in black: apart from the runs
        row = table.loc[metric]
        ax.errorbar([minutes], [row["rate"]], yerr=[[row["rate"] - row["low"]], [row["high"] - row["rate"]]], fmt="*", markersize=14,
                    color=colour, markeredgecolor="black", ecolor="black", capsize=3, label=f"{label} ({int(row['n'])} test rows)")
    ax.axhline(bar, color="crimson", linestyle="--", label=f"the desk's bar ({bar:.0%})")
    ax.set_xlim(left=0)
    ax.set_ylim(0, 1)
    ax.set_xlabel("training minutes (CPU, 2 cores)")
    ax.set_ylabel(f"{metric}: share right")
    ax.set_title(f"{metric} vs training time: the course's recorded runs, 95% intervals")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return ax


def curve_reading(curve, bar: float, budget_minutes: float, metric: str = "category") -> str:
    """One sentence from the recorded curves: the best ``metric`` reached within ``budget_minutes`` of training and
    overall, each with its interval, against the desk's ``bar`` (cleared only when the interval's low end is above it)."""
    rows = curve[curve["metric"] == metric]
    if rows.empty:
        return f"no recorded run measured {metric}"

    def said(row) -> str:
        verdict = "clears" if row["low"] >= bar else ("reaches, within its interval," if row["high"] >= bar else "stays below")
        return (f"{row['rate']:.0%} ({row['low']:.0%}-{row['high']:.0%}) after {row['training minutes']:.1f} min "
                f"({row['run']}), which {verdict} the desk's {bar:.0%}")

    within = rows[rows["training minutes"] <= budget_minutes]
    best_overall = rows.loc[rows["rate"].idxmax()]
    first = (f"within {budget_minutes:g} minutes of training the best recorded {metric} is " + said(within.loc[within["rate"].idxmax()])
             if not within.empty else f"no recorded run stopped within {budget_minutes:g} minutes")
    return f"{first}; the best of any recorded run is {said(best_overall)}."


def bar_sentence(table, bar: float, metric: str = "category") -> str:
    """The learner's tuned model against the desk's ``bar``, in the memo's words and by the memo's rule: it passes only
    when its 95 % interval's low end is at or above the bar, fails when the whole interval is below, and is unclear
    (more test rows would tell) when the interval straddles it."""
    row = table.loc[metric]
    rate, low, high, n = float(row["rate"]), float(row["low"]), float(row["high"]), int(row["n"])
    verdict = ("passes: the whole interval is at or above it" if low >= bar else
               "fails: the whole interval is below it" if high < bar else
               "is unclear: the interval straddles it, so more test rows would tell")
    return (f"your tuned model's {metric}: {rate:.0%} ({low:.0%}-{high:.0%}) on {n} held-out tickets; against the desk's "
            f"{bar:.0%} bar it {verdict}")


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
    qlora_batch_size: int
    # test rows each exported GGUF file is proven on (loaded back and asked again)
    gguf_rows: int = 12
    # LoRA dropout: 0.05 for the GPU tiers' hundreds of steps; none on a CPU, where a hundred steps see 768 of 2,400
    # rows (no row twice) and each step's dropout masks cost about 1 s of its 8.8 s (bernoulli draws for 210 adapted layers)
    lora_dropout: float = 0.05
    # adapt the top N layers only (None: all): the backward pass stops at the lowest adapted layer, so a CPU step
    # costs about 1.5x less and the same minutes buy more steps (datasets/results/cpu_learning_curve.csv)
    lora_top_layers: int | None = None
    # LoRA's yardstick (helpers.finetune.full): the same rows, steps and top layers, every weight of those layers trained
    # at ``full_learning_rate``; False where the plan's base is 4-bit (the GPU tiers' QLoRA)
    full_finetune: bool = False
    full_learning_rate: float = 2e-4
    # which tuned model the desk deploys (Labs 04 and 05): "lora" or "full", decided by the plan before the run, from the
    # course's recorded curves (datasets/results/cpu_learning_curve.csv), so the test rows that judge it did not pick it
    deploy: str = "lora"


CPU_STEPS = 96
CPU_FULL_LEARNING_RATE = 2e-4
CPU_BUDGET_MINUTES = 8  # the training a learner on a 2-core laptop is asked to wait for (Lab 03's curve is read against it)


def _top_layers(plan) -> int | None:
    """The layers LoRA adapts: the plan's choice (``adapted_layers`` in datasets/tier_defaults.csv: the CPU tier's top 10)."""
    return getattr(plan, "adapted_layers", None)


def _full(plan) -> dict:
    """The full fine-tuning yardstick where the plan's base is a plain 16-/32-bit model on a CPU (the embedded model:
    its top 10 layers' 35M weights, their gradients and Adam state add about 0.4 GB; with the second copy of the model
    the process's peak rose from 2.0 to 2.7 GB in the solution run), deployed in LoRA's place there:
    with Lab 03's seed the course's runs of it scored 85-86 % on the 400 held-out rows against LoRA's 72-76 % on the same
    layers; with seeds 1 and 2 (other rows in another order) it scored 79-80 % (datasets/results/cpu_recipe_search.csv).
    The mean of the weights over the run's second half (``train(average=0.5)``) scored 81-83 % with all three seeds: the
    spread narrows, the mean does not rise, so the deployed model keeps its last step's weights. All six runs misread
    "Can I pause ... instead of cancelling?" on every row and "Notifications ... arrive hours late" on most
    (datasets/results/cpu_phrasing_errors.csv): in four of them the phrasings misread on most rows cap the rate below
    what the memo's rule needs to pass, and in seed 0's two they leave room for only a few other errors
    (helpers.finetune.phrasing)."""
    if plan.device != "cpu" or plan.precision not in ("fp32", "fp16", "bf16"):
        return {}
    return {"full_finetune": True, "full_learning_rate": CPU_FULL_LEARNING_RATE, "deploy": "full"}


def run_settings(plan) -> RunSettings:
    """Training and evaluation sizes for the plan's tier (on a CPU: about 5-7 minutes of training on 2 cores, inside the
    course's ``CPU_BUDGET_MINUTES``).

    Rows per step come from the plan (``plan.batch``, which ``OTS_PLAN="batch=..."`` overrides). On CPU
    the QLoRA demonstration is one small step: 4-bit kernels on a CPU are slow, and the point there is
    the memory, not the speed (the GPU tiers train QLoRA for real).
    """
    rows = plan.batch
    if plan.quick:
        # CI's run of the student copy: every cell's code path, at the smallest sizes that still run it (nothing is checked
        # against stored outputs there; the solution run trains and evaluates at the tier's sizes)
        return RunSettings(steps=2, batch_size=min(rows, 2), learning_rate=3e-3, eval_rows=4, few_shot_rows=2, few_shot_examples=1,
                           qlora_steps=1, qlora_batch_size=1, lora_dropout=0.0, gguf_rows=2,
                           lora_top_layers=_top_layers(plan), **_full(plan))
    if plan.device == "cpu":  # also a GPU tier forced on a machine without one: the sizes follow the device
        # the course's measured curves (datasets/results/cpu_learning_curve.csv): the top 10 layers at 4e-3 learn as much
        # a minute as all 30, and a step costs less. 96 steps (768 rows, 4-7 min on 2 cores) took category from 0 to 0.72
        # (0.68-0.77 on all 400 test rows) and exact match to 0.44; 12 steps (the former recipe) left priority and exact
        # match near 0. No LoRA recipe measured within the budget reaches the desk's 85 % bar. Full fine-tuning of the
        # same top 10 layers (lr 2e-4, the same 96 steps, about 4.5 min) reached 0.85-0.86 (0.81-0.89) on the 400 rows in
        # three runs with Lab 03's seed, 0.79-0.80 with seeds 1 and 2 (2026-12-07; datasets/results/cpu_recipe_search.csv
        # holds the other levers measured: fewer or more layers, other rates, the schema prompt, NEFTune, seeds): Lab 03
        # runs it beside LoRA (C9's yardstick) and deploys it.
        # The whole test split (400 rows, +-4.5 points) keeps the verdict clear of the interval's width: on its first
        # 128 rows the same LoRA recipe scored 0.80 (0.72-0.86), which straddles the bar.
        return RunSettings(steps=CPU_STEPS, batch_size=rows, learning_rate=4e-3, eval_rows=400, few_shot_rows=8, few_shot_examples=2,
                           qlora_steps=1, qlora_batch_size=2, lora_dropout=0.0, lora_top_layers=_top_layers(plan), **_full(plan))
    if plan.tier == "colab":
        return RunSettings(steps=300, batch_size=rows, learning_rate=2e-4, eval_rows=400, few_shot_rows=400, few_shot_examples=3,
                           qlora_steps=300, qlora_batch_size=rows, gguf_rows=100)
    return RunSettings(steps=600, batch_size=rows, learning_rate=2e-4, eval_rows=400, few_shot_rows=400, few_shot_examples=3,
                       qlora_steps=600, qlora_batch_size=rows, gguf_rows=100)


def key_results(result: TrainResult, before, after, baseline=None) -> tuple[dict[str, float], dict[str, str]]:
    """What Lab 03 saves for the later labs (``helpers.results``): the training run's speed and memory, and
    the before/after accuracy with intervals (Lab 04 re-measures quality; the capstone quotes the gain)."""
    values = {"training steps": result.steps, "training seconds": result.seconds, "training tokens/s": result.tokens_per_s,
              "training peak memory GB": result.peak_memory_gb if math.isfinite(result.peak_memory_gb) else 0.0,
              "eval rows": int(after.loc["valid JSON", "n"])}
    units = {"training seconds": "s", "training tokens/s": "tokens/s", "training peak memory GB": "GB"}
    for metric in ("valid JSON", "category", LENIENT, "product", "exact match"):
        if metric not in before.index or metric not in after.index:
            continue
        for name, frame in (("before", before), ("after", after), ("baseline", baseline)):
            if frame is None or metric not in frame.index:
                continue
            for column in ("rate", "low", "high"):
                values[f"{metric} {name} {column}"] = float(frame.loc[metric, column])
    return values, units
