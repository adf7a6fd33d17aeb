"""The grading round trip, with otter really running the notebooks, on a busy machine."""
import csv
import os
import shutil
import subprocess
import sys
import tempfile
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
SECRET = "-".join(["hf", "instructorsecretvalue", "0042"])  # built here: no key-shaped string in the repository
PLAIN = "correct horse battery staple 42"  # not shaped like a key, held by the grading process's environment
ENV_SECRET = "plain-" + "dotenv-value-7731"  # held by the kit's .env
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
# the instructor's secrets: the grading process's environment, its home, the repository's history
readable += [name for name in os.environ if name.startswith("OTS_TEST_SECRET") or name in ("HF_TOKEN", "OPENAI_API_KEY")]
readable += [p for p in (pathlib.Path(os.environ.get("OTS_TEST_REAL_HOME", "/nonexistent")) / "secret.txt", root / ".git" / "HEAD") if p.exists()]
others = [p.name for p in pathlib.Path(os.environ.get("OTS_SUBMISSIONS", "/nonexistent")).glob("*.ipynb")]
# the host's own secrets and services: /etc/shadow (root keeps owner rights), the kit's .env, any Unix socket
for path in (pathlib.Path("/etc/shadow"), root / ".env", pathlib.Path("/srv/ots-other-copy/solutions/{LAB}.ipynb")):
    try:
        if path.read_text():
            readable.append(str(path))
    except OSError:
        pass
import socket
for folder in ("/run", "/var/run", os.environ.get("OTS_TEST_SOCKET_DIR", "/nonexistent")):
    for place, _, names in os.walk(folder):
        for name in names:
            with socket.socket(socket.AF_UNIX) as probe:
                try:
                    probe.settimeout(1)
                    probe.connect(os.path.join(place, name))
                    readable.append(os.path.join(place, name))
                except OSError:
                    pass
# RAM-backed folders are sized: 600 MB to /dev/shm does not fit
try:
    with open("/dev/shm/{MARKER}-fill", "wb") as handle:
        for _ in range(600):
            handle.write(bytes(2**20))
    readable.append("/dev/shm took 600 MB")
except OSError:
    pass
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


