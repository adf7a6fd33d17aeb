"""Course tooling: the setup cell, building labs from solutions, grading submissions.

This is the top layer: it reads notebooks and runs the grading engine (otter-grader); no lab
logic lives here.

    python -m helpers.course build [LAB ...]          # solutions/ -> labs/ (+ build/autograder/*.zip)
    python -m helpers.course grade DIR [LAB]          # DIR/*.ipynb -> grades/<lab>.csv

Layout: ``solutions/<lab>.ipynb`` is the source of truth, in otter-assign format (a config raw
cell; per question ``# BEGIN QUESTION`` / ``# BEGIN SOLUTION`` / ``# BEGIN TESTS`` raw cells;
hidden tests carry ``hidden: true`` in their test config). ``labs/<lab>/<lab>.ipynb`` and
``labs/<lab>/tests/`` are generated: stubs and public checks only.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import tomllib
import zipfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from .paths import REPO_ROOT

SOLUTIONS = REPO_ROOT / "solutions"
LABS = REPO_ROOT / "labs"
BUILD = REPO_ROOT / "build" / "autograder"
TEMPLATE = Path(__file__).parent / "templates" / "setup_cell.py"
SETUP_MARKER = "# Setup: this same cell opens every notebook"
BADGE_MARKER = "<!-- colab-badge -->"


def repo_url() -> str:
    """The repository URL, from ``[project.urls] Repository`` in pyproject.toml (its one home)."""
    with open(REPO_ROOT / "pyproject.toml", "rb") as handle:
        return tomllib.load(handle)["project"]["urls"]["Repository"]


def setup_cell_source(lab: str) -> str:
    """The setup cell for ``lab``, generated from the one template."""
    return TEMPLATE.read_text().format(lab=lab, repo_url=repo_url()).rstrip("\n")


def colab_url(lab: str) -> str:
    path = repo_url().removeprefix("https://github.com/")
    return f"https://colab.research.google.com/github/{path}/blob/main/labs/{lab}/{lab}.ipynb"


def badge_source(lab: str) -> str:
    return f"{BADGE_MARKER}\n[![Open in Colab](https://colab.research.google.com/assets/colab-badge.svg)]({colab_url(lab)})"


def make_grader(folder: str | Path = "."):
    """The otter checker for the exercises (``grader.check("q1")``), or None where checks cannot run.

    In ``labs/<lab>/`` the public checks live in ``tests/``; in ``solutions/`` there are none (the
    tests sit in the notebook itself) and None is returned quietly. Anywhere else the learner is
    told, in one line each, why the checks are off and what to do: nothing is swallowed.
    """
    folder = Path(folder).resolve()
    if folder.name == "solutions":
        return None
    if not (folder / "tests").is_dir():
        print(f"Exercise checks are off: no tests/ folder in {folder}. Open the notebook from labs/<lab>/ "
              "(the setup cell does this on Colab), then re-run this cell.")
        return None
    try:
        import otter
    except ImportError as error:
        print(f"Exercise checks are off: otter-grader cannot be imported ({error}). "
              "Fix: run `bash kit setup` (or `pip install 'otter-grader>=7.0,<7.1'`), then restart the kernel.")
        return None
    try:
        return otter.Notebook(tests_dir=str(folder / "tests"))
    except Exception as error:  # noqa: BLE001 - shown to the learner with the fix
        print(f"Exercise checks are off: otter could not load {folder / 'tests'} ({type(error).__name__}: {error}). "
              "Fix: rebuild the lab (`bash kit build-labs`) or re-download it, then restart the kernel.")
        return None


def lab_names() -> list[str]:
    return sorted(path.stem for path in SOLUTIONS.glob("[0-9][0-9]_*.ipynb"))


def _read(path: Path):
    import nbformat

    return nbformat.read(path, as_version=4)


def sync_solution(path: Path) -> bool:
    """Refresh a solution's Colab badge and setup cell from the template. Returns True if changed."""
    import nbformat

    nb = _read(path)
    lab = path.stem
    changed = False
    for cell in nb.cells:
        if cell.cell_type == "markdown" and cell.source.startswith(BADGE_MARKER) and cell.source != badge_source(lab):
            cell.source, changed = badge_source(lab), True
        if cell.cell_type == "code" and cell.source.startswith(SETUP_MARKER) and cell.source != setup_cell_source(lab):
            cell.source, changed = setup_cell_source(lab), True
    if changed:
        nbformat.write(nb, path)
    return changed


