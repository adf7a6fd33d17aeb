"""The exercises' self-checks (helpers/course/checks), as a table: for every exercise the solution passes, the blank
stub says "not done yet", and at least three distinct kinds of plausible wrong answer are each rejected with the
one line that names them (never the expected value). Expected values come from the kit's data, so a notebook that
rebinds the lesson's inputs changes nothing (tested at the end)."""
import math

import pandas as pd
import pytest

from helpers.course import answer_key
from helpers.course.checks import lab00, lab01, lab02, lab03, lab04, lab05, lab06, passes

# ------------------------------------------------------------------ shared inputs (the learner's measured context)
TABLE = pd.DataFrame({"perplexity": [30.0, 31.0, 45.0]}, index=["fp32", "int8", "nf4"])
AFTER = pd.DataFrame({"rate": [1.0, 0.6], "low": [0.8, 0.43], "high": [1.0, 0.75]}, index=["valid JSON", "category"])
BEFORE = pd.DataFrame({"rate": [0.25, 0.3], "low": [0.1, 0.15], "high": [0.45, 0.5]}, index=["valid JSON", "category"])
PAID_ROWS = pd.DataFrame({"tokens_in": [900, 1100], "tokens_out": [240, 260]})  # means 1000 in, 250 out
PRICES = (0.4, 1.6)  # gpt-4.1-mini's snapshot prices
BILL = 3_000_000 * (1000 * 0.4 + 250 * 1.6) / 1e6
SUMMARY = pd.DataFrame({"median": [1_000_000.0, 400_000.0, 650_000.0]}, index=["all-API", "self-hosted", "hybrid"])
SUMMARY.attrs.update(paid_share=0.3, cost_share=0.45)
MIX = 0.3 * 1_000_000 + 0.7 * 400_000
WHY = "whole GPUs and staff do not shrink with the traffic kept local"
GAPS = [b - a for a, b in zip(lab04.STREAM, lab04.STREAM[1:])]
TPOT = (lab04.STREAM[-1] - lab04.STREAM[0]) / (len(lab04.STREAM) - 1)
FEES = answer_key.lab01_fees()
BREAK_EVEN = answer_key.lab01_break_even()
LEVER, SWING = answer_key.lab01_lever()
SECOND = sorted(((lab01.swing(n)[0], n) for n in lab01.Q3_RANGES), reverse=True)[1]  # (swing, input) of the second bar
GB = 10.643808256
SPEEDUP = answer_key.lab04_speedup()
LORA = answer_key.lab03_lora()
LESSON_WORKLOAD = (10_000_000, 1500, 360)  # the desk's scenario, worked out by hand from datasets/tco/scenario
RULE = '[[rules]]\nname = "fraud and chargebacks"\ncontains = ["chargeback", "fraud"]\nroute = "paid"\n'


def _record(start, first, end, concurrency, tokens=5):
    from helpers.bench.metrics import RequestRecord

    chunks = [first + i * (end - first) / (tokens - 1) for i in range(tokens)]
    return RequestRecord(start=start, end=end, chunk_times=chunks, output_tokens=tokens, engine="served", concurrency=concurrency)


# level 1: two requests within both targets (2 met / 2 s); level 2: four requests in 2 s, two of them with a 1.8 s first
# token: within the sweep's own target (2 s) but not the users' (1.5 s): strict 1.0/s, loose and raw 2.0/s
LOAD = [_record(0, 0.5, 1.0, 1), _record(1.0, 1.5, 2.0, 1),
        _record(10, 10.5, 11.0, 2), _record(10, 10.5, 11.0, 2), _record(10, 11.8, 12.0, 2), _record(10, 11.8, 12.0, 2)]


# every first token after 3 s: no level keeps a request within the users' target (goodput 0 everywhere)
SLOW_LOAD = [_record(0, 3.0, 3.5, 1), _record(10, 13.0, 13.5, 2), _record(10, 13.2, 13.6, 2)]


def _mask(input_ids, prompt_length):
    return [-100] * prompt_length + list(input_ids[prompt_length:])


def _mask_in_place(input_ids, prompt_length):  # "a mask_prompt that overwrites its input"
    for i in range(prompt_length):
        input_ids[i] = -100
    return input_ids


