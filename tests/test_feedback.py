"""Self-checks that teach: each public check passes the solution, says "not done yet" to the blank stub
(function stubs included) and rejects a plausible wrong answer, in one line and without a traceback."""
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