def _normalise_student(nb) -> None:
    """Make the generated notebook byte-stable: drop outputs, counts and volatile metadata."""
    for index, cell in enumerate(nb.cells):
        cell["id"] = f"{nb.metadata.get('otter', {}).get('assignment_name', 'lab')}-{index:03d}"
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
        cell.metadata.pop("execution", None)
    nb.metadata.pop("widgets", None)


def otter_bin() -> str:
    candidate = Path(sys.executable).with_name("otter")
    return str(candidate) if candidate.exists() else "otter"


def assign(lab: str, out_dir: Path) -> tuple[Path, Path]:
    """Run ``otter assign`` on ``solutions/<lab>.ipynb``; return (student folder, autograder zip)."""
    work = Path(tempfile.mkdtemp(prefix=f"assign-{lab}-"))
    try:
        shutil.copy(SOLUTIONS / f"{lab}.ipynb", work / f"{lab}.ipynb")
        result = subprocess.run([otter_bin(), "assign", f"{lab}.ipynb", "dist"], cwd=work, capture_output=True, text=True)
        if result.returncode != 0:
            raise RuntimeError(f"otter assign failed for {lab}:\n{result.stdout}\n{result.stderr}")
        student = out_dir / lab
        shutil.rmtree(student, ignore_errors=True)
        shutil.copytree(work / "dist" / "student", student)
        import nbformat

        nb = _read(student / f"{lab}.ipynb")
        _normalise_student(nb)
        nbformat.write(nb, student / f"{lab}.ipynb")
        zips = sorted((work / "dist" / "autograder").glob("*.zip"))
        autograder = out_dir / f"{lab}-autograder.zip"
        shutil.copy(zips[-1], autograder)
        return student, autograder
    finally:
        shutil.rmtree(work, ignore_errors=True)


def build(labs: list[str] | None = None, labs_dir: Path = LABS, build_dir: Path = BUILD) -> list[str]:
    """Generate ``labs/<lab>/`` and ``build/autograder/<lab>.zip`` from ``solutions/``."""
    labs = labs or lab_names()
    build_dir.mkdir(parents=True, exist_ok=True)
    labs_dir.mkdir(parents=True, exist_ok=True)
    for lab in labs:
        sync_solution(SOLUTIONS / f"{lab}.ipynb")
        tmp = Path(tempfile.mkdtemp(prefix="labs-"))
        student, autograder = assign(lab, tmp)
        target = labs_dir / lab
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(student, target)
        shutil.copy(autograder, build_dir / f"{lab}.zip")
        shutil.rmtree(tmp, ignore_errors=True)
        print(f"built labs/{lab}/ and {build_dir.relative_to(REPO_ROOT) if build_dir.is_relative_to(REPO_ROOT) else build_dir}/{lab}.zip")
    return labs


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


def solution_cells(lab: str) -> list[str]:
    """The solution code of each answer cell of ``lab``, in order, without solution markers."""
    nb = _read(SOLUTIONS / f"{lab}.ipynb")
    out, inside = [], False
    for cell in nb.cells:
        if cell.cell_type == "raw" and cell.source.strip().upper().startswith("# BEGIN SOLUTION"):
            inside = True
        elif cell.cell_type == "raw" and cell.source.strip().upper().startswith("# END SOLUTION"):
            inside = False
        elif inside and cell.cell_type == "code":
            lines = [re.sub(r"\s*# SOLUTION\s*$", "", line) for line in cell.source.splitlines()]
            out.append("\n".join(line for line in lines if not re.match(r"\s*# (BEGIN|END) SOLUTION", line)))
    return out


