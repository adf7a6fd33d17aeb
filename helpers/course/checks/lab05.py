"""Lab 05's checks: a routing rule as data (q1), the monthly bill of a routing mix from the learner's ledger (q2;
``paid_rows`` and ``prices`` are declared measured context, ``prices`` must be a snapshot model's), and the leak
fix (q3), run on a day the check builds itself from the kit's data and messages the lesson never showed."""
from __future__ import annotations

import math

from . import NOT_DONE, first_match, guarded, is_number, near, not_done, shown
from ..feedback import stub_result

CONVERSATIONS = 10_000_000
PAID_SHARE = 0.30
RULE_MUST_MATCH = ("I want to file a CHARGEBACK for order 1182", "this looks like fraud to me", "Chargebacks: how long do they take?",
                   "Someone made a fraudulent purchase on my account")
RULE_MUST_NOT_MATCH = ("Where is my parcel?", "I was charged twice for one order", "How do I reset my password?",
                       "Can I change my delivery address?")


def _paid_rows(frame) -> str | None:
    import pandas as pd

    if not isinstance(frame, pd.DataFrame) or not {"tokens_in", "tokens_out"} <= set(frame.columns) or frame.empty:
        return "the ledger's paid, answered rows with tokens_in and tokens_out"
    values = [float(v) for column in ("tokens_in", "tokens_out") for v in frame[column]]
    if not all(math.isfinite(v) and v >= 0 for v in values):
        return "token counts are whole numbers, never negative"
    return None


def _prices(prices) -> str | None:
    from ... import tco

    if not isinstance(prices, (tuple, list)) or len(prices) != 2 or not all(is_number(p) for p in prices):
        return "(input, output) USD per 1M tokens"
    snapshot = {(p.input, p.output) for p in tco.api_prices().values()}
    if tuple(float(p) for p in prices) not in snapshot:
        return "a model's (input, output) prices from Lab 01's dated snapshot"
    return None


CONTEXT = {"paid_rows": _paid_rows, "prices": _prices}


def _parse_rules(my_rule):
    import tomllib

    from ... import deploy

    data = tomllib.loads(my_rule)
    policy = deploy.router.policy_from_dict({"local": {"base_url": "http://127.0.0.1:1/v1", "model": "m"},
                                             "paid": {"base_url": "http://127.0.0.1:2/v1", "model": "n"}, **data})
    return data, policy.rules


@guarded
def q1(my_rule) -> str | None:
    if not_done(my_rule):
        return f"{NOT_DONE}: write my_rule"
    if not isinstance(my_rule, str):
        return f"my_rule is TOML text (a string), got {type(my_rule).__name__}"
    try:
        data, rules = _parse_rules(my_rule)
    except Exception as error:  # noqa: BLE001 - TOML or policy errors, said in one line
        text = str(error).splitlines()[0][:160]
        return f"my_rule is TOML text: one [[rules]] table with name, contains and route ({text})"
    if len(rules) != 1:
        return f"one [[rules]] entry, got {len(rules)}"
    rule, raw = rules[0], data["rules"][0]
    if rule.route != "paid":
        return f'route it to the paid API (route = "paid"), got {shown(rule.route)}'
    missed = [m for m in RULE_MUST_MATCH if not rule.matches(m)]
    if missed:
        if isinstance(raw.get("contains"), str) and "," in raw["contains"]:
            return 'contains is a list of words, e.g. ["one", "two"]: a single string is matched as one phrase'
        if all(rule.matches(m) for m in RULE_MUST_MATCH if "fraud" in m.lower()):
            return "the rule catches fraud but not chargebacks: the exercise names both"
        if all(rule.matches(m) for m in RULE_MUST_MATCH if "charge" in m.lower()):
            return "the rule catches chargebacks but not fraud reports: the exercise names both"
        return "the rule misses messages that mention a chargeback or fraud (any spelling of case, plural or \"fraudulent\")"
    caught = [m for m in RULE_MUST_NOT_MATCH if rule.matches(m)]
    if caught:
        return "the rule also catches routine messages (too short or too broad a word): match chargebacks and fraud only"
    return None


