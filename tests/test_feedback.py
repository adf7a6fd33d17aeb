"""What a learner sees of a self-check: one line, no test source, no recipe (the checks themselves, with their
wrong-answer table, are tested in test_checks.py)."""
import pytest

from helpers.course.checks import guarded, say
from helpers.course.feedback import stub_result
from helpers.paths import REPO_ROOT

LAB03 = REPO_ROOT / "labs" / "03_lora_finetuning" / "tests"


def test_a_check_prints_one_line_when_wrong_and_nothing_when_right(capsys):
    say("cannot divide")
    assert capsys.readouterr().out == "✗ cannot divide\n"
    say(None)
    assert capsys.readouterr().out == ""
    assert stub_result(..., 1)[1].startswith("not done yet") and stub_result(lambda x: x / 0, 1)[1].startswith("calling it with 1 raised")


@pytest.mark.parametrize("lab", ["00_first_open_model", "01_tco_economics", "02_quantized_inference", "03_lora_finetuning",
                                 "04_benchmarking", "05_hybrid_deployment", "06_decision_memo"])
def test_the_generated_checks_hold_no_recipe(lab):
    """A public check file only calls the lab's check (helpers/course/checks): no expected value, no formula, no
    reference to the lesson's inputs a notebook could rebind."""
    for path in sorted((REPO_ROOT / "labs" / lab / "tests").glob("q*.py")):
        test = {}
        exec(compile(path.read_text(), str(path), "exec"), test)  # noqa: S102 - the kit's own generated file
        for suite in test["test"]["suites"]:
            for case in suite["cases"]:
                lines = [line for line in case["code"].splitlines() if line.strip()]
                assert len(lines) == 2 and lines[0].startswith(">>> from helpers.course.checks import lab"), (path, lines)
                assert lines[1].startswith(">>> say(lab") and "lambda" not in case["code"], (path, lines)


def test_a_failing_check_shows_one_line_not_its_source(monkeypatch):
    """What the learner sees from grader.check(...): one line per failing check, never the doctest's source, its
    expected values or a traceback; a check that cannot run at all says so in one line too."""
    from helpers.course.grading import make_grader

    monkeypatch.chdir(LAB03.parent)
    grader = make_grader(".")
    wrong = grader.check("q1", {"lora_params": 38_912})
    text, html = repr(wrong), wrong._repr_html_()
    assert text.splitlines()[0] == "q1:" and len(text.splitlines()) == 2 and "in each of the 28 layers" in text
    assert "say(" not in text + html and "lambda" not in text + html and "1_089_536" not in text + html
    assert not wrong.passed_all and repr(grader.check("q1", {"lora_params": 1_089_536})) == "q1 passed!"
    broken = repr(grader.check("q2", {"json_gain": 1.0, "category_after_low": 0.43}))  # `after` was never defined
    assert broken.splitlines()[1].startswith("✗") and "Traceback" not in broken and len(broken.splitlines()) == 2


def test_a_message_that_cannot_be_formed_is_still_one_line(capsys):
    say(guarded(lambda value: f"got {1 / value}")(0))
    out = capsys.readouterr().out
    assert out.startswith("✗ checking 0 raised ZeroDivisionError: division by zero") and out.count("\n") == 1
    say(guarded(lambda route: {"local": 1}[route])("paid"))  # the error names what it met, not only its kind
    assert "KeyError: 'paid'" in capsys.readouterr().out
