"""Self-checks that teach: each public check passes the solution, says "not done yet" to the blank stub
(function stubs included) and rejects a plausible wrong answer, in one line and without a traceback."""
import types

import pandas as pd
import pytest
from otter.test_files.ok_test import OKTestFile

from helpers.course.feedback import first_failure, stub_result
from helpers.paths import REPO_ROOT

LAB03 = REPO_ROOT / "labs" / "03_lora_finetuning" / "tests"
AFTER = pd.DataFrame({"rate": [0.6], "low": [0.43], "high": [0.75]}, index=["category"])


def _stub(input_ids, prompt_length):  # what the student copy starts with
    ...


def _copies_labels(input_ids, prompt_length):  # the teammate's bug the exercise is about
    return list(input_ids)


def _off_by_one(input_ids, prompt_length):
    return [-100] * (prompt_length + 1) + list(input_ids[prompt_length + 1:])


def _solution(input_ids, prompt_length):
    return [-100] * prompt_length + list(input_ids[prompt_length:])


CASES = [  # (question, environment, passes, what the one line must say)
    ("q1", {"lora_params": 1_089_536}, True, ""),
    ("q1", {"lora_params": ...}, False, "not done yet"),
    ("q1", {"lora_params": 8 * 28 * 4 * 1536}, False, "grouped-query attention"),  # v_proj taken as hidden x hidden
    ("q1", {"lora_params": 38_912}, False, "in each of the 28 layers"),  # one layer only
    ("q2", {"json_gain": 1.0, "category_after_low": 0.43, "after": AFTER}, True, ""),
    ("q2", {"json_gain": ..., "category_after_low": ..., "after": AFTER}, False, "not done yet"),
    ("q2", {"json_gain": 100.0, "category_after_low": 0.43, "after": AFTER}, False, "fraction between -1 and 1"),
    ("q2", {"json_gain": 1.0, "category_after_low": 0.75, "after": AFTER}, False, "lower end of the interval"),
    ("q3", {"mask_prompt": _solution}, True, ""),
    ("q3", {"mask_prompt": _stub}, False, "not done yet: the function returns nothing"),
    ("q3", {"mask_prompt": _copies_labels}, False, "expected [-100, -100, 7, 8], got [5, 6, 7, 8]"),
    ("q3", {"mask_prompt": _off_by_one}, False, "expected [-100, -100, 7, 8]"),
]


@pytest.mark.parametrize("question, env, passes, says", CASES)
def test_lab03_public_checks_teach(question, env, passes, says):
    check = OKTestFile.from_file(str(LAB03 / f"{question}.py"))
    check.run(dict(env))
    assert check.passed_all == passes
    report = check.summary()
    if not passes:
        lines = [line.strip() for line in report.splitlines() if line.strip().startswith("✗")]
        assert len(lines) == 1 and says in lines[0], report  # one message, the right one
        assert "Traceback" not in report


def test_first_failure_prints_only_the_first_problem(capsys):
    first_failure((lambda: True, "fine"), (lambda: 1 / 0, "cannot divide"), (lambda: False, "never reached"))
    assert capsys.readouterr().out == "✗ cannot divide (ZeroDivisionError: division by zero)\n"
    first_failure((lambda: True, "fine"))
    assert capsys.readouterr().out == ""
    assert stub_result(..., 1)[1].startswith("not done yet") and stub_result(lambda x: x / 0, 1)[1].startswith("calling it with 1 raised")


LAB01 = REPO_ROOT / "labs" / "01_tco_economics" / "tests"