@guarded
def q2(monthly_api_bill, paid_rows, prices) -> str | None:
    if not_done(monthly_api_bill):
        return f"{NOT_DONE}: set monthly_api_bill"
    if not is_number(monthly_api_bill) or monthly_api_bill <= 0:
        return f"a bill in USD, above zero: got {shown(monthly_api_bill)}"
    tokens_in, tokens_out = float(paid_rows["tokens_in"].mean()), float(paid_rows["tokens_out"].mean())
    price_in, price_out = float(prices[0]), float(prices[1])
    paid = PAID_SHARE * CONVERSATIONS
    expected = paid * (tokens_in * price_in + tokens_out * price_out) / 1e6
    if near(monthly_api_bill, expected, 1e-4):
        return None
    medians = float(paid_rows["tokens_in"].median()), float(paid_rows["tokens_out"].median())
    message = first_match(monthly_api_bill, [
        (expected / PAID_SHARE, "that bills all 10M conversations: only 30 % go to the paid API"),
        (paid * (tokens_in * price_out + tokens_out * price_in) / 1e6,
         "input tokens are billed at the input price (prices[0]) and output tokens at the output price (prices[1])"),
        (expected * 1e6, "prices are USD per 1M tokens: divide by 1e6"),
        (expected / 30, "that is a day's bill: the exercise asks for a month"),
        (expected * 12, "that is a year's bill: the exercise asks for a month"),
        (expected * 100, "30 % is 0.30 of the conversations, not 30 of them"),
        (expected / CONVERSATIONS / PAID_SHARE, "that is one conversation's cost: multiply by the paid conversations in a month"),
        (paid * tokens_in * price_in / 1e6, "that bills the input tokens only: add the output tokens at their price"),
        (paid * (medians[0] * price_in + medians[1] * price_out) / 1e6, "use the average (mean) tokens of a paid request, not the median"),
    ], rel=1e-4)
    return message or "not 30 % of 10M conversations at the average paid request's tokens and the given prices"


def _desk():
    """The day the fix is checked on: the kit's held-out tickets (personal data of four kinds, routine and hard ones)
    plus messages the lesson never showed, and the kit's own policy and difficulty model (never the notebook's)."""
    from ... import deploy, finetune as ft, tco
    from ...paths import dataset
    from ...deploy.traffic import Request

    policy = deploy.router.load_policy(dataset("deploy/policy.toml"))
    score = deploy.difficulty.fit(ft.load_tickets("train"))
    day = deploy.traffic.sample_day(ft.load_tickets("test"), 200, tco.scenario()["peak_to_average"], seed=11)
    sensitive = [r for r in day if any(k in ("email", "phone", "iban", "card") for k in r.pii_kinds)][:4]
    routine = [r for r in day if not r.pii_values]
    hard = [r for r in routine if score(r.message) >= policy.hard_threshold][:2]  # hard ones escalate: the fix keeps that
    routine = hard + [r for r in routine if r not in hard][:3]
    novel = [Request("check-novel-1", 0.0, "Please refund me to NL91ABNA0417164300, the kettle arrived broken", ["NL91ABNA0417164300"],
                     "simple", ("iban",)),
             Request("check-novel-2", 1.0, "You can text me on +44 7700 900123 about the delayed sofa", ["+44 7700 900123"],
                     "simple", ("phone",)),
             Request("check-novel-3", 2.0, "What are your opening hours on public holidays?", [], "simple")]
    return policy, score, sensitive + routine + novel


@guarded
def q3(fixed_decide) -> str | None:
    from ... import deploy

    decided, why = stub_result(fixed_decide, "Where is my parcel?")
    if why:
        return why
    if not isinstance(decided, tuple) or len(decided) != 3:
        return "fixed_decide returns three things, as leaky_decide does: the upstreams to try, a reason, and whether it is sensitive"
    order = decided[0]
    if isinstance(order, str) or not isinstance(order, (list, tuple)) or not set(order) <= {"local", "paid"} or not order:
        return 'the first thing returned is a list of upstreams to try in order, e.g. ["local", "paid"]'
    policy, score, day = _desk()
    result = deploy.traffic.leak_test(fixed_decide, day, policy)
    if result["leaked"]:
        return (f"{result['leaked']} personal-data values still reached the paid API: keep them local even when the local "
                "side is down")
    routine = [r for r in day if not r.pii_values]
    if result["routine_fallbacks"] < len(routine):
        return "routine requests no longer fall back to the paid API when the local model is down: fix only the personal-data branch"
    for request in day:
        order, _, sensitive = fixed_decide(request.message)
        if request.pii_values and not sensitive:
            return "a message with personal data must be reported as sensitive (the third value)"
        if not request.pii_values:
            hard = score(request.message) >= policy.hard_threshold
            if list(order)[:1] != (["paid"] if hard else ["local"]):
                return "routine requests must keep their order: hard ones try the paid API first, the others the local model"
    return None