def _lab_files() -> list[str]:
    """The lab's folder as the kit built it (.OTTER_LOG, git-ignored, comes and goes as the lab's own notebook runs its
    checks beside this test)."""
    return sorted(p.name for p in (ROOT / "labs" / LAB).rglob("*") if p.name != ".OTTER_LOG")


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
    # a key-shaped string in a raised error must not reach the gradebook
    # with what it finds of the grader's environment and of the kit's .env, and a terminal escape: the gradebook shows none
    attacking.cells.insert(len(attacking.cells) - 1, nbformat.v4.new_code_cell(
        'import os, pathlib, helpers\n_env = pathlib.Path(helpers.__file__).resolve().parent.parent / ".env"\n'
        'try:\n    _found = _env.read_text()\nexcept OSError:\n    _found = ""\n'
        'raise ValueError("sk-" + "attackerkey1234567 \\x1b[2K\\x1b]0;owned\\x07" + str(os.environ.get("OTS_TEST_PLAIN")) + _found)'))
    # and it asks for more memory than the machine has: a MemoryError in its own kernel, the class goes on
    attacking.cells.insert(len(attacking.cells) - 1, nbformat.v4.new_code_cell("hog = bytearray(512 * 2**30)"))
    nbformat.write(attacking, rest / "eve_attacks.ipynb")
    flooding = course.answered_lab(LAB)  # starts processes until the sandbox's limit stops it
    flooding.cells.insert(3, nbformat.v4.new_code_cell(
        "import subprocess, time\nprocs = [subprocess.Popen(['sleep', '120.317']) for _ in range(400)]\ntime.sleep(60)"))
    nbformat.write(flooding, rest / "mallory_floods.ipynb")
    # the rebinding attack: a nearly free GPU and dearer staff, then answers consistent with them (break-even, tornado)
    rebinding = course.answered_lab(LAB)
    at = next(i for i, cell in enumerate(rebinding.cells) if "inputs = tco.default_inputs()" in cell.source) + 1
    rebinding.cells.insert(at, nbformat.v4.new_code_cell(
        'inputs["usd_per_gpu_hour"] = 0.05\ninputs["engineer_cost_per_year"] *= 2\nworkload, api_price, host, horizon = tco.from_inputs(inputs)'))
    nbformat.write(rebinding, rest / "trudy_rebinds.ipynb")
    exiting = course.answered_lab(LAB)  # it ends its own kernel early: no answers reach the grader
    exiting.cells.insert(3, nbformat.v4.new_code_cell("import os\nos._exit(0)"))
    nbformat.write(exiting, rest / "frank_exits.ipynb")
    (rest / "zed_truncated.ipynb").write_text('{"cells": [{"cell_type": "code", "sou')
    # it puts a folder where the grader saves its answers: the feedback says that, not "did not run to its end"
    blocking = course.answered_lab(LAB, set())
    blocking.cells.insert(3, nbformat.v4.new_code_cell(
        'import os, pathlib\n(pathlib.Path(os.environ["HOME"]).parent / "answers" / "answers.json").mkdir(parents=True, exist_ok=True)'))
    nbformat.write(blocking, rest / "oscar_blocks.ipynb")
    # names a spreadsheet, a file system or a careless grader could trip on: all cheap (not valid notebooks, never run)
    (rest / "late").mkdir()
    (rest / "late" / "zed_truncated.ipynb").write_text("{")
    (rest / "=1+2.ipynb").write_text("{")
    (rest / os.fsdecode(b"\xff\xfename.ipynb")).write_text("{")
    (rest / ("long" * 55 + ".ipynb")).write_text("{")
    (rest / "section1").mkdir()  # two students whose flat names could meet: each keeps a feedback file of their own
    (rest / "section1" / "alice.ipynb").write_text("{")
    (rest / "section1__alice.ipynb").write_text("{")
    (rest / "\x1b[2Kmallory\x1b]0;owned\x07.ipynb").write_text("{")  # a name that would rewrite the terminal
    # the instructor's own solution (no otter metadata) and a notebook whose kernelspec names a kernel nobody has
    nbformat.write(nbformat.read(ROOT / "solutions" / f"{LAB}.ipynb", as_version=4), rest / "instructor_solution.ipynb")
    carol = nbformat.read(rest / "carol_partial.ipynb", as_version=4)
    carol.metadata["kernelspec"] = {"name": "someone-elses-kernel", "display_name": "X", "language": "python"}
    for cell in carol.cells:  # carol answers the open-ended question: twelve words
        if cell.cell_type == "markdown" and "Type your answer here" in cell.source:
            cell.source = "Self-hosting wins above the break-even volume, if staff costs stay this low."
    nbformat.write(carol, rest / "carol_partial.ipynb")
    # a stale feedback file from an earlier run
    before = _lab_files()
    grades = tmp_path_factory.mktemp("grades")
    # the correct submission is graded while two other jobs keep both cores busy
    burners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(2)]
    try:
        under_load = course.grade_folder(loaded, LAB, grades / "loaded.csv", timeout_s=TIMEOUT_S, workers=1, sandbox=SANDBOX)
    finally:
        for burner in burners:
            burner.kill()
    os.environ["OTS_SUBMISSIONS"] = str(rest)  # the attack is told where the class's notebooks are
    # secrets the grading process holds: in its environment and in its home; none may reach a submission or a gradebook
    real_home = tmp_path_factory.mktemp("instructor_home")
    (real_home / "secret.txt").write_text(SECRET)
    from helpers.paths import cache_dir

    saved = {k: os.environ.get(k) for k in ("OTS_TEST_SECRET_KEY", "HF_TOKEN", "HOME", "OTS_TEST_REAL_HOME", "OTS_CACHE",
                                            "OTS_TEST_PLAIN", "OTS_TEST_SOCKET_DIR")}
    os.environ.update(OTS_TEST_SECRET_KEY=SECRET, HF_TOKEN=SECRET, HOME=str(real_home), OTS_TEST_REAL_HOME=str(real_home),
                      OTS_CACHE=str(cache_dir()),  # the model cache stays where it is while HOME moves
                      OTS_TEST_PLAIN=PLAIN)  # a secret that is not shaped like a key, under a harmless-looking name
    # a service on this machine: a Unix socket outside the temporary folders (a database, docker.sock)
    import socket as _socket

    socket_dir = Path(tempfile.mkdtemp(dir="/run" if os.access("/run", os.W_OK) else str(ROOT / "build")))
    listener = _socket.socket(_socket.AF_UNIX)
    listener.bind(str(socket_dir / "listener.sock"))
    listener.listen(8)
    os.environ["OTS_TEST_SOCKET_DIR"] = str(socket_dir)
    # the kit's .env with a plain secret (a submission that reads it raises it in an error: the gradebook must not show it)
    other_copy = Path("/srv/ots-other-copy/solutions")  # another copy of the kit's solutions on this machine
    if os.access("/srv", os.W_OK):
        other_copy.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / "solutions" / f"{LAB}.ipynb", other_copy / f"{LAB}.ipynb")
    env_file = ROOT / ".env"
    had_env = env_file.exists()
    if not had_env:
        env_file.write_text(f"PAID_API_PASSWORD={ENV_SECRET}\n")
    (grades / "rest-feedback").mkdir()
    (grades / "rest-feedback" / "left_from_last_year.txt").write_text("old")
    try:
        others = course.grade_folder(rest, LAB, grades / "rest.csv", timeout_s=TIMEOUT_S, workers=2, sandbox=SANDBOX)
    finally:
        listener.close()
        shutil.rmtree(socket_dir, ignore_errors=True)
        shutil.rmtree(other_copy.parent, ignore_errors=True)
        if not had_env:
            env_file.unlink(missing_ok=True)
        os.environ.pop("OTS_SUBMISSIONS", None)
        for key, value in saved.items():
            os.environ.pop(key, None) if value is None else os.environ.__setitem__(key, value)
    csv_after_return = (grades / "rest.csv").read_text()
    FEEDBACK["grades"] = grades
    FEEDBACK["dir"] = grades / "rest-feedback"
    time.sleep(5)  # longer than the detached process waits before writing (it started before grading ended)
    rows = {row["student"]: row for out in (under_load, others) for row in csv.DictReader(open(out))}
    assert (grades / "rest.csv").read_text() == csv_after_return
    return rows, before


