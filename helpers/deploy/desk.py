"""The desk's model and the desk's task, in Lab 05: what the local upstream serves and how each answer is scored.

Lab 05 deploys the model the learner tuned in Lab 03 (:func:`desk_model` asks the results store for it, and falls
back to the plan's base model with a note naming Lab 03). The day's requests are Lab 03's task, ticket triage: each
upstream gets the system prompt its model expects (the tuned model learned the short instruction; a general model
needs the schema spelled out), and every answer from a *measured* upstream is scored against the ticket's label
(:func:`score_reply`: the category right, the figure Lab 03 reports). An upstream that is a stand-in (the kit's
loopback imitation of a paid API) answers with a fixed sentence: its quality is "not measured (stand-in)", never a 0
and never a guess (:func:`quality`).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

NOT_MEASURED = "not measured (stand-in)"
# the triage JSON is 27-30 tokens with the embedded model's tokenizer (the test split's targets), plus the end token
TRIAGE_REPLY_TOKENS = 36


@dataclass(frozen=True)
class DeskModel:
    folder: Path          # what the local server serves
    tuned: bool           # Lab 03's merged model (True) or the plan's base model (False)
    system_prompt: str    # the prompt this model answers the triage task with
    note: str             # one line for the learner: which model, and why
    base: str = ""        # the catalog key it was tuned from, or is

    def __str__(self) -> str:
        return self.note

    @property
    def name(self) -> str:
        """The name servers list it by and clients ask for: ``support-desk-<base>`` for the tuned model, else the base."""
        return f"support-desk-{self.base}" if self.tuned else (self.base or "local-model")

    @property
    def words(self) -> str:
        """The model in a sentence: "your fine-tuned smollm2-135m (Lab 03)" or "the base model smollm2-135m"."""
        return f"your fine-tuned {self.base} (Lab 03)" if self.tuned else f"the base model {self.base}"


def _same_architecture(folder: Path, plan) -> bool:
    """Whether ``folder`` (a merged model) was tuned from the plan's model: the catalog's shape against its config."""
    from ..catalog import find_model

    spec = find_model(plan.model)
    try:
        config = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError):
        return False
    if spec is None:  # a model outside the catalog: nothing to compare with, trust the results store
        return True
    return (config.get("num_hidden_layers"), config.get("hidden_size"), config.get("vocab_size")) == (spec.layers, spec.hidden, spec.vocab)


def desk_model(plan) -> DeskModel:
    """The model the desk deploys: Lab 03's merged model where that lab kept one for this plan's model, else the
    plan's base model (the note says so and names Lab 03)."""
    from .. import results
    from ..finetune.lora import SHORT_PROMPT, SYSTEM_PROMPT
    from ..models import ensure_embedded, resolve_model

    merged = results.artifact("03", "merged", quick=plan.quick)
    if merged is not None and _same_architecture(merged, plan):
        return DeskModel(merged, True, SHORT_PROMPT, f"your Lab 03 fine-tuned model ({merged})", plan.model)
    base = ensure_embedded(progress=False) if plan.model == "smollm2-135m" else Path(resolve_model(plan.model).location)
    why = ("Lab 03 kept no fine-tuned model here" if merged is None
           else f"the model Lab 03 kept ({merged}) was tuned from another base than the plan's {plan.model}")
    return DeskModel(base, False, SYSTEM_PROMPT, f"the base model {plan.model}, asked with the schema: {why}; "
                                                 "run Lab 03 to the end to deploy your fine-tuned model", plan.model)


def score_reply(text: str, target: dict | None) -> dict | None:
    """A reply scored against the ticket's label: valid triage JSON, and the category right. None without a label."""
    from ..finetune.lora import parse_prediction

    if not target:
        return None
    parsed = parse_prediction(text or "")
    return {"valid": parsed is not None, "correct": parsed is not None and parsed.get("category") == target.get("category")}


def quality(table, stand_ins: set[str] | frozenset[str] = frozenset()):
    """Triage accuracy per route of the answered requests, with a 95 % Wilson interval. ``table`` has ``route``,
    ``outcome`` and ``correct`` (1/0, or missing where not scored); routes in ``stand_ins`` are "not measured"."""
    import pandas as pd

    from ..finetune.lora import wilson_interval

    rows = []
    answered = table[table["outcome"] == "answered"]
    for route in ("local", "paid"):
        mine = answered[answered["route"] == route]
        scored = mine["correct"].dropna() if "correct" in mine else mine.iloc[0:0]
        if route in stand_ins:
            rows.append({"route": route, "answered": len(mine), "scored": 0, "correct": None, "accuracy": None, "low": None,
                         "high": None, "status": NOT_MEASURED})
            continue
        k, n = int(scored.sum()), int(len(scored))
        low, high = wilson_interval(k, n)
        rows.append({"route": route, "answered": len(mine), "scored": n, "correct": k, "accuracy": k / n if n else None,
                     "low": low if n else None, "high": high if n else None,
                     "status": "measured" if n else "no scored answers"})
    frame = pd.DataFrame(rows, columns=["route", "answered", "scored", "correct", "accuracy", "low", "high", "status"]).set_index("route")
    for column in ("answered", "scored", "correct"):  # counts stay whole numbers ("13", not "13.000000") beside a missing one
        frame[column] = frame[column].astype("Int64")
    return frame


STAND_IN_KEY_ENV = "OTS_STANDIN_KEY"


def policy_overrides(server, paid, model: DeskModel, api_model: str, cap: float) -> dict:
    """What Lab 05 changes in ``datasets/deploy/policy.toml``: the local upstream is the server it started for the desk's
    model (with that model's task prompt), the paid one is ``paid`` (``upstream.paid_upstream``: a real endpoint priced
    at its own row, or the stand-in priced as Lab 01's API model), asked with the full schema; the cap for the day."""
    import os

    from ..finetune.lora import SYSTEM_PROMPT

    if paid.stand_in:
        os.environ.setdefault(STAND_IN_KEY_ENV, "the-stand-in-needs-no-key")  # a real key is exported, never written here
        key_env, price_model = STAND_IN_KEY_ENV, api_model
    else:
        key_env, price_model = paid.api_key_env, paid.price_model
    return {"local": {"base_url": server.base_url, "model": server.model, "system_prompt": model.system_prompt},
            "paid": {"base_url": paid.base_url, "model": paid.model, "api_key_env": key_env, "price_model": price_model,
                     "system_prompt": SYSTEM_PROMPT, "stand_in": bool(paid.stand_in)},
            "budget": {"monthly_cap_usd": cap}}


def ask(base_url: str, model: str, message: str, system_prompt: str = "", max_tokens: int = TRIAGE_REPLY_TOKENS,
        api_key_env: str = "") -> tuple[str, int, int]:
    """One chat completion with the official client: (reply, tokens in, tokens out). The key is read from the variable
    ``api_key_env`` names (never passed around as a value)."""
    import os

    from openai import OpenAI

    client = OpenAI(base_url=base_url, api_key=os.environ.get(api_key_env, "") if api_key_env else "not-needed-on-loopback",
                    max_retries=0)
    messages = ([{"role": "system", "content": system_prompt}] if system_prompt else []) + [{"role": "user", "content": message}]
    reply = client.chat.completions.create(model=model, max_tokens=max_tokens, messages=messages, temperature=0.0)  # greedy
    usage = reply.usage
    return reply.choices[0].message.content or "", usage.prompt_tokens if usage else 0, usage.completion_tokens if usage else 0
