"""Building the labs: the setup cell and Colab badge of every notebook, and the student copies in
``labs/`` generated from ``solutions/`` by ``otter assign`` (with ``build/autograder/<lab>.zip``).

Layout: ``solutions/<lab>.ipynb`` is the source of truth, in otter-assign format (a config raw
cell; per question ``# BEGIN QUESTION`` / ``# BEGIN SOLUTION`` / ``# BEGIN TESTS`` raw cells;
hidden tests carry ``hidden: true`` in their test config). ``labs/<lab>/<lab>.ipynb`` and
``labs/<lab>/tests/`` are generated: stubs and public checks only.
"""
from __future__ import annotations

import re
import shutil
import sys
import tempfile
try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: the same parser from PyPI (a dependency there)
    import tomli as tomllib
from pathlib import Path

from ..paths import REPO_ROOT

SOLUTIONS = REPO_ROOT / "solutions"
LABS = REPO_ROOT / "labs"
BUILD = REPO_ROOT / "build" / "autograder"
TEMPLATE = Path(__file__).parent / "templates" / "setup_cell.py"
SETUP_MARKER = "# Setup: this same cell opens every notebook"
BADGE_MARKER = "<!-- colab-badge -->"


def repo_url(root: Path = REPO_ROOT) -> str:
    """The repository URL, from ``[project.urls] Repository`` in pyproject.toml (its one home)."""
    with open(Path(root) / "pyproject.toml", "rb") as handle:
        return tomllib.load(handle)["project"]["urls"]["Repository"]


def setup_cell_source(lab: str, url: str | None = None) -> str:
    """The setup cell for ``lab``, generated from the one template."""
    return TEMPLATE.read_text().format(lab=lab, repo_url=url or repo_url()).rstrip("\n")


def colab_url(lab: str, url: str | None = None) -> str:
    path = (url or repo_url()).removeprefix("https://github.com/").removesuffix(".git")
    return f"https://colab.research.google.com/github/{path}/blob/main/labs/{lab}/{lab}.ipynb"


def badge_source(lab: str, url: str | None = None) -> str:
    return f"{BADGE_MARKER}\n[![Open in Colab](https://colab.research.google.com/assets/colab-badge.svg)]({colab_url(lab, url)})"


def kit_home(root: Path = REPO_ROOT) -> str:
    """The full kit's repository (solutions and hidden tests in it): ``[project.urls] Kit`` where a release recorded it
    before pointing ``Repository`` at the class, else ``Repository`` itself (in the kit)."""
    with open(Path(root) / "pyproject.toml", "rb") as handle:
        urls = tomllib.load(handle)["project"]["urls"]
    return urls.get("Kit", urls["Repository"])


GITHUB_REPO = re.compile(r"^https://github\.com/[A-Za-z0-9][A-Za-z0-9-]*/[A-Za-z0-9._-]+?(\.git)?$")


def check_class_repository(url: str | None) -> str:
    """The repository a class clones from, refused where it would send learners to the wrong place: missing, not a
    GitHub https URL (Colab's badge opens GitHub notebooks only), or the kit's own repository (solutions and hidden
    tests included)."""
    from ..errors import InputError

    fix = "pass the class repository you will push the release to: --repository https://github.com/<you>/<class-repo>"
    if not url:
        raise InputError("no class repository given: the badges and setup cells would clone the full kit, solutions included", fix=fix)
    url = url.strip().rstrip("/")
    if not GITHUB_REPO.match(url):
        raise InputError(f"{url!r} is not a GitHub repository URL (https://github.com/<owner>/<name>): Colab's badge opens "
                         "notebooks from GitHub only", fix=fix)
    # in a class copy, Repository is the class's and Kit the kit's; in the kit, both are the kit's
    if url.removesuffix(".git").lower() == kit_home().removesuffix(".git").lower():
        raise InputError(f"{url} is the kit's own repository, with the solutions and hidden tests: a class must clone its release",
                         fix=fix)
    return url.removesuffix(".git")


