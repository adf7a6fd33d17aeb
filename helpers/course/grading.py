"""Grading: the learner's exercise checks in the notebook (``make_grader``) and the instructor's
grading of a folder of submissions with otter-grader (``grade_folder``), one process group and
scratch folder per submission, timeouts from the lab's plan, a timed-out submission re-run alone."""
from __future__ import annotations

import csv
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from ..paths import REPO_ROOT, cache_dir
from . import trusted
from .labs import BUILD, SOLUTIONS, assign, otter_bin

class LazyGrader:
    """otter's ``Notebook`` checker, created on the first ``grader.check(...)``: importing otter takes about
    6 s, which every notebook's first cell would otherwise pay before the learner reads a line."""

    def __init__(self, tests_dir: Path):
        self._tests_dir = tests_dir
        self._notebook = None

    def _load(self):
        if self._notebook is None:
            import otter

            try:
                self._notebook = otter.Notebook(tests_dir=str(self._tests_dir))
            except Exception as error:  # noqa: BLE001 - shown to the learner with the fix
                from ..errors import InputError

                raise InputError(f"otter could not load {self._tests_dir} ({type(error).__name__}: {error})",
                                 fix="rebuild the lab (`bash kit build-labs`) or re-download it, then restart the kernel") from None
        return self._notebook

    def __getattr__(self, name):
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self._load(), name)


def make_grader(folder: str | Path = "."):
    """The otter checker for the exercises (``grader.check("q1")``), or None where checks cannot run.

    In ``labs/<lab>/`` the public checks live in ``tests/``; in ``solutions/`` there are none (the
    tests sit in the notebook itself) and None is returned quietly. Anywhere else the learner is
    told, in one line each, why the checks are off and what to do: nothing is swallowed. otter itself
    is imported at the first check (see :class:`LazyGrader`).
    """
    import importlib.util

    folder = Path(folder).resolve()
    if folder.name == "solutions":
        return None
    if not (folder / "tests").is_dir():
        print(f"Exercise checks are off: no tests/ folder in {folder}. Open the notebook from labs/<lab>/ "
              "(the setup cell does this on Colab), then re-run this cell.")
        return None
    if importlib.util.find_spec("otter") is None:
        print("Exercise checks are off: otter-grader is not installed. "
              "Fix: run `bash kit setup` (or `pip install 'otter-grader>=7.0,<7.1'`), then restart the kernel.")
        return None
    return LazyGrader(folder / "tests")


def autograder_zip(lab: str) -> Path:
    """The autograder zip of ``lab``, built from the solution if missing or older than it."""
    path = BUILD / f"{lab}.zip"
    if not path.exists() or path.stat().st_mtime < (SOLUTIONS / f"{lab}.ipynb").stat().st_mtime:
        tmp = Path(tempfile.mkdtemp(prefix="autograder-"))
        _, made = assign(lab, tmp)
        BUILD.mkdir(parents=True, exist_ok=True)
        shutil.copy(made, path)
        shutil.rmtree(tmp, ignore_errors=True)
    return path


def question_points(lab: str) -> dict[str, float]:
    """Points per question, read from the autograder's test files."""
    points: dict[str, float] = {}
    with zipfile.ZipFile(autograder_zip(lab)) as archive:
        for name in sorted(archive.namelist()):
            if name.startswith("tests/") and name.endswith(".py"):
                text = archive.read(name).decode()
                match = re.search(r"'points':\s*([0-9.]+)", text) or re.search(r"^points\s*=\s*([0-9.]+)", text, re.M)
                points[Path(name).stem] = float(match.group(1)) if match else 0.0
    return points


def manual_questions(lab: str) -> dict[str, float]:
    """The open-ended questions an instructor reads (otter ``manual: true``), with their points, from the solution."""
    import nbformat

    found: dict[str, float] = {}
    for cell in nbformat.read(SOLUTIONS / f"{lab}.ipynb", as_version=4).cells:
        if cell.cell_type == "raw" and cell.source.startswith("# BEGIN QUESTION") and re.search(r"^manual:\s*true", cell.source, re.M):
            name, points = re.search(r"^name:\s*(\S+)", cell.source, re.M), re.search(r"^points:\s*([0-9.]+)", cell.source, re.M)
            found[name.group(1)] = float(points.group(1)) if points else 0.0
    return found