def test_csv_has_points_per_question_total_error_and_rerun(graded):
    rows, _ = graded
    assert list(next(iter(rows.values()))) == ["student", "q1", "q2", "q3", "total", "possible", "error", "rerun", "seconds", "to read"]
    # the open-ended question is named for the instructor with its rubric's place, and not scored by the machine
    assert rows["alice_full"]["to read"] == f"q4 (2 pts, blank; rubric in solutions/{LAB}.ipynb)"
    assert rows["carol_partial"]["to read"] == f"q4 (2 pts, written, 12 words; rubric in solutions/{LAB}.ipynb)"
    assert rows["zed_truncated"]["to read"] == f"q4 (2 pts, not found; rubric in solutions/{LAB}.ipynb)"


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
    assert _lab_files() == before
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
    assert _lab_files() == before


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


def test_cli_takes_the_lab_from_the_class_folders_name_past_a_damaged_notebook(tmp_path, capsys):
    from helpers.course.__main__ import main

    folder = tmp_path / LAB  # the class folder is named after the lab: that decides, no notebook does
    folder.mkdir()
    (folder / "aa_broken.ipynb").write_text("not json")
    nbformat.write(course.answered_lab(LAB, set()), folder / "bb_blank.ipynb")
    (folder / "cc_folder.ipynb").mkdir()  # a folder named like a notebook gets its one line
    args = ["grade", str(folder), "--out", str(tmp_path / "out" / "g.csv"), "--timeout", "90"] + ([] if SANDBOX else ["--no-sandbox"])
    assert main(args) == 0
    rows = {r["student"]: r for r in csv.DictReader(open(tmp_path / "out" / "g.csv"))}
    assert rows["aa_broken"]["error"].startswith("not a valid notebook") and rows["bb_blank"]["error"] == ""
    assert rows["cc_folder"]["error"] == "not a notebook file: a folder named like a notebook"