def point_labs_at(root: Path, url: str) -> list[Path]:
    """Point a copy of the kit at ``url``: ``[project.urls] Repository`` in its pyproject.toml, and every lab notebook's
    Colab badge and setup cell (rewritten in place from the template). Returns the notebooks changed."""
    import nbformat

    root = Path(root)
    pyproject = root / "pyproject.toml"
    text = pyproject.read_text()
    if not re.search(r'(?m)^Kit = "', text):  # remember the kit's own home once, so a class copy can refuse it later
        text = re.sub(r'(?m)^(Repository = "[^"]*")', lambda m: f'Kit = "{kit_home(root)}"\n' + m.group(1), text, count=1)
    text, count = re.subn(r'(?m)^Repository = "[^"]*"', f'Repository = "{url}"', text)
    if count != 1:
        from ..errors import DataError

        raise DataError(f"{pyproject} has no one Repository line under [project.urls]", fix="restore it from the kit")
    pyproject.write_text(text)
    changed = []
    for path in sorted((root / "labs").glob("*/*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        if point_cells(nb, path.stem, url):
            nbformat.write(nb, path)
            changed.append(path)
    return changed



def lab_names() -> list[str]:
    return sorted(path.stem for path in SOLUTIONS.glob("[0-9][0-9]_*.ipynb"))


def _read(path: Path):
    import nbformat

    return nbformat.read(path, as_version=4)


def sync_solution(path: Path) -> bool:
    """Refresh a solution's Colab badge and setup cell from the template. Returns True if changed."""
    import nbformat

    nb = _read(path)
    changed = point_cells(nb, path.stem)
    if changed:
        nbformat.write(nb, path)
    return changed


def point_cells(nb, lab: str, url: str | None = None) -> bool:
    """Rewrite ``nb``'s Colab badge and setup cell from the template for ``url`` (default: the kit's repository);
    True if either changed."""
    changed = False
    for cell in nb.cells:
        if cell.cell_type == "markdown" and cell.source.startswith(BADGE_MARKER) and cell.source != badge_source(lab, url):
            cell.source, changed = badge_source(lab, url), True
        if cell.cell_type == "code" and cell.source.startswith(SETUP_MARKER) and cell.source != setup_cell_source(lab, url):
            cell.source, changed = setup_cell_source(lab, url), True
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


def _otter_assign(work: Path, lab: str) -> None:
    """``otter assign <lab>.ipynb dist`` in ``work``, in this process: importing otter takes about 5 s, which
    building seven labs used to pay seven times (one ``otter`` process each)."""
    import contextlib
    import io
    import os

    from otter.assign import main as otter_assign

    log, cwd = io.StringIO(), os.getcwd()
    try:
        os.chdir(work)  # otter resolves the notebook's paths against the working directory
        with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
            otter_assign(f"{lab}.ipynb", "dist")
    except (Exception, SystemExit) as error:  # noqa: BLE001 - re-raised with otter's own output
        raise RuntimeError(f"otter assign failed for {lab} ({type(error).__name__}: {error}):\n{log.getvalue()[-3000:]}") from None
    finally:
        os.chdir(cwd)


def assign(lab: str, out_dir: Path) -> tuple[Path, Path]:
    """Run ``otter assign`` on ``solutions/<lab>.ipynb``; return (student folder, autograder zip)."""
    work = Path(tempfile.mkdtemp(prefix=f"assign-{lab}-"))
    try:
        shutil.copy(SOLUTIONS / f"{lab}.ipynb", work / f"{lab}.ipynb")
        _otter_assign(work, lab)
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
    if not SOLUTIONS.is_dir():
        from ..errors import InputError

        raise InputError("this is a class copy (no solutions/ to build the labs from)",
                         fix="to point its badges and setup cells at the class repository: bash kit build-labs --repository "
                             "https://github.com/<you>/<class-repo>")
    labs = labs or lab_names()
    from .answer_key import write_digests

    if write_digests():  # the public checks compare with digests of the answers, never the answers
        print("updated helpers/course/checks/digests.json from the answer key")
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
        from . import trusted

        trusted.grading_spec(_read(SOLUTIONS / f"{lab}.ipynb"), build_dir / f"{lab}.zip", lab)  # tests read trusted inputs only
        print(f"built labs/{lab}/ and {build_dir.relative_to(REPO_ROOT) if build_dir.is_relative_to(REPO_ROOT) else build_dir}/{lab}.zip")
    return labs


def answer_cell_sources(nb) -> list[str]:
    """The source of every code cell between a ``# BEGIN SOLUTION`` and an ``# END SOLUTION`` raw cell of a solution
    notebook (the answer cells, markers and all), in order."""
    out, inside = [], False
    for cell in nb.cells:
        if cell.cell_type == "raw" and cell.source.strip().upper().startswith("# BEGIN SOLUTION"):
            inside = True
        elif cell.cell_type == "raw" and cell.source.strip().upper().startswith("# END SOLUTION"):
            inside = False
        elif inside and cell.cell_type == "code":
            out.append(cell.source)
    return out


def solution_cells(lab: str) -> list[str]:
    """The solution code of each answer cell of ``lab``, in order, without solution markers."""
    out = []
    for source in answer_cell_sources(_read(SOLUTIONS / f"{lab}.ipynb")):
        lines = [re.sub(r"\s*# SOLUTION\s*$", "", line) for line in source.splitlines()]
        out.append("\n".join(line for line in lines if not re.match(r"\s*# (BEGIN|END) SOLUTION", line)))
    return out


def answered_lab(lab: str, answer: set[int] | None = None, labs_dir: Path = LABS):
    """The student notebook of ``lab`` with the answer cells numbered in ``answer`` (0-based)
    filled from the solution (all when None): a reference submission for testing grading."""
    nb = _read(labs_dir / lab / f"{lab}.ipynb")
    solutions = solution_cells(lab)
    answer_cells = [cell for cell in nb.cells if "otter_answer_cell" in cell.metadata.get("tags", []) and cell.cell_type == "code"]
    if len(answer_cells) != len(solutions):
        raise RuntimeError(f"{lab}: {len(answer_cells)} answer cells but {len(solutions)} solution cells")
    for index, (cell, solution) in enumerate(zip(answer_cells, solutions)):
        if answer is None or index in answer:
            cell.source = solution
    return nb