@pytest.mark.parametrize("question, env, passes, says", [
    ("q1", {"my_monthly_api_fees": 570.0}, True, ""),
    ("q1", {"my_monthly_api_fees": ...}, False, "not done yet"),
    ("q1", {"my_monthly_api_fees": 570.0 * 12}, False, "too much for a month"),  # a year
    ("q1", {"my_monthly_api_fees": 570.0 / 2e6}, False, "too little for a month"),  # one conversation
    ("q2", {"mini_break_even": 11_423_417.0}, True, ""),
    ("q2", {"mini_break_even": ...}, False, "not done yet"),
    ("q2", {"mini_break_even": 11.4}, False, "not millions"),  # in millions
    ("q3", {"biggest_lever": "usd_per_gpu_hour", "biggest_swing": 1e6}, True, ""),
    ("q3", {"biggest_lever": "GPU price", "biggest_swing": 1e6}, False, "one of the three input names"),
])
def test_lab01_public_checks_teach(question, env, passes, says):
    from helpers import tco

    check = OKTestFile.from_file(str(LAB01 / f"{question}.py"))
    check.run({"tco": tco, **env})
    assert check.passed_all == passes
    if not passes:
        lines = [line.strip() for line in check.summary().splitlines() if line.strip().startswith("✗")]
        assert len(lines) == 1 and says in lines[0] and "Traceback" not in check.summary()


def _run(lab: str, question: str, env: dict):
    check = OKTestFile.from_file(str(REPO_ROOT / "labs" / lab / "tests" / f"{question}.py"))
    check.run(dict(env))
    lines = [line.strip() for line in check.summary().splitlines() if line.strip().startswith("✗")]
    return check.passed_all, lines, check.summary()


TICKET = "Hello, I cannot log in to my account since this morning. Please help!"
QUESTION = "In one sentence, what does a support desk do?"
TABLE = pd.DataFrame({"perplexity": [30.0, 31.0, 45.0]}, index=["fp32", "int8", "nf4"])


def _lab02_env(**answers):
    from helpers import quantize as q
    from helpers.catalog import catalog, estimate_memory

    return {"q": q, "catalog": catalog, "estimate_memory": estimate_memory, "table": TABLE, **answers}


@pytest.mark.parametrize("lab, question, env, passes, says", [
    ("00_first_open_model", "q1", {"TICKET": TICKET, "n_tokens": 17, "tokens_per_word": 17 / 13}, True, ""),
    ("00_first_open_model", "q1", {"TICKET": TICKET, "n_tokens": ..., "tokens_per_word": ...}, False, "not done yet"),
    ("00_first_open_model", "q1", {"TICKET": TICKET, "n_tokens": 13, "tokens_per_word": 1.0}, False, "number of words"),
    ("00_first_open_model", "q1", {"TICKET": TICKET, "n_tokens": 17, "tokens_per_word": 13 / 17}, False, "tokens per word = n_tokens / words"),
    ("02_quantized_inference", "q1", _lab02_env(predicted_gb=10.643808256), True, ""),
    ("02_quantized_inference", "q1", _lab02_env(predicted_gb=7.196090368), False, "fits one conversation"),
    ("02_quantized_inference", "q1", _lab02_env(predicted_gb=30.0), False, "16-bit figure"),
    ("02_quantized_inference", "q2", _lab02_env(largest_on_l4="gemma2-9b"), True, ""),
    ("02_quantized_inference", "q2", _lab02_env(largest_on_l4="mixtral-8x7b"), False, "does not fit on one L4"),
    ("02_quantized_inference", "q3", _lab02_env(nf4_increase=0.5, why="a"), True, ""),
    ("02_quantized_inference", "q3", _lab02_env(nf4_increase=1.5, why="a"), False, "ratio minus 1"),
    ("02_quantized_inference", "q3", _lab02_env(nf4_increase=50.0, why="a"), False, "not a percentage"),
    ("04_benchmarking", "q1", {"stream": [100.42, 100.47, 100.53, 100.58, 100.71, 100.76], "ttft": 0.42, "tpot": 0.068,
                               "itl": [0.05, 0.06, 0.05, 0.13, 0.05]}, True, ""),
    ("04_benchmarking", "q1", {"stream": [100.42, 100.76], "ttft": 100.42, "tpot": 0.34, "itl": [0.34]}, False, "expected 0.42 s"),
    ("04_benchmarking", "q1", {"stream": [100.42, 100.47, 100.53, 100.58, 100.71, 100.76], "ttft": 0.42, "tpot": 0.76 / 6,
                               "itl": [0.05, 0.06, 0.05, 0.13, 0.05]}, False, "TPOT = (E2E - TTFT) / (tokens - 1)"),
    ("04_benchmarking", "q3", {"predicted_speedup": 2.75, "why_not": "some layers stay in sixteen bits here"}, True, ""),
    ("04_benchmarking", "q3", {"predicted_speedup": 1 / 2.75, "why_not": "some layers stay in sixteen bits here"}, False, "bf16 / NF4"),
])
def test_public_checks_teach_in_labs_00_02_04(lab, question, env, passes, says):
    passed, lines, report = _run(lab, question, env)
    assert passed == passes, report
    if not passes:
        assert len(lines) == 1 and says in lines[0] and "Traceback" not in report, report