_LAB_GRADING: dict[tuple[str, float], dict] = {}
_PROVIDED: dict[tuple[str, str], dict] = {}
_PROVIDED_LOCK = threading.Lock()


def lab_grading(lab: str) -> dict:
    """What grading ``lab`` needs from the instructor's side, read once: the sandbox's export spec, the names
    the solution imports (resolved fresh in the grading process) and the functions the exercises ask for."""
    import nbformat

    key = (lab, autograder_zip(lab).stat().st_mtime)
    if key not in _LAB_GRADING:
        solution = nbformat.read(SOLUTIONS / f"{lab}.ipynb", as_version=4)
        imports, functions = trusted.solution_bindings(solution)
        spec = trusted.grading_spec(solution, autograder_zip(lab))
        _LAB_GRADING[key] = {"spec": spec, "imports": imports, "functions": functions, "provided": spec["provided"]}
    return _LAB_GRADING[key]


def provided_objects(lab: str, names: list[str]) -> dict:
    """The model and tokenizer the tests use, loaded here from the lab's plan (as the notebook loads them),
    once per grading process: never the submission's objects."""
    if not names:
        return {}
    plan_text = os.environ.get("OTS_PLAN", "tier=cpu")
    with _PROVIDED_LOCK:
        if (lab, plan_text) not in _PROVIDED:
            from ..models import load_model
            from ..plan import plan

            model, tokenizer = load_model(plan=plan(lab[:2], override=plan_text))
            _PROVIDED[(lab, plan_text)] = {"model": model, "tokenizer": tokenizer}
    return {name: _PROVIDED[(lab, plan_text)][name] for name in names}


@dataclass
class GradeResult:
    student: str
    scores: dict[str, float]
    total: float
    possible: float
    error: str = ""
    seconds: float = 0.0
    messages: dict[str, list[str]] | None = None  # per question: the public checks' one-line messages (never hidden test code)

    def feedback(self, lab: str, manual: dict[str, float]) -> str:
        """The text returned to the student: points per question, what the checks said, what a person will read."""
        lines = [f"{lab}: {self.student}", f"autograded: {self.total:g} / {self.possible:g}"]
        if self.error:
            lines.append(f"problem: {self.error}")
        for question, score in self.scores.items():
            lines.append(f"  {question}: {score:g}")
            lines += [f"      {message}" for message in (self.messages or {}).get(question, [])]
        lines += [f"  {question}: read by your instructor ({points:g} points)" for question, points in manual.items()]
        return "\n".join(lines) + "\n"


SANDBOX_FIX = ("install bubblewrap (Debian/Ubuntu: apt-get install bubblewrap; it needs Linux user or root namespaces), "
               "or grade in otter's Docker containers (otter grade); --no-sandbox grades without one, for trusted notebooks only")


def sandbox_available() -> bool:
    """Whether submissions can be graded in a bubblewrap sandbox on this machine (Linux, bwrap installed and allowed)."""
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        return False
    probe = subprocess.run([bwrap, "--die-with-parent", "--unshare-pid", "--unshare-net", "--ro-bind", "/", "/", "true"],
                           capture_output=True, timeout=30)
    return probe.returncode == 0


