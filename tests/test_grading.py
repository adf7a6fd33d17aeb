"""The grading round trip, with otter really running the notebooks, on a busy machine."""
import csv
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from helpers import course

LAB = "01_tco_economics"  # the fastest lab: grading logic, not the model, is under test here
ROOT = Path(__file__).resolve().parent.parent
TIMEOUT_S = 45  # a correct Lab 01 submission takes about 20 s under the CPU load below; the re-run path is tested separately
LOOP_TIMEOUT_S = 5  # a looping submission is cut off at this, then again at twice this when re-run alone


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    loaded, rest = tmp_path_factory.mktemp("under_load"), tmp_path_factory.mktemp("submissions")
    nbformat.write(course.answered_lab(LAB), loaded / "alice_full.ipynb")
    nbformat.write(course.answered_lab(LAB, set()), rest / "bob_blank.ipynb")
    nbformat.write(course.answered_lab(LAB, {0}), rest / "carol_partial.ipynb")
    deleting = course.answered_lab(LAB)
    deleting.cells.insert(5, nbformat.v4.new_code_cell(
        "import os, shutil\nfor f in os.listdir('.'):\n    shutil.rmtree(f) if os.path.isdir(f) else os.remove(f)"))
    nbformat.write(deleting, rest / "dave_deletes.ipynb")
    before = sorted(p.name for p in (ROOT / "labs" / LAB).rglob("*"))
    grades = tmp_path_factory.mktemp("grades")
    # the correct submission is graded while another job keeps a core busy
    burner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        under_load = course.grade_folder(loaded, LAB, grades / "loaded.csv", timeout_s=TIMEOUT_S, workers=1)
    finally:
        burner.kill()
    others = course.grade_folder(rest, LAB, grades / "rest.csv", timeout_s=TIMEOUT_S, workers=2)
    rows = {row["student"]: row for out in (under_load, others) for row in csv.DictReader(open(out))}
    return rows, before


def test_csv_has_points_per_question_total_error_and_rerun(graded):
    rows, _ = graded
    assert list(next(iter(rows.values()))) == ["student", "q1", "q2", "q3", "total", "possible", "error", "rerun", "seconds", "to read"]
    # the open-ended question is named for the instructor with its rubric's place, and not scored by the machine
    assert all(row["to read"] == f"q4 (2 pts, rubric in solutions/{LAB}.ipynb)" for row in rows.values())


def test_correct_submission_gets_full_marks_under_cpu_load(graded):
    rows, _ = graded
    alice = rows["alice_full"]
    assert float(alice["total"]) == float(alice["possible"]) == 6.0, alice


def test_blank_lab_scores_zero(graded):
    rows, _ = graded
    assert float(rows["bob_blank"]["total"]) == 0.0 and rows["bob_blank"]["error"] == ""


def test_partly_right_scores_in_between(graded):
    rows, _ = graded
    carol = rows["carol_partial"]
    assert 0 < float(carol["total"]) < float(carol["possible"])


def test_looping_submission_is_retried_alone_then_recorded(tmp_path):
    # graded on its own with a short timeout: only the timeout logic is under test here
    subs = tmp_path / "submissions"
    subs.mkdir()
    looping = course.answered_lab(LAB)
    looping.cells.insert(5, nbformat.v4.new_code_cell("while True:\n    pass"))
    nbformat.write(looping, subs / "aaron_loops.ipynb")
    out = course.grade_folder(subs, LAB, tmp_path / "grades.csv", timeout_s=LOOP_TIMEOUT_S, workers=2)
    aaron = next(csv.DictReader(open(out)))
    assert aaron["error"].startswith("timed out twice") and float(aaron["total"]) == 0.0
    assert aaron["rerun"].startswith(f"timed out after {LOOP_TIMEOUT_S:g} s")


def test_deleting_submission_only_deletes_its_own_copy(graded):
    rows, before = graded
    assert float(rows["dave_deletes"]["total"]) == 0.0 and rows["dave_deletes"]["error"].startswith("autograder failed")
    assert sorted(p.name for p in (ROOT / "labs" / LAB).rglob("*")) == before
    assert (ROOT / "helpers" / "course" / "grading.py").exists()


def test_question_points_come_from_the_autograder():
    assert course.question_points("00_first_open_model") == {"q1": 2.0, "q2": 2.0}


def test_default_timeout_comes_from_the_plan():
    from helpers.hardware import cpu_hardware
    from helpers.plan import plan

    for lab in course.lab_names():
        expected = plan(lab[:2], cpu_hardware(), override="tier=cpu").expected_minutes * 60
        assert course.default_timeout_s(lab) >= max(course.MIN_TIMEOUT_S, expected * course.TIMEOUT_SAFETY)
    assert course.default_timeout_s("03_lora_finetuning") > course.default_timeout_s("01_tco_economics")


def test_make_grader_says_why_checks_are_off(tmp_path, capsys):
    assert course.make_grader(tmp_path) is None
    assert "no tests/ folder" in capsys.readouterr().out
    assert course.make_grader(ROOT / "solutions") is None and capsys.readouterr().out == ""
    assert course.make_grader(ROOT / "labs" / LAB) is not None
