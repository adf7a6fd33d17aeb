"""The grading round trip, with otter really running the notebooks."""
import csv
from pathlib import Path

import nbformat
import pytest

from helpers import course

LAB = "00_first_open_model"
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    subs = tmp_path_factory.mktemp("submissions")
    nbformat.write(course.answered_lab(LAB), subs / "alice_full.ipynb")
    nbformat.write(course.answered_lab(LAB, set()), subs / "bob_blank.ipynb")
    nbformat.write(course.answered_lab(LAB, {0}), subs / "carol_partial.ipynb")
    looping = course.answered_lab(LAB)
    looping.cells.insert(5, nbformat.v4.new_code_cell("while True:\n    pass"))
    nbformat.write(looping, subs / "aaron_loops.ipynb")  # sorts first: it loops while the others are graded
    before = sorted(p.name for p in (ROOT / "labs" / LAB).rglob("*"))
    out = course.grade_folder(subs, LAB, tmp_path_factory.mktemp("grades") / "grades.csv", timeout_s=90, workers=2)
    rows = {row["student"]: row for row in csv.DictReader(open(out))}
    return rows, before


def test_csv_has_points_per_question_total_and_error(graded):
    rows, _ = graded
    assert list(next(iter(rows.values()))) == ["student", "q1", "q2", "total", "possible", "error", "seconds"]


def test_solution_scores_full_marks(graded):
    rows, _ = graded
    assert float(rows["alice_full"]["total"]) == float(rows["alice_full"]["possible"]) > 0


def test_blank_lab_scores_zero(graded):
    rows, _ = graded
    assert float(rows["bob_blank"]["total"]) == 0.0 and rows["bob_blank"]["error"] == ""


def test_partly_right_scores_in_between(graded):
    rows, _ = graded
    carol = rows["carol_partial"]
    assert 0 < float(carol["total"]) < float(carol["possible"])
    assert float(carol["q1"]) == 2.0 and float(carol["q2"]) == 0.0


def test_looping_submission_is_timed_out_and_recorded(graded):
    rows, _ = graded
    assert rows["aaron_loops"]["error"].startswith("timed out") and float(rows["aaron_loops"]["total"]) == 0.0


def test_grading_does_not_touch_the_lab_folder(graded):
    _, before = graded
    assert sorted(p.name for p in (ROOT / "labs" / LAB).rglob("*")) == before


def test_question_points_come_from_the_autograder():
    assert course.question_points(LAB) == {"q1": 2.0, "q2": 2.0}


def test_lab01_solution_full_marks_and_blank_zero(tmp_path):
    lab = "01_tco_economics"
    subs = tmp_path / "subs"
    subs.mkdir()
    nbformat.write(course.answered_lab(lab), subs / "full.ipynb")
    nbformat.write(course.answered_lab(lab, set()), subs / "blank.ipynb")
    deleting = course.answered_lab(lab)
    deleting.cells.insert(5, nbformat.v4.new_code_cell(
        "import os, shutil\nfor f in os.listdir('.'):\n    shutil.rmtree(f) if os.path.isdir(f) else os.remove(f)"))
    nbformat.write(deleting, subs / "deletes.ipynb")
    before = sorted(p.name for p in (ROOT / "labs" / lab).rglob("*"))
    out = course.grade_folder(subs, lab, tmp_path / "grades.csv", timeout_s=120, workers=2)
    rows = {row["student"]: row for row in csv.DictReader(open(out))}
    assert float(rows["full"]["total"]) == float(rows["full"]["possible"]) == 6.0
    assert float(rows["blank"]["total"]) == 0.0
    # the deleting notebook emptied its own scratch folder (otter's files included): it scores zero,
    # the reason is recorded, and neither the kit nor the other submissions are touched
    assert float(rows["deletes"]["total"]) == 0.0 and rows["deletes"]["error"].startswith("autograder failed")
    assert sorted(p.name for p in (ROOT / "labs" / lab).rglob("*")) == before
    assert (ROOT / "helpers" / "course.py").exists()
