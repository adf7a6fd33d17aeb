"""The student release: everything a graded class needs, nothing that gives the answers away."""
import subprocess
import sys

import pytest

from helpers.course import release as rel
from helpers.errors import InputError
from helpers.paths import REPO_ROOT


CLASS_REPO = "https://github.com/acme-university/llm-class-2027"


@pytest.fixture(scope="module")
def released(tmp_path_factory):
    return rel.release(tmp_path_factory.mktemp("class") / "own-the-stack", CLASS_REPO)


def test_the_release_points_every_badge_and_setup_cell_at_the_class_repository(released):
    """A release pointed at the kit would send the class to the solutions: every badge opens the class repository's
    copy of a notebook that exists in the release, every setup cell clones the class repository."""
    import json
    import re

    from helpers.course.labs import repo_url

    assert repo_url(released) == CLASS_REPO
    notebooks = sorted((released / "labs").glob("*/*.ipynb"))
    assert len(notebooks) == 7
    for path in notebooks:
        cells = json.loads(path.read_text())["cells"]
        text = "\n".join("".join(cell["source"]) for cell in cells)
        badges = re.findall(r"\(https://colab\.research\.google\.com/github/([^)]+)\)", text)
        assert len(badges) == 1, path
        owner, name, blob, branch, *inside = badges[0].split("/")
        assert f"https://github.com/{owner}/{name}" == CLASS_REPO and (blob, branch) == ("blob", "main")
        assert (released / "/".join(inside)) == path  # the badge opens this very notebook in the class repository
        assert f'REPO_URL = "{CLASS_REPO}"' in text and "own-the-stack/own-the-stack" not in text


@pytest.mark.parametrize("url, says", [(None, "no class repository"), ("kit", "kit's own"),
                                       ("https://gitlab.com/me/class", "not a GitHub repository"), ("git@github.com:me/c.git", "not a GitHub")])
def test_a_release_without_a_class_repository_or_with_the_kits_is_refused(tmp_path, url, says):
    from helpers.course.labs import repo_url

    url = repo_url() if url == "kit" else url
    with pytest.raises(InputError, match=says):
        rel.release(tmp_path / "class", url)
    assert not (tmp_path / "class").exists()