@pytest.mark.parametrize("reply, passes, says", [
    (None, True, ""),  # the model's own greedy reply
    ("It helps customers.", False, "greedy decoding"),  # plausible text, not what the model says
    (f"<|im_start|>user\n{QUESTION}<|im_end|>\nIt helps.", False, "still holds the prompt"),
    (..., False, "not done yet"),
])
def test_lab00_reply_check_compares_with_greedy_decoding(embedded, reply, passes, says):
    from helpers.models import chat

    model, tokenizer = embedded
    reply = chat(model, tokenizer, QUESTION, max_new_tokens=30) if reply is None else reply
    passed, lines, report = _run("00_first_open_model", "q2", {"QUESTION": QUESTION, "reply": reply, "model": model, "tokenizer": tokenizer})
    assert passed == passes, report
    if not passes:
        assert len(lines) == 1 and says in lines[0] and "Traceback" not in report, report


@pytest.mark.parametrize("rule, passes, says", [
    ('[[rules]]\nname = "refunds"\ncontains = ["refund"]\nroute = "paid"\n', True, ""),
    (..., False, "not done yet"),
    ('rules = "refund -> paid"\n[oops', False, "TOML text"),
    ('[[rules]]\nname = "refunds"\ncontains = ["refund"]\nroute = "local"\n', False, 'route = "paid"'),
])
def test_lab05_rule_check_teaches(rule, passes, says):
    from helpers import deploy

    passed, lines, report = _run("05_hybrid_deployment", "q1", {"deploy": deploy, "my_rule": rule})
    assert passed == passes, report
    if not passes:
        assert len(lines) == 1 and says in lines[0] and "Traceback" not in report, report


PAID_ROWS = pd.DataFrame({"tokens_in": [900, 1100], "tokens_out": [240, 260]})  # means 1000 in, 250 out
PRICES = (0.4, 1.6)  # USD per 1M input / output tokens
BILL = 3_000_000 * (1000 * 0.4 + 250 * 1.6) / 1e6  # 30 % of 10M conversations


@pytest.mark.parametrize("bill, passes, says", [
    (BILL, True, ""),
    (..., False, "not done yet"),
    (BILL / 0.3, False, "only 30 % go to the paid API"),  # every conversation billed
    (3_000_000 * (1000 * 1.6 + 250 * 0.4) / 1e6, False, "input tokens are billed at the input price"),  # prices swapped
    (BILL * 1e6, False, "per 1M tokens"),  # forgot the 1e6
    (BILL / 30, False, "far too little"),  # a day's bill
])
def test_lab05_bill_check_teaches(bill, passes, says):
    passed, lines, report = _run("05_hybrid_deployment", "q2", {"monthly_api_bill": bill, "paid_rows": PAID_ROWS, "prices": PRICES})
    assert passed == passes, report
    if not passes:
        assert len(lines) == 1 and says in lines[0] and "Traceback" not in report, report


def _record(start, first, end, concurrency, tokens=5):
    from helpers.bench.metrics import RequestRecord

    chunks = [first + i * (end - first) / (tokens - 1) for i in range(tokens)]
    return RequestRecord(start=start, end=end, chunk_times=chunks, output_tokens=tokens, engine="served", concurrency=concurrency)


