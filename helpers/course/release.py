"""The student release: what a graded class gets (``bash kit release DIR``).

Self-learners use the whole kit, solutions included. A graded class gets a copy without what would
give the answers away: no ``solutions/`` (answers, hidden tests, rubrics), no built autograders, no
gradebooks, no instructor guide, no test suite (it runs the solutions). The labs keep their public
checks, so ``grader.check("q1")`` works the same. The copy is a plain folder with its own git history
of one commit, ready to push where the class clones from (the setup cell's ``OTS_REPO_URL``).
"""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from ..errors import InputError
from ..paths import REPO_ROOT

# top-level entries of the kit a student gets; everything else (solutions/, build/, grades/, tests/,
# INSTRUCTORS.md, .gpu/, .ci/) stays with the instructor
SHIPPED = ("README.md", "kit", "pyproject.toml", "environment.yml", "constraints", "helpers", "datasets", "labs", "scripts", ".gitignore")


# files inside shipped folders that stay with the instructor: the answer key (the checks hold only digests of it)
KEPT_BACK = ("helpers/course/answer_key.py",)


def tracked_files() -> set[str]:
    """Files git tracks in the kit (what a clone has): a release never ships local leftovers."""
    out = subprocess.run(["git", "ls-files"], cwd=REPO_ROOT, capture_output=True, text=True, check=True).stdout
    return set(out.splitlines())


def release(target: str | Path, repository: str | None = None, commit: bool = True) -> Path:
    """Write the student release to ``target`` (must not exist, or be empty), pointed at ``repository``, the GitHub
    repository the class clones from: its pyproject.toml, every lab's Colab badge and setup cell. Refused without one,
    or with the kit's own (it holds the solutions). Returns the folder."""
    from .labs import check_class_repository, point_labs_at

    repository = check_class_repository(repository)
    target = Path(target).resolve()
    if target.exists() and any(target.iterdir()):
        raise InputError(f"{target} is not empty", fix="give a new folder (the release is written from scratch)")
    if REPO_ROOT.resolve() in target.parents or target == REPO_ROOT.resolve():
        raise InputError(f"{target} is inside the kit", fix="write the release outside the kit's folder, e.g. ../own-the-stack-class")
    tracked = tracked_files()
    for name in tracked:
        top = name.split("/", 1)[0]
        if top not in SHIPPED or name in KEPT_BACK:
            continue
        destination = target / name
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO_ROOT / name, destination)
    # the class gets a README for learners (open the labs, check the set-up, self-checks, handing in), never the kit's,
    # which describes solutions, grading and the instructor's commands
    (target / "README.md").write_text((Path(__file__).parent / "templates" / "release_README.md").read_text())
    point_labs_at(target, repository)
    leaks = audit(target)
    if leaks:
        shutil.rmtree(target, ignore_errors=True)
        raise InputError("the release would leak: " + "; ".join(leaks[:5]), fix="rebuild the labs (bash kit build-labs) and try again")
    if commit:
        run = lambda *args: subprocess.run(["git", *args], cwd=target, capture_output=True, text=True, check=True)  # noqa: E731
        run("init", "-q")
        run("add", "-A")
        run("-c", "user.name=Own the Stack", "-c", "user.email=release@own-the-stack.invalid", "commit", "-q", "-m", "Student release")
    return target


def audit(folder: str | Path) -> list[str]:
    """What in ``folder`` would give answers away: solution notebooks, hidden tests, autograder zips,
    solution markers left in a lab."""
    folder = Path(folder)
    found = []
    for path in folder.rglob("*"):
        if ".git" in path.parts or not path.is_file():
            continue
        relative = path.relative_to(folder).as_posix()
        if relative.startswith(("solutions/", "build/", "grades/", "tests/")) or path.suffix == ".zip" or relative in KEPT_BACK:
            found.append(f"{relative} is instructor material")
        elif path.suffix in (".py", ".ipynb") and relative.startswith("labs/"):
            text = path.read_text(errors="replace")
            if "hidden: true" in text or "'hidden': True" in text or "# BEGIN SOLUTION" in text or "# SOLUTION" in text or "Rubric (" in text:
                found.append(f"{relative} holds a hidden test, a solution or a rubric")
    return found