def test_cli_quick_grades_at_ci_sizes(tmp_path, monkeypatch, capsys):
    """Lab 03's full CPU run takes minutes a submission; `kit grade --quick` runs each at CI's sizes instead."""
    from helpers.course import __main__ as cli

    seen = {}

    def fake_grade_folder(folder, lab, out, timeout, workers, sandbox=True):
        seen["quick"] = os.environ.get("OTS_QUICK")
        out = tmp_path / "g.csv"
        out.write_text("student\n")
        return out

    monkeypatch.setattr(cli, "grade_folder", fake_grade_folder)
    monkeypatch.delenv("OTS_QUICK", raising=False)
    assert cli.main(["grade", str(tmp_path), LAB]) == 0 and seen["quick"] is None
    assert cli.main(["grade", str(tmp_path), LAB, "--quick"]) == 0 and seen["quick"] == "1"
    assert "CI's sizes" in capsys.readouterr().err
    os.environ.pop("OTS_QUICK", None)  # main set it for its own grading run


def test_no_single_submission_decides_the_lab(tmp_path):
    """One notebook declaring another assignment, a link, or a 200,000-deep JSON file cannot steer or stop the guess."""
    import json

    from helpers.course.grading import guess_lab

    declared = lambda lab: json.dumps({"cells": [], "metadata": {"otter": {"assignment_name": lab}}})  # noqa: E731
    for name in ("a", "b", "c"):
        (tmp_path / f"{name}.ipynb").write_text(declared(LAB))
    (tmp_path / "mallory.ipynb").write_text(declared("00_first_open_model"))
    (tmp_path / "deep.ipynb").write_text("[" * 200_000 + "]" * 200_000)
    (tmp_path / "link.ipynb").symlink_to(tmp_path / "mallory.ipynb")
    assert guess_lab(tmp_path)[0] == LAB  # 3 against 1 (the link is not followed, the deep file counts for nothing)
    (tmp_path / "mallory2.ipynb").write_text(declared("00_first_open_model"))
    lab, why = guess_lab(tmp_path)
    assert lab is None and "do not agree" in why  # 3 against 2: no clear majority, the instructor names it
    lone = tmp_path / "lone"
    lone.mkdir()
    (lone / "x.ipynb").write_text(declared(LAB))
    assert guess_lab(lone)[0] is None  # one notebook alone never decides


def test_feedback_names_are_injective_and_cells_hold_no_control_characters():
    from helpers.course.grading import GradeResult, csv_cell, feedback_name

    names = ["section1/alice", "section1__alice", "alice", "al ice", "al_ice", "x" * 300, "x" * 301]
    assert len({feedback_name(n) for n in names}) == len(names)
    hostile = "bob\x1b[2K\x1b]0;owned\x07 6/6\u202e\x00"
    result = GradeResult(hostile, {"q1": 0.0}, 0.0, 2.0, "error \x1b[31mred\x1b[0m\r\nnext", messages={"q1": ["\x1b[1A✗ up"]})
    assert result.student == "bob 6/6" and result.error == "error red  next" and result.messages["q1"] == ["✗ up"]
    assert csv_cell("\x1b[2K=1+2") == "'=1+2" and "\x1b" not in result.feedback("01_tco_economics", {})


