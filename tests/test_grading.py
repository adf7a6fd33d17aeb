"""The grading round trip, with otter really running the notebooks, on a busy machine."""
import csv
import os
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest

from helpers import course

LAB = "01_tco_economics"  # the fastest lab: grading logic, not the model, is under test here
ROOT = Path(__file__).resolve().parent.parent
TIMEOUT_S = 45  # a correct Lab 01 submission takes about 20 s under the CPU load below; the re-run path is tested separately
LOOP_TIMEOUT_S = 5  # a looping submission is cut off at this, then again at twice this when re-run alone


# `bash kit test` installs bubblewrap where it can (root + apt: CI); elsewhere the attack test is skipped and says why
SANDBOX = course.sandbox_available()
FEEDBACK = {}  # where the fixture's per-student feedback files went
MARKER = "ots-attack-7f3a"
ATTACK = f"""import os, pathlib, subprocess, sys, zipfile, helpers
root = pathlib.Path(helpers.__file__).resolve().parent.parent
for target in (root / "helpers" / "{MARKER}", pathlib.Path("/tmp/{MARKER}-written")):
    try:
        target.write_text("escaped")
    except OSError:
        pass
subprocess.Popen([sys.executable, "-c", "import time, pathlib; time.sleep(4); pathlib.Path('/tmp/{MARKER}-late').write_text('x')  # {MARKER}"],
                 start_new_session=True)
readable = [p for p in (root / "solutions" / "{LAB}.ipynb", root / "build" / "autograder" / "{LAB}.zip")
            if p.exists() and p.stat().st_size > 0]
others = [p.name for p in pathlib.Path(os.environ.get("OTS_SUBMISSIONS", "/nonexistent")).glob("*.ipynb")]
# hidden tests anywhere it can reach: its scratch folder (the autograder otter runs) and its /tmp, kit and venv aside
skip = (str(root), sys.prefix)
for base in (pathlib.Path.cwd().parent, pathlib.Path("/tmp")):
    for folder, subfolders, files in os.walk(base):
        subfolders[:] = [d for d in subfolders if not os.path.join(folder, d).startswith(skip)]
        for name in files:
            path = pathlib.Path(folder, name)
            try:
                data = path.read_bytes() if path.stat().st_size < 5_000_000 else b""
                if name.endswith(".zip"):
                    with zipfile.ZipFile(path) as archive:
                        data = b"".join(archive.read(member) for member in archive.namelist())
            except Exception:
                continue
            if any(needle.encode() in data for needle in ("'hid" + "den': True", "hid" + "den: true")):  # split: not to find itself
                readable.append(path)
for name in os.listdir("."):  # and it empties its working folder (its notebook copy, otter's files there)
    subprocess.run(["rm", "-rf", name])
print("All tests passed! 6.0 / 6.0")
if readable or others:  # what it could read shows in its grade: it ends its own kernel, so it scores zero
    os._exit(1)"""


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    loaded, rest = tmp_path_factory.mktemp("under_load"), tmp_path_factory.mktemp("submissions")
    nbformat.write(course.answered_lab(LAB), loaded / "alice_full.ipynb")
    nbformat.write(course.answered_lab(LAB, set()), rest / "bob_blank.ipynb")
    nbformat.write(course.answered_lab(LAB, {0}), rest / "carol_partial.ipynb")
    # a mischievous one: writes into the kit, leaves a detached process behind, hunts for answers and hidden tests,
    # empties its own folder
    attacking = course.answered_lab(LAB)
    attacking.cells.insert(5, nbformat.v4.new_code_cell(ATTACK))
    nbformat.write(attacking, rest / "eve_attacks.ipynb")
    exiting = course.answered_lab(LAB)  # right answers, then it ends its own kernel: no answers reach the grader
    exiting.cells.insert(len(exiting.cells) - 1, nbformat.v4.new_code_cell("import os\nos._exit(0)"))
    nbformat.write(exiting, rest / "frank_exits.ipynb")
    (rest / "zed_truncated.ipynb").write_text('{"cells": [{"cell_type": "code", "sou')
    before = sorted(p.name for p in (ROOT / "labs" / LAB).rglob("*"))
    grades = tmp_path_factory.mktemp("grades")
    # the correct submission is graded while another job keeps a core busy
    burner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        under_load = course.grade_folder(loaded, LAB, grades / "loaded.csv", timeout_s=TIMEOUT_S, workers=1, sandbox=SANDBOX)
    finally:
        burner.kill()
    os.environ["OTS_SUBMISSIONS"] = str(rest)  # the attack is told where the class's notebooks are
    try:
        others = course.grade_folder(rest, LAB, grades / "rest.csv", timeout_s=TIMEOUT_S, workers=2, sandbox=SANDBOX)
    finally:
        os.environ.pop("OTS_SUBMISSIONS", None)
    csv_after_return = (grades / "rest.csv").read_text()
    FEEDBACK["dir"] = grades / "rest-feedback"
    time.sleep(5)  # longer than the detached process waits before writing (it started before grading ended)
    rows = {row["student"]: row for out in (under_load, others) for row in csv.DictReader(open(out))}
    assert (grades / "rest.csv").read_text() == csv_after_return
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
    out = course.grade_folder(subs, LAB, tmp_path / "grades.csv", timeout_s=LOOP_TIMEOUT_S, workers=2, sandbox=SANDBOX)
    aaron = next(csv.DictReader(open(out)))
    assert aaron["error"].startswith("timed out twice") and float(aaron["total"]) == 0.0
    assert aaron["rerun"].startswith(f"timed out after {LOOP_TIMEOUT_S:g} s")


