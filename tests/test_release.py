"""The student release: everything a graded class needs, nothing that gives the answers away."""
import subprocess
import sys

import pytest

from helpers.course import release as rel
from helpers.errors import InputError
from helpers.paths import REPO_ROOT


@pytest.fixture(scope="module")
def released(tmp_path_factory):
    return rel.release(tmp_path_factory.mktemp("class") / "own-the-stack")


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
        rel.release(tmp_path)
    with pytest.raises(InputError, match="inside the kit"):
        rel.release(REPO_ROOT / "release-here")