def test_each_student_gets_a_feedback_file_without_hidden_tests(graded):
    rows, _ = graded
    folder = FEEDBACK["dir"]
    assert len(list(folder.glob("*.txt"))) == len([r for r in rows if r != "alice_full"])
    carol = (folder / "carol_partial.txt").read_text()
    assert f"autograded: {float(rows['carol_partial']['total']):g} / 6" in carol
    assert "✗ not done yet" in carol  # the public checks' own words for what is missing
    assert "q4: read by your instructor (2 points)" in carol
    assert "q4: left blank, nothing for your instructor to read" in (folder / "bob_blank.txt").read_text()
    assert "_expected" not in carol and "hidden: true" not in carol and "assert" not in carol  # no hidden test code
    assert "problem: not a valid notebook" in (folder / "zed_truncated.txt").read_text()


def test_no_secret_reaches_a_submission_or_the_gradebook(graded):
    rows, _ = graded
    everything = "\n".join(p.read_text(errors="replace") for p in FEEDBACK["grades"].rglob("*") if p.is_file())
    assert SECRET not in everything and "attackerkey" not in everything
    assert PLAIN not in everything and ENV_SECRET not in everything and "\x1b" not in everything
    assert len({p.name for p in FEEDBACK["dir"].glob("section1*alice*.txt")}) == 2  # section1/alice and section1__alice
    assert rows["eve_attacks"]["error"].startswith("a cell raised ValueError: [redacted]"), rows["eve_attacks"]


def test_rebinding_the_lessons_inputs_earns_nothing(graded):
    rows, _ = graded
    trudy = rows["trudy_rebinds"]
    assert float(trudy["q2"]) == 0.0 and float(trudy["q3"]) == 0.0 and float(trudy["q1"]) == 2.0, trudy  # q1 reads no input


def test_memory_and_process_limits_stop_one_submission_with_a_reason(graded):
    """A notebook that asks for more memory than its share gets a MemoryError in its own kernel (graded on merit, the
    error named); one that starts hundreds of processes is stopped at the sandbox's limit, with the reason, and leaves
    none behind."""
    rows, _ = graded
    eve, mallory = rows["eve_attacks"], rows["mallory_floods"]
    if SANDBOX:
        assert "MemoryError" in eve["error"], eve
        assert float(mallory["total"]) == 0.0 and "more than 200 processes" in mallory["error"], mallory
    left = subprocess.run(["pgrep", "-f", "sleep 120.317"], capture_output=True, text=True).stdout.split()
    assert not left, left


def test_every_file_is_graded_under_a_name_that_is_safe_everywhere(graded):
    rows, _ = graded
    assert {"zed_truncated", "late/zed_truncated", "'=1+2", "\\xff\\xfename", "long" * 55} <= set(rows)
    assert all(not name.startswith(("=", "+", "-", "@")) for name in rows)
    files = {p.name for p in FEEDBACK["dir"].glob("*.txt")}
    assert "left_from_last_year.txt" not in files and len(files) == len(rows) - 1  # this run's files only (alice: another CSV)
    assert all(len(name) <= 130 for name in files)


def test_the_instructors_solution_and_a_rekerneled_notebook_grade_on_merit(graded):
    rows, _ = graded
    solution = rows["instructor_solution"]
    assert float(solution["total"]) == float(solution["possible"]) and solution["error"] == "", solution
    assert 0 < float(rows["carol_partial"]["total"]) < float(rows["carol_partial"]["possible"])  # its kernelspec named no real kernel