def test_deleting_submission_only_deletes_its_own_copy(graded):
    rows, before = graded
    # eve emptied her working folder (her notebook copy, otter's files there): her answers are still graded, nothing else lost
    assert float(rows["eve_attacks"]["total"]) == 6.0, rows["eve_attacks"]
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


@pytest.mark.skipif(not SANDBOX, reason="bubblewrap is not installed here (apt-get install bubblewrap)")
def test_attacks_from_a_submission_stay_in_its_sandbox(graded):
    rows, before = graded
    eve = rows["eve_attacks"]
    # full marks: it read no solution, autograder or other submission (it kills its own kernel if it can), and
    # nothing it wrote or started reached outside its scratch folder
    assert float(eve["total"]) == float(eve["possible"]), eve
    assert not (ROOT / "helpers" / MARKER).exists() and not list(ROOT.rglob(f"{MARKER}*"))
    assert not Path(f"/tmp/{MARKER}-written").exists() and not Path(f"/tmp/{MARKER}-late").exists()
    alive = subprocess.run(["pgrep", "-f", MARKER], capture_output=True, text=True).stdout.split()
    assert alive == [], "a process the submission started outlived grading"
    assert sorted(p.name for p in (ROOT / "labs" / LAB).rglob("*")) == before


def test_a_notebook_that_ends_its_kernel_scores_zero_with_one_line(graded):
    rows, _ = graded
    frank = rows["frank_exits"]
    assert float(frank["total"]) == 0.0 and frank["error"].startswith("kernel died") and "\n" not in frank["error"], frank


def test_a_damaged_notebook_is_one_readable_line_and_the_class_goes_on(graded):
    rows, _ = graded
    zed = rows["zed_truncated"]
    assert zed["error"].startswith("not a valid notebook:") and "\n" not in zed["error"] and float(zed["total"]) == 0.0
    assert float(rows["carol_partial"]["total"]) > 0  # graded in the same batch


def test_without_a_sandbox_grading_refuses_and_names_the_fix(tmp_path, monkeypatch):
    from helpers.errors import InputError

    (tmp_path / "a.ipynb").write_text("{}")
    monkeypatch.setattr(course.grading, "sandbox_available", lambda: False)
    with pytest.raises(InputError) as error:
        course.grade_folder(tmp_path, LAB, tmp_path / "g.csv")
    assert "bubblewrap" in error.value.fix and "otter grade" in error.value.fix


def test_cli_guesses_the_lab_past_a_damaged_notebook(tmp_path, capsys):
    from helpers.course.__main__ import main

    (tmp_path / "aa_broken.ipynb").write_text("not json")
    nbformat.write(course.answered_lab(LAB, set()), tmp_path / "bb_blank.ipynb")
    args = ["grade", str(tmp_path), "--out", str(tmp_path / "out" / "g.csv"), "--timeout", "90"] + ([] if SANDBOX else ["--no-sandbox"])
    assert main(args) == 0
    rows = {r["student"]: r for r in csv.DictReader(open(tmp_path / "out" / "g.csv"))}
    assert rows["aa_broken"]["error"].startswith("not a valid notebook") and rows["bb_blank"]["error"] == ""


def test_each_student_gets_a_feedback_file_without_hidden_tests(graded):
    rows, _ = graded
    folder = FEEDBACK["dir"]
    assert sorted(p.stem for p in folder.glob("*.txt")) == sorted(r for r in rows if r != "alice_full")
    carol = (folder / "carol_partial.txt").read_text()
    assert f"autograded: {float(rows['carol_partial']['total']):g} / 6" in carol
    assert "✗ not done yet" in carol  # the public checks' own words for what is missing
    assert "q4: read by your instructor (2 points)" in carol
    assert "_expected" not in carol and "hidden: true" not in carol and "assert" not in carol  # no hidden test code
    assert "problem: not a valid notebook" in (folder / "zed_truncated.txt").read_text()