def answered_lab(lab: str, answer: set[int] | None = None, labs_dir: Path = LABS):
    """The student notebook of ``lab`` with the answer cells numbered in ``answer`` (0-based)
    filled from the solution (all when None): a reference submission for testing grading."""
    nb = _read(labs_dir / lab / f"{lab}.ipynb")
    solutions = solution_cells(lab)
    answer_cells = [cell for cell in nb.cells if "otter_answer_cell" in cell.metadata.get("tags", [])]
    if len(answer_cells) != len(solutions):
        raise RuntimeError(f"{lab}: {len(answer_cells)} answer cells but {len(solutions)} solution cells")
    for index, (cell, solution) in enumerate(zip(answer_cells, solutions)):
        if answer is None or index in answer:
            cell.source = solution
    return nb


@dataclass
class GradeResult:
    student: str
    scores: dict[str, float]
    total: float
    possible: float
    error: str = ""
    seconds: float = 0.0


def _kill_tree(process: subprocess.Popen) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def grade_one(submission: Path, lab: str, timeout_s: float = 300.0) -> GradeResult:
    """Grade one notebook with ``otter run`` in its own process group, in a scratch folder.

    The submission runs on a copy in a temporary folder (its working directory), so a notebook
    that deletes files in its folder deletes only its copy; one that loops is killed at
    ``timeout_s`` with its kernel; one that crashes gets zero and its error is recorded.
    """
    points = question_points(lab)
    student = submission.stem
    possible = sum(points.values())
    start = time.perf_counter()
    scratch = Path(tempfile.mkdtemp(prefix=f"grade-{student}-"))
    try:
        # the notebook's working folder holds only its own copy; the autograder and the results
        # sit beside it, out of reach of a notebook that empties its folder
        work = scratch / "work"
        work.mkdir()
        shutil.copy(submission, work / "submission.ipynb")
        shutil.copy(autograder_zip(lab), scratch / "autograder.zip")
        (scratch / "out").mkdir()
        env = dict(os.environ, MPLBACKEND="Agg", OTS_PLAN=os.environ.get("OTS_PLAN", "tier=cpu"))
        process = subprocess.Popen(
            [otter_bin(), "run", "-a", str(scratch / "autograder.zip"), "-o", str(scratch / "out"), str(work / "submission.ipynb")],
            cwd=work, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True, env=env,
        )
        try:
            output, _ = process.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            _kill_tree(process)
            process.communicate()
            return GradeResult(student, {q: 0.0 for q in points}, 0.0, possible, f"timed out after {timeout_s:.0f} s",
                               time.perf_counter() - start)
        _kill_tree(process)  # the kernel and anything the notebook started
        results_file = scratch / "out" / "results.json"
        if not results_file.exists():
            last = " | ".join(line for line in output.strip().splitlines()[-3:])
            return GradeResult(student, {q: 0.0 for q in points}, 0.0, possible, f"grading failed: {last}"[:500],
                               time.perf_counter() - start)
        results = json.loads(results_file.read_text())
        scores = {q: 0.0 for q in points}
        for test in results.get("tests", []):
            if test.get("name") in scores and test.get("score") is not None:
                scores[test["name"]] = float(test["score"])
        error = ""
        failed = [t for t in results.get("tests", []) if t.get("name", "").startswith("Autograder")]
        if failed:  # the notebook broke otter's own run (e.g. deleted its grading files)
            detail = (failed[-1].get("output") or "").strip().splitlines()
            return GradeResult(student, scores, 0.0, possible, f"autograder failed: {detail[-1] if detail else 'no results'}"[:300],
                               time.perf_counter() - start)
        match = re.search(r"^(\w+(?:Error|Exception)): (.*)$", output, re.M)
        if match:  # a cell raised: the notebook ran on, but say what broke
            error = f"a cell raised {match.group(1)}: {match.group(2)}"[:300]
        return GradeResult(student, scores, sum(scores.values()), possible, error, time.perf_counter() - start)
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
    from .hardware import cpu_hardware
    from .plan import plan

    expected = plan(lab[:2], cpu_hardware(), override="tier=cpu").expected_minutes * 60
    return max(MIN_TIMEOUT_S, expected * TIMEOUT_SAFETY + 60)