def test_sandbox_environment_is_an_allow_list_and_key_shapes_are_redacted(tmp_path, monkeypatch):
    from helpers.course import grading

    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.delenv("OTS_QUICK", raising=False)
    env = grading.sandbox_env(tmp_path, tmp_path / "home")
    assert SECRET not in " ".join(env.values()) and "OPENAI_API_KEY" not in env and env["OMP_NUM_THREADS"] == "1"
    assert env["HOME"] == str(tmp_path / "home") and env["TMPDIR"] == "/tmp" and env["OTS_GRADING"] == "1"
    assert "OTS_QUICK" not in env  # a full-size run unless the instructor asks for CI's sizes
    monkeypatch.delenv("OMP_NUM_THREADS")
    shared = grading.sandbox_env(tmp_path, tmp_path / "home", threads=grading.threads_per_worker(2))
    assert shared["OMP_NUM_THREADS"] == shared["MKL_NUM_THREADS"] == str(max(1, (os.cpu_count() or 1) // 2))
    monkeypatch.setenv("OMP_NUM_THREADS", "3")  # the grader's own setting wins
    assert grading.sandbox_env(tmp_path, tmp_path / "home", threads=1)["OMP_NUM_THREADS"] == "3"
    assert grading.threads_per_worker(10 * (os.cpu_count() or 1)) == 1
    monkeypatch.setenv("OTS_QUICK", "1")
    assert grading.sandbox_env(tmp_path, tmp_path / "home")["OTS_QUICK"] == "1"
    assert grading.redact(f"ValueError: {SECRET} and sk-" + "proj1234567890abc") == "ValueError: [redacted] and [redacted]"
    assert grading.csv_cell("=HYPERLINK(1)") == "'=HYPERLINK(1)" and grading.csv_cell(3.0) == 3.0
    hidden = [str(p) for p in grading._hidden_roots([])]
    assert str(Path.home().resolve()) in hidden and str((ROOT / ".git").resolve()) in hidden or not (ROOT / ".git").exists()


@pytest.mark.parametrize("kind", ["folder", "fifo", "link", "huge", "malformed", "list"])
def test_whatever_sits_at_the_answers_path_costs_nothing_and_never_blocks(tmp_path, kind):
    from helpers.course import trusted

    path = tmp_path / "answers.json"
    if kind == "folder":
        path.mkdir()
    elif kind == "fifo":
        os.mkfifo(path)
    elif kind == "link":
        path.symlink_to("/dev/zero")
    elif kind == "huge":
        with open(path, "wb") as handle:
            handle.truncate(trusted.MAX_ANSWERS_BYTES + 10)
    elif kind == "malformed":
        path.write_bytes(b"{\xff" + b"[" * 100_000)
    else:
        path.write_text("[1, 2]")
    start = time.monotonic()
    assert trusted.read_answers(path) == {} and time.monotonic() - start < 5


def test_open_answers_count_the_words_written_and_nothing_for_the_stub():
    from helpers.course import grading

    nb = course.answered_lab(LAB)
    assert grading.open_answers(nb, {"q4": 2.0}) == {"q4": 0}
    for cell in nb.cells:
        if cell.cell_type == "markdown" and grading.OPEN_STUB in cell.source:
            cell.source = grading.OPEN_STUB + "\nAt 10M a month the $74,265 bill beats 2 GPUs."
    assert grading.open_answers(nb, {"q4": 2.0}) == {"q4": 10}


def test_a_missing_answer_name_and_a_blocked_answers_file_say_what_happened(graded, tmp_path):
    """Neither is "a hidden test failed (the public check passed)" nor "the notebook did not run to its end"."""
    from helpers.course import grading, trusted

    rows, _ = graded
    if SANDBOX:
        assert rows["oscar_blocks"]["error"].startswith("the answers the grader saves when the notebook ends could not be read")
    spec = grading.lab_grading(LAB)
    found, messages = trusted.score_answers(course.autograder_zip(LAB), {"data": {}, "calls": {}}, spec["imports"],
                                            spec["functions"], {}, spec["context"], only={"q1"})
    assert found == {"q1": 0.0} and messages["q1"] == ["✗ my_monthly_api_fees was not set when your notebook ended: keep "
                                                       "the exercise's name and run every cell from the top"], messages


def test_a_question_the_grader_cannot_finish_costs_only_that_question_and_blames_no_one(tmp_path):
    """Each question is scored on its own clock, retried once in a fresh warm process with twice the time; one that
    still does not finish scores 0 with a message that says it was the grader's time, flagged for a re-grade, and the
    other questions keep their points. The next submission is scored as usual."""
    import json

    from helpers.course import grading

    answers = tmp_path / "answers.json"
    answers.write_text(json.dumps({"data": {}, "calls": {}}))
    scorer = grading.Scorer(LAB, timeout_s=3, delays={"q2": 60})  # q2's scoring "runs on" past 3 s, then past 6 s
    try:
        _, found, messages, problem = scorer.score(answers)
        assert set(found) == {"q1", "q3"} and problem == "re-grade q2 (grader out of time)"
        assert "ran out of time scoring this question twice" in messages["q2"][0] and "not a verdict on your answer" in messages["q2"][0]
        scorer.delays.clear()
        scorer.close()
        again = scorer.score(answers)  # a fresh process scores the next submission, every question
        assert again[3] == "" and set(again[1]) == {"q1", "q2", "q3"}
    finally:
        scorer.close()


def test_a_model_check_on_a_loaded_machine_keeps_full_marks(tmp_path, embedded):
    """Lab 00's q2 check runs the model: 55 s on a busy machine used to zero a correct notebook. The scoring process now
    computes what the check needs before the clock starts, so under two busy loops each question scores well inside
    a short limit."""
    import json

    from helpers.course import grading, trusted
    from helpers.course.checks import lab00

    lab = "00_first_open_model"
    model, tokenizer = embedded
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps(grading.lab_grading(lab)["spec"]))
    text = lab00.TICKET
    namespace = {"n_tokens": len(tokenizer(text)["input_ids"]), "reply": lab00._greedy(model, tokenizer, lab00.MAX_NEW_TOKENS)}
    namespace["tokens_per_word"] = namespace["n_tokens"] / len(text.split())
    trusted.export_answers(str(spec), str(tmp_path / "answers.json"), namespace)  # what the grader's last cell writes
    burners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(2)]
    scorer = grading.Scorer(lab, timeout_s=10)
    try:
        _, found, messages, problem = scorer.score(tmp_path / "answers.json")
    finally:
        for burner in burners:
            burner.kill()
        scorer.close()
    assert found == {"q1": 2.0, "q2": 2.0} and problem == "", (found, messages, problem)

