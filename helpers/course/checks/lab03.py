"""Lab 03's checks: LoRA's parameter count from the catalog (q1), reading the learner's own before/after tables
(q2; ``zero_shot`` and ``after`` are declared measured context), and the prompt-masking fix (q3)."""
from __future__ import annotations

import math

from . import NOT_DONE, first_match, guarded, is_number, near, not_done, shown
from .digest import is_answer, undo
from ..feedback import stub_result

Q1 = {"model": "qwen2.5-1.5b", "r": 8, "targets": ("q_proj", "v_proj")}


def _rates(frame) -> str | None:
    import pandas as pd

    if not isinstance(frame, pd.DataFrame) or not {"rate", "low", "high"} <= set(frame.columns):
        return "an evaluation table with rate, low and high columns (ft.evaluate)"
    if not {"valid JSON", "category"} <= set(frame.index):
        return "rows for valid JSON and category"
    for name in ("valid JSON", "category"):
        low, rate, high = (float(frame.loc[name, c]) for c in ("low", "rate", "high"))
        if not all(math.isfinite(v) and 0.0 <= v <= 1.0 for v in (low, rate, high)) or not low <= rate <= high:
            return f"{name}: rates are fractions with low <= rate <= high"
    return None


CONTEXT = {"zero_shot": _rates, "after": _rates}


def lora_count(model: str, r: int, targets) -> int:
    """LoRA's added parameters for a catalog model at rank ``r`` on ``targets``: the named wrong kinds' values."""
    from ...catalog import get_model
    from ...finetune import lora_parameter_count

    return lora_parameter_count(get_model(model), r, list(targets))


@guarded
def q1(lora_params) -> str | None:
    from ...catalog import get_model

    if not_done(lora_params):
        return f"{NOT_DONE}: set lora_params"
    if not isinstance(lora_params, int) or isinstance(lora_params, bool) or lora_params <= 0:
        return f"a positive whole number of parameters, got {shown(lora_params)}"
    if is_answer("03q1", lora_params):
        return None
    spec = get_model(Q1["model"])
    r, h, model, targets = Q1["r"], spec.hidden, Q1["model"], Q1["targets"]
    message = undo(lora_params, [
        ("03q1", lambda v: v * spec.layers, f"that is one layer: LoRA adapts the matrices in each of the {spec.layers} layers"),
        ("03q1", lambda v: v * 2, "each adapted matrix adds r x (d_in + d_out): both the A and the B matrix"),
    ]) or first_match(lora_params, [
        (spec.layers * r * (h + h + h + h), "too many: this model uses grouped-query attention, so v_proj outputs kv_heads x head_dim, not the hidden size"),
        (lora_count(model, r, ("q_proj",)), "that counts q_proj only: v_proj is adapted too"),
        (lora_count(model, r, ("v_proj",)), "that counts v_proj only: q_proj is adapted too"),
        (lora_count(model, 16, targets), "that is rank 16: the exercise asks for rank 8"),
        (spec.layers * r * (h * spec.heads * spec.head_dim + h * spec.kv_heads * spec.head_dim),
         "that multiplies r by d_in and d_out: LoRA's two matrices are thin (d_in x r and r x d_out), their sizes add"),
        (spec.layers * (h * spec.heads * spec.head_dim + h * spec.kv_heads * spec.head_dim),
         "that is the size of the adapted matrices themselves: LoRA adds two thin matrices beside each one"),
    ], rel=1e-9)
    if message:
        return message
    if any(lora_params == lora_count(other, r, targets) for other in ("smollm2-135m", "qwen2.5-7b", "qwen2.5-0.5b")):
        return "that is another model's count: the exercise asks for Qwen2.5-1.5B-Instruct"
    return "not the LoRA parameter count for rank 8 on q_proj and v_proj of Qwen2.5-1.5B"


@guarded
def q2(json_gain, category_after_low, zero_shot, after) -> str | None:
    if not_done(json_gain, category_after_low):
        return f"{NOT_DONE}: set json_gain and category_after_low"
    for name, value in (("json_gain", json_gain), ("category_after_low", category_after_low)):
        if not is_number(value):
            return f"{name} is a number, got {shown(value)}"
    before_json, after_json = float(zero_shot.loc["valid JSON", "rate"]), float(after.loc["valid JSON", "rate"])
    expected = after_json - before_json
    if not near(json_gain, expected, 1e-9, 1e-9):
        before_cat, after_cat = float(zero_shot.loc["category", "rate"]), float(after.loc["category", "rate"])
        message = first_match(json_gain, [
            (-expected, "before minus after: the gain is after minus before") if expected else (None, ""),
            (100 * expected, "a change of a rate is a fraction (0.5 for +50 points), not points"),
            (after_cat - before_cat, "that is the category's change: the exercise asks for the valid-JSON rate"),
            (after_json, "that is the rate after training: subtract the rate before"),
            (after_json / before_json if before_json else None, "that is a ratio: the gain is after minus before"),
        ], rel=1e-9)
        return message or "not the change in the valid-JSON rate from zero-shot to after training"
    low, rate, high = (float(after.loc["category", c]) for c in ("low", "rate", "high"))
    if near(category_after_low, low, 1e-9, 1e-12):
        return None
    message = first_match(category_after_low, [
        (rate, "that is the rate itself: the lower end of its 95 % interval sits below it"),
        (high, "that is the upper end of the interval: the exercise asks for the lower end"),
        (float(zero_shot.loc["category", "low"]), "that is the interval before training: take after's"),
        (float(after.loc["valid JSON", "low"]), "that is the valid-JSON interval: take the category's"),
        (100 * low, "a rate is a fraction, not a percentage"),
    ], rel=1e-9)
    return message or "not the lower end of the category accuracy's interval after training"


@guarded
def q3(mask_prompt) -> str | None:
    ids = [5, 6, 7, 8]
    got, why = stub_result(mask_prompt, ids, 2)
    if why:
        return why
    if ids != [5, 6, 7, 8]:
        return "mask_prompt changed the list it was given: build and return a new list of labels"
    try:
        got = list(got)
    except TypeError:
        return f"return a list of labels, got {type(got).__name__}"
    if got == [5, 6, 7, 8]:
        return "the labels still hold the prompt's ids: put -100 on the first prompt_length tokens"
    if got == [7, 8]:
        return "keep one label per token: -100 on the prompt's tokens, the ids after them unchanged"
    if got == [0, 0, 7, 8]:
        return "masked tokens are -100 (the value the loss ignores), not 0"
    if got == [5, 6, -100, -100]:
        return "that masks the end: the prompt is the first prompt_length tokens"
    if got in ([-100, -100, -100, 8], [-100, 6, 7, 8]):
        return "off by one: exactly prompt_length tokens are masked"
    if got != [-100, -100, 7, 8]:
        return "mask exactly the first prompt_length tokens with -100 and keep the rest"
    # real sequences repeat ids (the chat template's markers, common words): masking by value instead of by position
    # passes the probe above, whose ids are all different
    repeated = mask_prompt([5, 9, 5, 9, 7, 5], 2)
    if list(repeated) != [-100, -100, 5, 9, 7, 5]:
        return ("with repeated token ids the labels go wrong: mask by position (the first prompt_length places), "
                "not by which ids appear in the prompt")
    if list(mask_prompt([1, 2, 3], 0)) != [1, 2, 3]:
        return "with prompt_length 0 nothing is masked"
    if list(mask_prompt([1, 2, 3], 3)) != [-100, -100, -100]:
        return "when the whole sequence is prompt, every label is -100"
    return None