def grade_folder(folder: Path, lab: str, out_csv: Path | None = None, timeout_s: float | None = None, workers: int = 2) -> Path:
    """Grade every ``*.ipynb`` in ``folder`` into a CSV: student, points per question, total, error, rerun.

    Submissions are graded ``workers`` at a time. One that times out is graded again, alone, with
    RETRY_FACTOR x the timeout before a timeout is recorded (a busy machine must not turn a correct
    notebook into a zero); the ``rerun`` column says which ones needed it.
    """
    folder = Path(folder)
    submissions = sorted(folder.glob("*.ipynb"))
    if not submissions:
        from .errors import InputError

        raise InputError(f"no .ipynb files in {folder}", fix="point at the folder holding the submitted notebooks")
    timeout_s = timeout_s or default_timeout_s(lab)
    out_csv = Path(out_csv or REPO_ROOT / "grades" / f"{lab}.csv")
    out_csv.parent.mkdir(parents=True, exist_ok=True)
    autograder_zip(lab)  # build once before the workers start
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        results = list(pool.map(lambda path: grade_one(path, lab, timeout_s), submissions))
    reruns: dict[str, str] = {}
    for index, (path, first) in enumerate(zip(submissions, results)):
        if first.error.startswith("timed out"):
            again = grade_one(path, lab, timeout_s * RETRY_FACTOR)
            if again.error.startswith("timed out"):
                again.error = f"timed out twice: after {timeout_s:.0f} s with {workers} at a time, then {timeout_s * RETRY_FACTOR:.0f} s alone"
            reruns[first.student] = f"timed out after {timeout_s:.0f} s; re-run alone"
            results[index] = again
    questions = list(question_points(lab))
    with open(out_csv, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["student", *questions, "total", "possible", "error", "rerun", "seconds"])
        for r in results:
            writer.writerow([r.student, *[r.scores[q] for q in questions], r.total, r.possible, r.error, reruns.get(r.student, ""),
                             round(r.seconds, 1)])
    return out_csv


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m helpers.course")
    sub = parser.add_subparsers(dest="command", required=True)
    p_build = sub.add_parser("build", help="generate labs/ from solutions/")
    p_build.add_argument("labs", nargs="*")
    p_grade = sub.add_parser("grade", help="grade a folder of submitted notebooks into a CSV")
    p_grade.add_argument("folder")
    p_grade.add_argument("lab", nargs="?", help="lab name, e.g. 00_first_open_model (default: guessed from the notebooks)")
    p_grade.add_argument("--out", default=None)
    p_grade.add_argument("--timeout", type=float, default=None,
                         help="seconds per submission (default: the lab plan's expected time x 4, at least 120; a timeout is re-run alone at 2x)")
    p_grade.add_argument("--workers", type=int, default=2)
    args = parser.parse_args(argv)
    if args.command == "build":
        build(args.labs or None)
        return 0
    lab = args.lab
    if lab is None:
        for path in Path(args.folder).glob("*.ipynb"):
            name = json.loads(path.read_text()).get("metadata", {}).get("otter", {}).get("assignment_name")
            if name:
                lab = name
                break
    if lab not in lab_names():
        print(f"unknown lab {lab!r}; labs: {', '.join(lab_names())}", file=sys.stderr)
        return 2
    out = grade_folder(Path(args.folder), lab, Path(args.out) if args.out else None, args.timeout, args.workers)
    print(out.read_text())
    print(f"written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