def test_a_class_copy_moves_to_another_repository_and_its_kit_lists_only_its_commands(released, tmp_path):
    import shutil

    from helpers.course.labs import repo_url

    copy = tmp_path / "copy"
    shutil.copytree(released, copy)
    env = {"PYTHONPATH": str(copy), "PATH": __import__("os").environ["PATH"]}
    out = subprocess.run([sys.executable, "-m", "helpers.course", "build", "--repository", "https://github.com/acme-university/spring"],
                         cwd=copy, capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    assert repo_url(copy) == "https://github.com/acme-university/spring"
    back = subprocess.run([sys.executable, "-m", "helpers.course", "build", "--repository", repo_url()],
                          cwd=copy, capture_output=True, text=True, env=env, timeout=120)  # the kit's own, from a class copy
    assert back.returncode == 2 and "kit's own repository" in back.stderr
    assert "acme-university/spring/blob/main/labs/00_first_open_model" in (copy / "labs" / "00_first_open_model" / "00_first_open_model.ipynb").read_text()
    nothing = subprocess.run([sys.executable, "-m", "helpers.course", "build"], cwd=copy, capture_output=True, text=True, env=env, timeout=120)
    assert nothing.returncode == 2 and "class copy" in nothing.stderr and "--repository" in nothing.stderr
    help_text = subprocess.run(["bash", "kit", "help"], cwd=copy, capture_output=True, text=True, timeout=60).stdout
    assert "class copy" in help_text and "bash kit lab" in help_text and "--port N" in help_text
    for instructor in ("bash kit grade", "bash kit release", "gpu-check", "solutions", "CI"):
        assert instructor not in help_text, instructor
    refused = subprocess.run(["bash", "kit", "grade", "x"], cwd=copy, capture_output=True, text=True, timeout=60)
    assert refused.returncode == 2 and "instructor's command" in refused.stderr


def test_release_has_the_labs_and_no_instructor_material(released):
    assert rel.audit(released) == []
    assert not (released / "solutions").exists() and not (released / "build").exists() and not (released / "tests").exists()
    assert not (released / "INSTRUCTORS.md").exists() and not list(released.rglob("*.zip"))
    labs = sorted(p.name for p in (released / "labs").iterdir() if p.is_dir())
    assert labs == sorted(p.name for p in (REPO_ROOT / "labs").iterdir() if p.is_dir() and not p.name.startswith("."))
    assert (released / "labs" / "01_tco_economics" / "tests" / "q1.py").exists()  # public checks ship
    assert (released / "kit").exists() and (released / "datasets" / "scenario.csv").exists()
    log = subprocess.run(["git", "log", "--oneline"], cwd=released, capture_output=True, text=True, check=True).stdout
    assert log.count("\n") == 1  # one commit: no history holding the solutions


def test_release_imports_and_its_checks_load(released):
    code = ("import sys; sys.path.insert(0, sys.argv[1]); import helpers, helpers.course; "
            "g = helpers.course.make_grader(sys.argv[1] + '/labs/01_tco_economics'); print(type(g).__name__, helpers.__file__)")
    out = subprocess.run([sys.executable, "-c", code, str(released)], capture_output=True, text=True, check=True, cwd=released).stdout
    assert out.startswith("LazyGrader") and str(released) in out


def test_audit_finds_a_planted_hidden_test_and_release_refuses_bad_targets(tmp_path):
    (tmp_path / "labs" / "x" / "tests").mkdir(parents=True)
    (tmp_path / "labs" / "x" / "tests" / "q9.py").write_text("OK_FORMAT = True\ntest = {'cases': [{'hidden': true}]}\n# hidden: true")
    (tmp_path / "solutions").mkdir()
    (tmp_path / "solutions" / "x.ipynb").write_text("{}")
    assert len(rel.audit(tmp_path)) == 2
    with pytest.raises(InputError, match="not empty"):
        rel.release(tmp_path, CLASS_REPO)
    with pytest.raises(InputError, match="inside the kit"):
        rel.release(REPO_ROOT / "release-here", CLASS_REPO)


def test_release_readme_is_the_learners(released):
    readme = (released / "README.md").read_text()
    assert readme.startswith("# Own the Stack — your class copy")
    for instructor_only in ("solutions/", "bash kit grade", "bash kit release", "build-labs", "INSTRUCTORS", "hidden test"):
        assert instructor_only not in readme, instructor_only
    for learner_needs in ("bash kit lab", "bash kit test", 'grader.check("q1")', "Handing in", "Restart Kernel and Run All",
                          "leave that terminal open", "--port 8890"):
        assert learner_needs in readme, learner_needs


def test_the_releases_two_commands_work_there(released, tmp_path):
    """`bash kit test` in the release runs the set-up self-check (no tests/ there) and passes. The release's kit runs
    for real; its venv is this one (a wrapper and a current stamp, so nothing is reinstalled into it)."""
    import hashlib
    import os

    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    wrapper = venv / "bin" / "python"
    wrapper.write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    wrapper.chmod(0o755)
    stamp = hashlib.sha256((released / "pyproject.toml").read_bytes() + (released / "constraints" / "cpu.txt").read_bytes()).hexdigest()
    (venv / ".kit-stamp-lab").write_text(stamp[:16] + "\n")
    env = {**os.environ, "KIT_VENV": str(venv), "PYTHONPATH": str(released), "OTS_PLAN": "tier=cpu"}
    out = subprocess.run(["bash", "kit", "test"], cwd=released, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    assert "installing the kit" not in out.stdout  # the stamp held: nothing reinstalled
    assert "set-up checks passed" in out.stdout and "✓ embedded model" in out.stdout and "✓ 05_hybrid_deployment" in out.stdout
    assert "✗" not in out.stdout
    assert "lab)" in (released / "kit").read_text()  # the README's first command exists in the release's kit


def test_no_file_of_the_release_yields_an_expected_value(released):
    """The answer key stays with the instructor; in the release, every function of the checks that can be called
    without an argument is called, and none returns an answer (nor does any module constant hold one)."""
    import json

    from helpers.course import answer_key

    assert not (released / "helpers" / "course" / "answer_key.py").exists()
    answers = {k: v for k, v in answer_key.answers().items() if v is not None}
    code = r"""
import importlib, inspect, json, sys
sys.path.insert(0, sys.argv[1])
try:
    import helpers.course.answer_key
    print(json.dumps({"key": True})); raise SystemExit
except ImportError:
    pass
found = []
for lab in ("lab00", "lab01", "lab02", "lab03", "lab04", "lab05", "lab06", "digest"):
    module = importlib.import_module(f"helpers.course.checks.{lab}")
    for name, value in vars(module).items():
        if inspect.isfunction(value) and value.__module__ == module.__name__:
            try:
                params = inspect.signature(value).parameters.values()
            except (TypeError, ValueError):
                continue
            if all(p.default is not p.empty or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) for p in params):
                try:
                    found.append([f"{lab}.{name}()", repr(value())])
                except Exception as error:
                    found.append([f"{lab}.{name}()", type(error).__name__])
        elif isinstance(value, (int, float, str, dict, tuple, list)):
            found.append([f"{lab}.{name}", repr(value)])
print(json.dumps({"key": False, "found": found}))
"""
    out = subprocess.run([sys.executable, "-c", code, str(released)], capture_output=True, text=True, cwd=released, timeout=300)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert not result["key"], "the answer key is importable in the release"
    for where, text in result["found"]:
        for question, value in answers.items():
            if where.split(".")[-1].startswith("__") or (isinstance(value, str) and not where.endswith("()")):
                continue  # a text answer is one of the options the exercise lists (its constants name them all)
            shown = ([repr(value)] if isinstance(value, str) else
                     [repr(value), f"{value:.6g}"] + ([f"{value:,.0f}", f"{value:.0f}"] if abs(value) >= 1000 else []))
            for form in shown:
                assert form not in text, (where, question, text[:200])