# level 1: two requests within both targets (2 met / 2 s = 1.0/s); level 2: four requests in 2 s, two with a 1.8 s
# first token: they meet the sweep's own target (2 s) but not the exercise's (1.5 s): strict 1.0/s, loose and raw 2.0/s
LOAD = [_record(0, 0.5, 1.0, 1), _record(1.0, 1.5, 2.0, 1),
        _record(10, 10.5, 11.0, 2), _record(10, 10.5, 11.0, 2), _record(10, 11.8, 12.0, 2), _record(10, 11.8, 12.0, 2)]


@pytest.mark.parametrize("best_concurrency, best_goodput, passes, says", [
    (1, 1.0, True, ""),  # a tie at 1.0/s: the first level reaching it is fine, and so is level 2
    (2, 1.0, True, ""),
    (..., ..., False, "not done yet"),
    (2, 2.0, False, "sweep's own target"),  # forgot to re-summarise under the stricter SLO
    (3, 1.0, False, "one of the levels you swept"),
    (1, 0.5, False, "highest goodput"),
])
def test_lab04_goodput_check_teaches(best_concurrency, best_goodput, passes, says):
    from helpers import bench
    from helpers.bench.metrics import SLO

    settings = types.SimpleNamespace(concurrencies=[1, 2])
    env = {"bench": bench, "SLO": SLO, "settings": settings, "load_records": LOAD,
           "best_concurrency": best_concurrency, "best_goodput": best_goodput}
    passed, lines, report = _run("04_benchmarking", "q2", env)
    assert passed == passes, report
    if not passes:
        assert len(lines) == 1 and says in lines[0] and "Traceback" not in report, report


SUMMARY = pd.DataFrame({"median": [1_000_000.0, 400_000.0, 700_000.0]}, index=["all-API", "self-hosted", "hybrid"])
SUMMARY.attrs["paid_share"] = 0.3


@pytest.mark.parametrize("value, why, passes, says", [
    (0.3 * 1_000_000 + 0.7 * 400_000, "whole GPUs and staff do not shrink with traffic", True, ""),
    (..., ..., False, "not done yet"),
    (0.7 * 1_000_000 + 0.3 * 400_000, "whole GPUs and staff do not shrink with traffic", False, "wrong way round"),
    (1_400_000.0, "whole GPUs and staff do not shrink with traffic", False, "lies between them"),  # a sum, not a mix
    (0.3 * 1_000_000 + 0.7 * 400_000, "GPUs", False, "one sentence"),
])
def test_capstone_check_teaches(value, why, passes, says):
    passed, lines, report = _run("06_decision_memo", "q1", {"summary": SUMMARY, "hybrid_proportional": value, "why_memo_differs": why})
    assert passed == passes, report
    if not passes:
        assert len(lines) == 1 and says in lines[0] and "Traceback" not in report, report


def test_a_failing_check_shows_one_line_not_its_source(monkeypatch):
    """What the learner sees from grader.check(...): one line per failing check, never the doctest's source, its
    expected values or a traceback; a check that cannot run at all says so in one line too."""
    from helpers.course.grading import make_grader

    monkeypatch.chdir(LAB03.parent)
    grader = make_grader(".")
    wrong = grader.check("q1", {"lora_params": 38_912})
    text, html = repr(wrong), wrong._repr_html_()
    assert text.splitlines()[0] == "q1:" and len(text.splitlines()) == 2 and "in each of the 28 layers" in text
    assert "first_failure" not in text + html and "lambda" not in text + html and "1_089_536" not in text + html
    assert not wrong.passed_all and repr(grader.check("q1", {"lora_params": 1_089_536})) == "q1 passed!"
    broken = repr(grader.check("q2", {"json_gain": 1.0, "category_after_low": 0.43}))  # `after` was never defined
    assert broken.splitlines()[1].startswith("✗") and "Traceback" not in broken and len(broken.splitlines()) == 2


def test_a_message_that_cannot_be_formed_is_still_one_line(capsys):
    first_failure((lambda: False, lambda: f"got {1 / 0}"))
    out = capsys.readouterr().out
    assert out.startswith("✗ this value cannot be checked (ZeroDivisionError)") and out.count("\n") == 1