def test_a_submission_that_fills_its_scratch_folder_is_stopped_with_a_reason(tmp_path, monkeypatch):
    from helpers.course import grading

    monkeypatch.setattr(grading, "MAX_SCRATCH_BYTES", 5 * 2**20)
    writer = subprocess.Popen([sys.executable, "-c", f"import time\nfor i in range(100):\n"
                               f"    open(r'{tmp_path}/f%d' % i, 'wb').write(bytes(2**20)); time.sleep(0.05)\ntime.sleep(30)"],
                              start_new_session=True)
    output, why = grading._wait(writer, 60, scratch=tmp_path)
    grading._kill_tree(writer)
    assert why and "wrote more than" in why
    assert grading.scratch_usage(tmp_path)[1] < 100


def test_the_scoring_process_is_stopped_when_it_takes_too_much_memory(tmp_path, monkeypatch):
    import json

    from helpers.course import grading

    answers = tmp_path / "answers.json"
    answers.write_text(json.dumps({"data": {}, "calls": {}}))
    monkeypatch.setattr(grading, "SCORER_MEMORY_BYTES", 2**20)  # 1 MiB: any Python is over it once it works a while
    scorer = grading.Scorer(LAB, timeout_s=30, delays={"q1": 3})
    try:
        _, found, messages, problem = scorer.score(answers)
    finally:
        scorer.close()
    assert "re-grade q1 (scoring stopped: more than" in problem and "memory" in problem, problem
    assert "not a verdict on your answer" in messages["q1"][0]