# (exercise, kind, check, args, what the line must say; "" = passes)
CASES = [
    # Lab 01 q1: a smaller team's monthly API fees
    ("01q1", "solution", lab01.q1, (FEES,), ""),
    ("01q1", "stub", lab01.q1, (...,), "not done yet"),
    ("01q1", "prices swapped", lab01.q1, (2e6 * (900 * 0.6 + 250 * 0.15) / 1e6,), "swapped"),
    ("01q1", "a year", lab01.q1, (FEES * 12,), "a year"),
    ("01q1", "one conversation", lab01.q1, (FEES / 2e6,), "one conversation"),
    ("01q1", "another model", lab01.q1, (lab01.fees("gpt-4o", lab01.Q1_WORKLOAD),), "another model"),
    ("01q1", "per 1M forgotten", lab01.q1, (FEES * 1e6,), "per 1M tokens"),
    ("01q1", "staff and monitoring added", lab01.q1, (FEES + 0.1 * 180_000 / 12 + 500,), "staff and monitoring"),
    ("01q1", "a blended price", lab01.q1, (2e6 * 1150 * (0.75 * 0.15 + 0.25 * 0.6) / 1e6,), "blended price"),
    ("01q1", "the lesson's workload", lab01.q1, (lab01.fees("gpt-4o-mini", LESSON_WORKLOAD),), "lesson's workload"),
    ("01q1", "the lesson's example", lab01.q1, (lab01.fees("gpt-4o", LESSON_WORKLOAD),), "lesson's example"),
    # Lab 01 q2: break-even against gpt-4.1-mini
    ("01q2", "solution", lab01.q2, (BREAK_EVEN,), ""),
    ("01q2", "stub", lab01.q2, (...,), "not done yet"),
    ("01q2", "the lesson's break-even reused", lab01.q2, (lab01.break_even("gpt-4o"),), "lesson's break-even"),
    ("01q2", "in millions", lab01.q2, (BREAK_EVEN / 1e6,), "not millions"),
    ("01q2", "another horizon", lab01.q2, (lab01.break_even("gpt-4.1-mini", 12),), "horizon"),
    ("01q2", "another cheap model", lab01.q2, (lab01.break_even("gpt-4o-mini"),), "against gpt-4o-mini"),
    ("01q2", "a day", lab01.q2, (BREAK_EVEN / 30,), "a day"),
    # Lab 01 q3: the tornado's biggest lever
    ("01q3", "solution", lab01.q3, (LEVER, SWING), ""),
    ("01q3", "stub", lab01.q3, (..., ...), "not done yet"),
    ("01q3", "a label, not the input name", lab01.q3, ("GPU price", SWING), "one of the three input names"),
    ("01q3", "swing in $M", lab01.q3, (LEVER, SWING / 1e6), "not millions"),
    ("01q3", "a pandas Series for the swing", lab01.q3, (LEVER, pd.Series([1.0, 2.0, 3.0])), "a pandas Series of 3 values"),
    ("01q3", "a monthly swing", lab01.q3, (LEVER, SWING / 36), "monthly swing"),
    ("01q3", "the second bar", lab01.q3, (SECOND[1], SECOND[0]), "not the largest"),
    # Lab 02 q1: memory before loading
    ("02q1", "solution", lab02.q1, (GB,), ""),
    ("02q1", "stub", lab02.q1, (...,), "not done yet"),
    ("02q1", "batch 1", lab02.q1, (7.196090368,), "batch=4"),
    ("02q1", "bf16", lab02.q1, (20.328190208,), "16-bit"),
    ("02q1", "GiB", lab02.q1, (GB / 1.073741824,), "GiB"),
    ("02q1", "weights only", lab02.q1, (5.546851072,), "weights alone"),
    ("02q1", "another context", lab02.q1, (8.345329664,), "8,192"),
    # Lab 02 q2: the largest model on an L4
    ("02q2", "solution", lab02.q2, ("gemma2-9b",), ""),
    ("02q2", "stub", lab02.q2, (...,), "not done yet"),
    ("02q2", "the prompt's example", lab02.q2, ("qwen2.5-7b",), "exercise's example"),
    ("02q2", "does not fit", lab02.q2, ("mixtral-8x7b",), "does not fit"),
    ("02q2", "a Hub id", lab02.q2, ("google/gemma-2-9b-it",), "catalog key"),
    ("02q2", "fits, not the largest", lab02.q2, ("llama3.1-8b",), "more parameters"),
    ("02q2", "the CPU plan's model", lab02.q2, ("smollm2-135m",), "more parameters"),
    # Lab 02 q3: NF4's perplexity increase
    ("02q3", "solution", lab02.q3, (0.5, "a", TABLE), ""),
    ("02q3", "stub", lab02.q3, (..., ..., TABLE), "not done yet"),
    ("02q3", "the ratio", lab02.q3, (1.5, "a", TABLE), "ratio minus 1"),
    ("02q3", "a percentage", lab02.q3, (50.0, "a", TABLE), "not a percentage"),
    ("02q3", "points", lab02.q3, (15.0, "a", TABLE), "perplexity points"),
    ("02q3", "against the row above", lab02.q3, (45 / 31 - 1, "a", TABLE), "row above"),
    ("02q3", "why not a letter", lab02.q3, (0.5, "because", TABLE), "one letter"),
    ("02q3", "why b", lab02.q3, (0.5, "b", TABLE), "embeddings keep"),
    ("02q3", "why c", lab02.q3, (0.5, "c", TABLE), "short text"),
    # Lab 03 q1: LoRA parameters
    ("03q1", "solution", lab03.q1, (LORA,), ""),
    ("03q1", "stub", lab03.q1, (...,), "not done yet"),
    ("03q1", "no grouped-query attention", lab03.q1, (8 * 28 * 4 * 1536,), "grouped-query attention"),
    ("03q1", "one layer", lab03.q1, (LORA // 28,), "one layer"),
    ("03q1", "one projection", lab03.q1, (lab03.lora_count("qwen2.5-1.5b", 8, ("q_proj",)),), "q_proj only"),
    ("03q1", "rank 16", lab03.q1, (lab03.lora_count("qwen2.5-1.5b", 16, ("q_proj", "v_proj")),), "rank 16"),
    ("03q1", "another model", lab03.q1, (lab03.lora_count("smollm2-135m", 8, ("q_proj", "v_proj")),), "another model"),
    ("03q1", "r x d_in x d_out", lab03.q1, (28 * 8 * (1536 * 1536 + 1536 * 256),), "multiplies r by d_in and d_out"),
    # Lab 03 q2: reading the before/after tables
    ("03q2", "solution", lab03.q2, (0.75, 0.43, BEFORE, AFTER), ""),
    ("03q2", "stub", lab03.q2, (..., ..., BEFORE, AFTER), "not done yet"),
    ("03q2", "before minus after", lab03.q2, (-0.75, 0.43, BEFORE, AFTER), "before minus after"),
    ("03q2", "points", lab03.q2, (75.0, 0.43, BEFORE, AFTER), "not points"),
    ("03q2", "the category's change", lab03.q2, (0.3, 0.43, BEFORE, AFTER), "category's change"),
    ("03q2", "the rate, not the low end", lab03.q2, (0.75, 0.6, BEFORE, AFTER), "rate itself"),
    ("03q2", "the high end", lab03.q2, (0.75, 0.75, BEFORE, AFTER), "upper end"),
    ("03q2", "before's interval", lab03.q2, (0.75, 0.15, BEFORE, AFTER), "before training"),
    # Lab 03 q3: mask_prompt
    ("03q3", "solution", lab03.q3, (_mask,), ""),
    ("03q3", "stub", lab03.q3, (lambda input_ids, prompt_length: None,), "not done yet"),
    ("03q3", "copies the labels", lab03.q3, (lambda ids, n: list(ids),), "still hold the prompt"),
    ("03q3", "off by one", lab03.q3, (lambda ids, n: [-100] * (n + 1) + list(ids[n + 1:]),), "off by one"),
    ("03q3", "overwrites its input", lab03.q3, (_mask_in_place,), "changed the list"),
    ("03q3", "drops the prompt", lab03.q3, (lambda ids, n: list(ids[n:]),), "one label per token"),
    ("03q3", "masks with 0", lab03.q3, (lambda ids, n: [0] * n + list(ids[n:]),), "not 0"),
    ("03q3", "masks by value", lab03.q3, (lambda ids, n: [-100 if i in ids[:n] else i for i in ids],), "mask by position"),
    # Lab 04 q1: metrics from a raw stream
    ("04q1", "solution", lab04.q1, (0.42, TPOT, GAPS), ""),
    ("04q1", "stub", lab04.q1, (..., ..., ...), "not done yet"),
    ("04q1", "TTFT as a timestamp", lab04.q1, (100.42, TPOT, GAPS), "is a duration"),
    ("04q1", "TPOT over every token", lab04.q1, (0.42, 0.76 / 6, GAPS), "leaves the first token out"),
    ("04q1", "TPOT divided by the tokens", lab04.q1, (0.42, 0.34 / 6, GAPS), "divide by the gaps"),
    ("04q1", "the first wait as a gap", lab04.q1, (0.42, TPOT, [0.42] + GAPS), "TTFT, not a gap"),
    ("04q1", "milliseconds", lab04.q1, (0.42, TPOT, [g * 1000 for g in GAPS]), "not milliseconds"),
    ("04q1", "itl as a number", lab04.q1, (0.42, TPOT, 0.34), "is a list"),
    # Lab 04 q2: goodput under the users' target
    ("04q2", "solution", lab04.q2, (1, 1.0, LOAD), ""),
    ("04q2", "a tie, the other level", lab04.q2, (2, 1.0, LOAD), ""),
    ("04q2", "no level met the target: said so", lab04.q2, (None, 0.0, SLOW_LOAD), ""),
    ("04q2", "no level met the target: a level named", lab04.q2, (1, 0.0, SLOW_LOAD), "no level of your sweep met"),
    ("04q2", "a level met it: None", lab04.q2, (None, 0.0, LOAD), "did meet the users' target"),
    ("04q2", "stub", lab04.q2, (..., ..., LOAD), "not done yet"),
    ("04q2", "the sweep's own target", lab04.q2, (2, 2.0, LOAD), "sweep's own target"),
    ("04q2", "a level never swept", lab04.q2, (3, 1.0, LOAD), "one of the levels"),
    ("04q2", "tokens per second", lab04.q2, (1, float(__import__("helpers.bench.compare", fromlist=["x"]).sweep_summary(LOAD)["output tokens/s"].max()), LOAD), "not tokens per second"),
    ("04q2", "not the highest", lab04.q2, (1, 0.5, LOAD), "highest goodput"),
    # Lab 04 q3: bytes-only speed-up
    ("04q3", "solution", lab04.q3, (SPEEDUP, WHY), ""),
    ("04q3", "stub", lab04.q3, (..., ...), "not done yet"),
    ("04q3", "inverted", lab04.q3, (1 / SPEEDUP, WHY), "not NF4 / bf16"),
    ("04q3", "bits only", lab04.q3, (4.0, WHY), "16 bits / 4 bits"),
    ("04q3", "int8", lab04.q3, (lab04.speedup("qwen2.5-7b", "bf16", "int8"), WHY), "int8"),
    ("04q3", "the embedded model", lab04.q3, (lab04.speedup("smollm2-135m", "bf16", "nf4"), WHY), "Qwen2.5-7B"),
    ("04q3", "no sentence", lab04.q3, (SPEEDUP, "bytes"), "one sentence"),
    # Lab 05 q1: a routing rule as data
    ("05q1", "solution", lab05.q1, (RULE,), ""),
    ("05q1", "stub", lab05.q1, (...,), "not done yet"),
    ("05q1", "not TOML", lab05.q1, ('rules = "refund -> paid"\n[oops',), "TOML text"),
    ("05q1", "routed locally", lab05.q1, (RULE.replace('"paid"', '"local"'),), 'route = "paid"'),
    ("05q1", "half the words", lab05.q1, (RULE.replace('["chargeback", "fraud"]', '["fraud"]'),), "not chargebacks"),
    ("05q1", "a string for a list", lab05.q1, (RULE.replace('["chargeback", "fraud"]', '"chargeback, fraud"'),), "a list of words"),
    ("05q1", "too broad a word", lab05.q1, (RULE.replace('["chargeback", "fraud"]', '["charge", "fraud"]'),), "routine messages"),
    ("05q1", "two rules", lab05.q1, (RULE + RULE,), "one [[rules]] entry"),
    # Lab 05 q2: the monthly bill of a routing mix
    ("05q2", "solution", lab05.q2, (BILL, PAID_ROWS, PRICES), ""),
    ("05q2", "stub", lab05.q2, (..., PAID_ROWS, PRICES), "not done yet"),
    ("05q2", "all 10M billed", lab05.q2, (BILL / 0.3, PAID_ROWS, PRICES), "only 30 %"),
    ("05q2", "prices swapped", lab05.q2, (3_000_000 * (1000 * 1.6 + 250 * 0.4) / 1e6, PAID_ROWS, PRICES), "input price"),
    ("05q2", "per 1M forgotten", lab05.q2, (BILL * 1e6, PAID_ROWS, PRICES), "per 1M tokens"),
    ("05q2", "a day", lab05.q2, (BILL / 30, PAID_ROWS, PRICES), "a day"),
    ("05q2", "30 for 0.30", lab05.q2, (BILL * 100, PAID_ROWS, PRICES), "0.30"),
    # Lab 06 q1: the proportional hybrid
    ("06q1", "solution", lab06.q1, (MIX, WHY, SUMMARY), ""),
    ("06q1", "stub", lab06.q1, (..., ..., SUMMARY), "not done yet"),
    ("06q1", "shares swapped", lab06.q1, (0.7 * 1_000_000 + 0.3 * 400_000, WHY, SUMMARY), "wrong way round"),
    ("06q1", "plain mean", lab06.q1, (700_000.0, WHY, SUMMARY), "plain mean"),
    ("06q1", "the memo's hybrid", lab06.q1, (650_000.0, WHY, SUMMARY), "memo's hybrid"),
    ("06q1", "the bill's share", lab06.q1, (0.45 * 1_000_000 + 0.55 * 400_000, WHY, SUMMARY), "share of the bill"),
    ("06q1", "a sum", lab06.q1, (1_400_000.0, WHY, SUMMARY), "between them"),
    ("06q1", "no sentence", lab06.q1, (MIX, "GPUs", SUMMARY), "one sentence"),
]


@pytest.mark.parametrize("exercise, kind, check, args, says", CASES, ids=[f"{c[0]}-{c[1]}" for c in CASES])
def test_each_check_passes_the_solution_and_names_the_wrong_kind(exercise, kind, check, args, says):
    message = check(*args)
    if not says:
        assert message is None, f"{exercise} {kind}: {message}"
        return
    assert message and says in message, f"{exercise} {kind}: {message!r}"
    assert "\n" not in message and "Traceback" not in message and len(message) < 240


def test_every_exercise_rejects_at_least_three_wrong_kinds():
    kinds: dict[str, set] = {}
    for exercise, kind, _, _, says in CASES + LAB00_KINDS + LAB05_Q3_KINDS:
        if says and kind != "stub":
            kinds.setdefault(exercise, set()).add(kind)
    exercises = {"00q1", "00q2", "01q1", "01q2", "01q3", "02q1", "02q2", "02q3", "03q1", "03q2", "03q3", "04q1", "04q2", "04q3",
                 "05q1", "05q2", "05q3", "06q1"}
    assert exercises <= set(kinds), exercises - set(kinds)
    assert all(len(kinds[e]) >= 3 for e in exercises), {e: len(kinds[e]) for e in exercises}


def test_no_message_gives_the_expected_value_away():
    """The line says what kind of thing is wrong, never the number the check expects."""
    for exercise, kind, check, args, says in CASES:
        message = check(*args) or ""
        for expected in (FEES, BREAK_EVEN, SWING, GB, SPEEDUP, LORA, BILL, MIX, TPOT):
            for text in (f"{expected:.2f}", f"{expected:,.0f}", f"{expected:.3f}", str(expected)):
                if len(text.replace(",", "").replace(".", "").strip("0")) >= 3:
                    assert text not in message, (exercise, kind, message)


# ------------------------------------------------------------------ Lab 00: the tokenizer and the model are the learner's
LAB00_KINDS = [("00q1", k, None, None, "x") for k in ("words", "characters", "chat template", "words per token")] + \
              [("00q2", k, None, None, "x") for k in ("prompt kept", "special tokens", "too long", "other text",
                                                                "no chat template")]


def test_lab00_checks(embedded):
    from helpers.models import chat

    model, tokenizer = embedded
    assert lab00._greedy(model, tokenizer, 5) == chat(model, tokenizer, lab00.QUESTION, max_new_tokens=5).strip()
    text = lab00.TICKET
    tokens, words = len(tokenizer(text)["input_ids"]), len(text.split())
    templated = len(tokenizer.apply_chat_template([{"role": "user", "content": text}], tokenize=True, return_dict=True)["input_ids"])
    assert lab00.q1(tokens, tokens / words, tokenizer) is None
    assert "not done yet" in lab00.q1(..., ..., tokenizer)
    assert "number of words" in lab00.q1(words, 1.0, tokenizer)
    assert "number of characters" in lab00.q1(len(text), len(text) / words, tokenizer)
    assert "chat template" in lab00.q1(templated, templated / words, tokenizer)
    assert "words per token" in lab00.q1(tokens, words / tokens, tokenizer)
    assert "percentage" in lab00.q1(tokens, 100 * tokens / words, tokenizer)
    for wrong in (tokens / words + 0.5, 2.0):  # the message names neither the formula nor the denominator
        message = lab00.q1(tokens, wrong, tokenizer)
        assert "/" not in message and str(words) not in message, message
    reply = lab00._greedy(model, tokenizer, 30)  # the check's own cached greedy reply (chat, 30 new tokens)
    assert lab00.q2(reply, model, tokenizer) is None
    assert "not done yet" in lab00.q2(..., model, tokenizer)
    assert "holds the prompt" in lab00.q2(f"<|im_start|>user\n{lab00.QUESTION}<|im_end|>\n{reply}", model, tokenizer)
    assert "special tokens" in lab00.q2(reply + "<|im_end|>", model, tokenizer)
    longer = lab00._greedy(model, tokenizer, 60)
    if longer != reply:
        assert "past 30 new tokens" in lab00.q2(longer, model, tokenizer)
    other = lab00.q2("It helps customers with their problems.", model, tokenizer)
    assert "greedy decoding" in other and "\n" not in other
    bare = lab00._greedy_bare(model, tokenizer, 30)  # QUESTION without the chat template
    if bare[:10] != reply[:10]:  # the embedded model stops at once without the template: an empty reply
        assert "chat template" in lab00.q2(bare, model, tokenizer)
    same_start = lab00.q2(reply[:20] + " and something else entirely", model, tokenizer)
    assert "first 20 characters" in same_start  # says where it differs, not two identical prefixes


# ------------------------------------------------------------------ Lab 05 q3: the leak fix, on a day the check builds
LAB05_Q3_KINDS = [("05q3", k, None, None, "x") for k in ("still leaks", "everything local", "no escalation", "not sensitive")]


def test_lab05_leak_fix_check():
    from helpers import deploy

    policy, score, day = lab05._desk()
    assert any(r.pii_values for r in day) and any(score(r.message) >= policy.hard_threshold for r in day if not r.pii_values)
    assert any(r.request_id.startswith("check-novel") for r in day)  # messages the lesson never showed

    def order(message):
        return ["paid", "local"] if score(message) >= policy.hard_threshold else ["local", "paid"]

    def fixed(message):
        sensitive = bool(deploy.pii.find_pii(message))
        return (["local"] if sensitive else order(message)), "why", sensitive

    def leaky(message):
        o = order(message)
        if deploy.pii.find_pii(message):
            o.sort(key=lambda name: name != "local")
            return o, "local first", True
        return o, "routine", False

    def all_local(message):
        return ["local"], "why", bool(deploy.pii.find_pii(message))

    def no_escalation(message):
        sensitive = bool(deploy.pii.find_pii(message))
        return (["local"] if sensitive else ["local", "paid"]), "why", sensitive

    def not_flagged(message):
        return (["local"] if deploy.pii.find_pii(message) else order(message)), "why", False

    assert lab05.q3(fixed) is None
    assert "not done yet" in lab05.q3(lambda message: None)
    assert "still reached the paid API" in lab05.q3(leaky)
    assert "no longer fall back" in lab05.q3(all_local)
    assert "keep their order" in lab05.q3(no_escalation)
    assert "reported as sensitive" in lab05.q3(not_flagged)
    assert "list of upstreams" in lab05.q3(lambda message: ("local", "why", False))


# ------------------------------------------------------------------ trusted inputs, measured context, claims
def test_checks_ignore_the_notebooks_bindings_of_the_lessons_inputs():
    """The Lab 01 attack: a notebook that rebinds `inputs`/`workload` cannot move the expected value (the check never
    reads them), so a wrong answer consistent with its own inputs is still wrong."""
    from helpers import tco

    cheap = tco.default_inputs() | {"usd_per_gpu_hour": 0.01}
    workload, _, host, horizon = tco.from_inputs(cheap)
    forged = tco.break_even_volume(workload, "gpt-4.1-mini", host, horizon, cheap["api_engineer_fte"])
    assert forged is None or not math.isclose(forged, BREAK_EVEN, rel_tol=0.01)
    assert lab01.q2(forged if forged else 1e4) is not None


@pytest.mark.parametrize("validator, bad", [
    (lab02.CONTEXT["table"], pd.DataFrame({"perplexity": [30.0]}, index=["fp32"])),
    (lab02.CONTEXT["table"], pd.DataFrame({"perplexity": [30.0, math.inf]}, index=["fp32", "nf4"])),
    (lab03.CONTEXT["after"], AFTER.assign(low=[1.2, 0.43])),
    (lab04.CONTEXT["load_records"], []),
    (lab04.CONTEXT["load_records"], [_record(10, 9.0, 11.0, 1)]),  # a token before the request left
    (lab05.CONTEXT["prices"], (0.0001, 0.0002)),  # not a snapshot model's prices
    (lab05.CONTEXT["paid_rows"], PAID_ROWS.assign(tokens_in=[-5, 3])),
    (lab06.CONTEXT["summary"], SUMMARY.drop(index="self-hosted")),
])
def test_measured_context_that_is_not_what_the_lab_measures_is_refused(validator, bad):
    assert validator(bad)


def test_measured_context_of_a_real_run_is_accepted():
    assert not lab02.CONTEXT["table"](TABLE) and not lab03.CONTEXT["after"](AFTER) and not lab04.CONTEXT["load_records"](LOAD)
    assert not lab05.CONTEXT["prices"](PRICES) and not lab05.CONTEXT["paid_rows"](PAID_ROWS) and not lab06.CONTEXT["summary"](SUMMARY)


def test_a_claim_uses_an_exercise_answer_only_once_its_check_passes():
    assert passes(lab01.q2, BREAK_EVEN) and not passes(lab01.q2, lab01.break_even("gpt-4o")) and not passes(lab01.q2, ...)
    assert not passes(lab02.q2, "qwen2.5-7b") and passes(lab02.q2, "gemma2-9b")
    assert not passes(lambda value: 1 / 0, 1)


def test_a_strange_value_gets_one_line_not_a_traceback():
    for message in (lab01.q1(float("nan")), lab02.q3(0.5, "a", "not a table"), lab04.q2(1, 1.0, "records"),
                    lab06.q1(MIX, WHY, None), lab05.q1(b"bytes")):
        assert message and "\n" not in message and "Traceback" not in message


def test_the_stored_digests_are_the_answer_keys():
    """A price or catalog change moves an answer: digests.json must follow (bash kit build-labs writes it)."""
    import json

    from helpers.course.checks import digest

    assert json.loads(digest.DIGESTS.read_text()) == answer_key.digests(), "run bash kit build-labs"
    for question, value in answer_key.answers().items():
        assert digest.is_answer(question, value) or (value is None and digest.is_none(question)), question
    assert digest.is_answer("01q1", FEES * (1 + 5e-5)) and not digest.is_answer("01q1", FEES * 1.01)
    assert not digest.is_answer("03q1", LORA + 1) and not digest.is_answer("02q2", "qwen2.5-7b")
    assert "570" not in digest.DIGESTS.read_text() and str(LORA) not in digest.DIGESTS.read_text()