def sandbox_prefix(scratch: Path, work: Path, hide: list[Path] = ()) -> list[str]:
    """bubblewrap arguments for one submission: the whole machine read-only, a private /tmp, no network,
    its scratch folder the only writable place, its own PID namespace (every process it starts dies with
    it), no capabilities even when grading as root, and what a student must not read hidden by empty
    folders: the solutions, built autograders, gradebooks and the other submissions."""
    import sys

    args = [shutil.which("bwrap") or "bwrap", "--die-with-parent", "--unshare-pid", "--unshare-net", "--unshare-ipc", "--new-session",
            "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "--tmpfs", "/tmp", "--tmpfs", "/dev/shm"]
    # what the notebook needs that may itself live under /tmp (a CI clone, its venv, the model cache): back, read-only
    for needed in {REPO_ROOT.resolve(), Path(sys.prefix).resolve(), cache_dir().resolve()}:
        if needed.is_relative_to("/tmp") or needed.is_relative_to("/dev/shm"):
            args += ["--ro-bind", str(needed), str(needed)]
    args += ["--bind", str(scratch), str(scratch), "--chdir", str(work)]
    if os.geteuid() == 0:
        args += ["--cap-drop", "ALL"]  # root in the sandbox could otherwise remount / read-write
    for path in (SOLUTIONS, BUILD, REPO_ROOT / "grades", *hide):
        if Path(path).is_dir() and not str(scratch).startswith(str(path)):
            args += ["--tmpfs", str(Path(path).resolve())]
    return args


def _kill_tree(process: subprocess.Popen) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def grade_one(submission: Path, lab: str, timeout_s: float = 300.0, sandbox: bool = True, hide: list[Path] = ()) -> GradeResult:
    """Grade one notebook with ``otter run`` in its own process group, in a scratch folder, inside a
    bubblewrap sandbox (see :func:`sandbox_prefix`; ``sandbox=False`` only for trusted notebooks).

    The submission runs on a copy in a temporary folder (its working directory), so a notebook
    that deletes files in its folder deletes only its copy; one that loops is killed at
    ``timeout_s`` with its kernel; one that crashes gets zero and its error is recorded.
    """
    import nbformat

    points = question_points(lab)
    student = submission.stem
    possible = sum(points.values())
    start = time.perf_counter()
    try:
        nbformat.validate(nbformat.read(submission, as_version=4))
    except Exception as error:  # noqa: BLE001 - any unreadable file is one readable line in the gradebook
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        return GradeResult(student, {q: 0.0 for q in points}, 0.0, possible, f"not a valid notebook: {reason}"[:300],
                           time.perf_counter() - start)
    scratch = Path(tempfile.mkdtemp(prefix=f"grade-{student}-"))
    try:
        # the notebook's working folder holds only its own copy; the public-only autograder, the export spec and
        # the results sit beside it, out of reach of a notebook that empties its folder. Hidden tests never enter.
        work = scratch / "work"
        work.mkdir()
        spec_path, answers_path = scratch / "spec.json", scratch / "answers" / "answers.json"
        answers_path.parent.mkdir()
        grading = lab_grading(lab)
        spec_path.write_text(json.dumps(grading["spec"]))
        notebook = nbformat.read(submission, as_version=4)
        notebook.cells.append(nbformat.v4.new_code_cell(trusted.export_cell(spec_path, answers_path)))
        nbformat.write(notebook, work / "submission.ipynb")
        trusted.public_autograder(autograder_zip(lab), scratch / "autograder.zip")
        (scratch / "out").mkdir()
        home = scratch / "home"
        home.mkdir()
        # the kernel's home, results store and ledger are in the scratch folder; the model cache is read where it is
        env = dict(os.environ, MPLBACKEND="Agg", OTS_PLAN=os.environ.get("OTS_PLAN", "tier=cpu"), HOME=str(home),
                   OTS_CACHE=str(cache_dir()), OTS_RESULTS=str(home / "results.json"), OTS_LEDGER=str(home / "ledger.csv"),
                   XDG_CACHE_HOME=str(home / ".cache"), MPLCONFIGDIR=str(home / ".mpl"), HF_HUB_OFFLINE="1")
        command = [otter_bin(), "run", "-a", str(scratch / "autograder.zip"), "-o", str(scratch / "out"), str(work / "submission.ipynb")]
        if sandbox:
            command = sandbox_prefix(scratch, work, hide) + command
        process = subprocess.Popen(command, cwd=work, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                   start_new_session=True, env=env)
        try:
            output, _ = process.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            _kill_tree(process)
            process.communicate()
            return GradeResult(student, {q: 0.0 for q in points}, 0.0, possible, f"timed out after {timeout_s:.0f} s",
                               time.perf_counter() - start)
        _kill_tree(process)  # the kernel and anything the notebook started
        if not (scratch / "out" / "results.json").exists() and "DeadKernelError" in output:
            return GradeResult(student, {q: 0.0 for q in points}, 0.0, possible,
                               "kernel died: the notebook ended its own Python process (os._exit, a crash, or out of memory)",
                               time.perf_counter() - start)
        answers = trusted.read_answers(answers_path)
        if not answers:
            last = " | ".join(line for line in output.strip().splitlines()[-3:])
            return GradeResult(student, {q: 0.0 for q in points}, 0.0, possible,
                               f"grading failed: the notebook did not run to its end ({last})"[:500], time.perf_counter() - start)
        # scored here, outside the sandbox, by the kit's own unpatched code: nothing the kernel reported is a score
        found, messages = trusted.score_answers(autograder_zip(lab), answers, grading["imports"], grading["functions"],
                                                provided_objects(lab, grading["provided"]))
        scores = {q: found.get(q, 0.0) for q in points}
        error = ""
        match = re.search(r"^(\w+(?:Error|Exception)): (.*)$", output, re.M)
        if match:  # a cell raised: the notebook ran on, but say what broke
            error = f"a cell raised {match.group(1)}: {match.group(2)}"[:300]
        return GradeResult(student, scores, sum(scores.values()), possible, error, time.perf_counter() - start, messages)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


# a submission may take this many times the plan's expected minutes before it is stopped; a busy grading
# machine (other workers, other jobs) is why the factor is generous, and why a timeout is retried alone
TIMEOUT_SAFETY = 4.0
MIN_TIMEOUT_S = 120.0
RETRY_FACTOR = 2.0


def default_timeout_s(lab: str) -> float:
    """Seconds one submission of ``lab`` may run: the CPU-tier plan's expected time x TIMEOUT_SAFETY
    (plus a minute for the kernel and otter), at least MIN_TIMEOUT_S."""
    from ..hardware import cpu_hardware
    from ..plan import plan

    expected = plan(lab[:2], cpu_hardware(), override="tier=cpu").expected_minutes * 60
    return max(MIN_TIMEOUT_S, expected * TIMEOUT_SAFETY + 60)


def grade_folder(folder: Path, lab: str, out_csv: Path | None = None, timeout_s: float | None = None, workers: int = 2,
                 sandbox: bool = True) -> Path:
    """Grade every ``*.ipynb`` in ``folder`` into a CSV: student, points per question, total, error, rerun.

    Submissions are graded ``workers`` at a time. One that times out is graded again, alone, with
    RETRY_FACTOR x the timeout before a timeout is recorded (a busy machine must not turn a correct
    notebook into a zero); the ``rerun`` column says which ones needed it.
    """
    folder = Path(folder)
    submissions = sorted(folder.glob("*.ipynb"))
    if not submissions:
        from ..errors import InputError

        raise InputError(f"no .ipynb files in {folder}", fix="point at the folder holding the submitted notebooks")
    if sandbox and not sandbox_available():
        from ..errors import InputError

        raise InputError("submissions cannot be sandboxed on this machine (bubblewrap is missing or not allowed)", fix=SANDBOX_FIX)
    timeout_s = timeout_s or default_timeout_s(lab)
    out_csv = Path(out_csv or REPO_ROOT / "grades" / f"{lab}.csv")
    out_csv.parent.mkdir(parents=True, exist_ok=True)
    autograder_zip(lab)  # build once before the workers start
    hide = [folder.resolve(), out_csv.parent.resolve()]  # other students' notebooks and the gradebook
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        results = list(pool.map(lambda path: grade_one(path, lab, timeout_s, sandbox, hide), submissions))
    reruns: dict[str, str] = {}
    for index, (path, first) in enumerate(zip(submissions, results)):
        if first.error.startswith("timed out"):
            again = grade_one(path, lab, timeout_s * RETRY_FACTOR, sandbox, hide)
            if again.error.startswith("timed out"):
                again.error = f"timed out twice: after {timeout_s:.0f} s with {workers} at a time, then {timeout_s * RETRY_FACTOR:.0f} s alone"
            reruns[first.student] = f"timed out after {timeout_s:.0f} s; re-run alone"
            results[index] = again
    questions = list(question_points(lab))
    # open-ended answers are read by a person against the rubric in the solution notebook: named, never scored here
    manual = manual_questions(lab)
    to_read = "; ".join(f"{name} ({points:g} pts, rubric in solutions/{lab}.ipynb)" for name, points in manual.items())
    with open(out_csv, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["student", *questions, "total", "possible", "error", "rerun", "seconds", "to read"])
        for r in results:
            writer.writerow([r.student, *[r.scores[q] for q in questions], r.total, r.possible, r.error, reruns.get(r.student, ""),
                             round(r.seconds, 1), to_read])
    # one feedback file per student, to hand back: points, the checks' messages, the questions a person will read
    feedback_dir = out_csv.parent / f"{out_csv.stem}-feedback"
    feedback_dir.mkdir(exist_ok=True)
    for r in results:
        (feedback_dir / f"{r.student}.txt").write_text(r.feedback(lab, manual))
    return out_csv

