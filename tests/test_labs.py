"""solutions/ -> labs/: in sync, no leaks, setup cells from the one template, outputs stored."""
import filecmp
import re
from pathlib import Path

import nbformat
import pytest

from helpers import course

ROOT = Path(__file__).resolve().parent.parent
LABS = course.lab_names()


def test_there_are_labs():
    assert "00_first_open_model" in LABS


@pytest.fixture(scope="module")
def regenerated(tmp_path_factory):
    out = tmp_path_factory.mktemp("labs")
    course.build(LABS, labs_dir=out, build_dir=tmp_path_factory.mktemp("autograder"))
    return out


@pytest.mark.parametrize("lab", LABS)
def test_committed_lab_equals_what_the_generator_makes(lab, regenerated):
    # .OTTER_LOG is written by grader.check() when a learner (or nbval) runs the lab; it is git-ignored
    ignore = filecmp.DEFAULT_IGNORES + [".OTTER_LOG", "decision_memo.html", "decision_memo.quick.html"]  # the capstone writes its memo there
    comparison = filecmp.dircmp(ROOT / "labs" / lab, regenerated / lab, ignore=ignore)

    def differences(cmp):
        found = cmp.left_only + cmp.right_only + cmp.diff_files
        for sub in cmp.subdirs.values():
            found += differences(sub)
        return found

    assert differences(comparison) == [], "labs/ is stale: run `bash kit build-labs` and commit"


def secret_lines(lab):
    """Solution lines and hidden-test lines of a solution notebook (the text that must not leak)."""
    nb = nbformat.read(ROOT / "solutions" / f"{lab}.ipynb", as_version=4)
    secrets = set()
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        for line in cell.source.splitlines():
            if line.rstrip().endswith("# SOLUTION"):
                secrets.add(line.replace("# SOLUTION", "").strip())
        if "hidden: true" in cell.source:
            body = cell.source.split("# END TEST CONFIG", 1)[1]
            secrets.update(line.strip() for line in body.splitlines() if len(line.strip()) > 12)
    return {s for s in secrets if s}


@pytest.mark.parametrize("lab", LABS)
def test_no_solution_or_hidden_test_text_under_labs(lab):
    secrets = secret_lines(lab)
    assert secrets, "the solution notebook should have solutions and hidden tests"
    texts = {p: p.read_text(errors="ignore") for p in (ROOT / "labs").rglob("*") if p.is_file()}
    leaks = [(str(p.relative_to(ROOT)), s) for p, text in texts.items() for s in secrets if s in text]
    assert leaks == []


@pytest.mark.parametrize("lab", LABS)
def test_setup_cell_and_badge_come_from_the_template(lab):
    for path in [ROOT / "solutions" / f"{lab}.ipynb", ROOT / "labs" / lab / f"{lab}.ipynb"]:
        nb = nbformat.read(path, as_version=4)
        setup = [c for c in nb.cells if c.cell_type == "code" and c.source.startswith(course.SETUP_MARKER)]
        assert [c.source for c in setup] == [course.setup_cell_source(lab)], path
        badges = [c for c in nb.cells if c.cell_type == "markdown" and c.source.startswith(course.BADGE_MARKER)]
        assert [c.source for c in badges] == [course.badge_source(lab)], path
        assert f"/labs/{lab}/{lab}.ipynb" in badges[0].source


@pytest.mark.parametrize("lab", LABS)
def test_checked_cells_have_stored_outputs(lab):
    nb = nbformat.read(ROOT / "solutions" / f"{lab}.ipynb", as_version=4)
    checked = [c for c in nb.cells if c.cell_type == "code" and "# NBVAL_CHECK_OUTPUT" in c.source]
    assert checked, "a solution should check some deterministic outputs"
    missing = [c.source.splitlines()[1] for c in checked if c.execution_count is None or not c.outputs]
    assert missing == [], "checked cells without a stored execution: run the solution notebook and commit it"


@pytest.mark.parametrize("lab", LABS)
def test_solution_is_committed_executed_without_errors(lab):
    nb = nbformat.read(ROOT / "solutions" / f"{lab}.ipynb", as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.execution_count is not None for c in code)
    assert not [o for c in code for o in c.outputs if o.output_type == "error"]


@pytest.mark.parametrize("lab", LABS)
def test_lesson_shape(lab):
    nb = nbformat.read(ROOT / "solutions" / f"{lab}.ipynb", as_version=4)
    intro = nb.cells[1].source
    assert "You will be able to" in intro and "Assumes" in intro and "Time" in intro
    config = next(c for c in nb.cells if c.cell_type == "raw" and "ASSIGNMENT CONFIG" in c.source)
    assert re.search(rf"^name: {lab}$", config.source, re.M)
    long_cells = [c.source.splitlines()[0] for c in nb.cells if c.cell_type == "code"
                  and not c.source.startswith(course.SETUP_MARKER) and len(c.source.splitlines()) > 15]
    assert long_cells == [], "keep notebook cells short: move logic into helpers/"


def test_kit_lab_takes_a_port_and_refuses_a_bad_one():
    """`bash kit lab --port N` was silently ignored (JupyterLab started on 8888): the port asked for, or a clear error."""
    import socket
    import subprocess
    import time
    import urllib.request
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    bad = subprocess.run(["bash", "kit", "lab", "--port", "eighty"], cwd=root, capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "--port takes a number" in bad.stderr
    odd = subprocess.run(["bash", "kit", "lab", "--prot", "8890"], cwd=root, capture_output=True, text=True, timeout=60)
    assert odd.returncode == 2 and "--headless and --port N" in odd.stderr
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    lab = subprocess.Popen(["bash", "kit", "lab", "--headless", "--port", str(port)], cwd=root,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api", timeout=5) as response:
                    assert b"version" in response.read()
                break
            except OSError:
                assert lab.poll() is None and time.monotonic() < deadline, "JupyterLab did not answer on the port asked for"
                time.sleep(1)
    finally:
        import os
        import signal

        os.killpg(lab.pid, signal.SIGTERM)
        try:
            lab.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(lab.pid, signal.SIGKILL)


def test_no_stored_output_table_typesets_money_as_maths():
    """JupyterLab's MathJax reads "$74,265 ($30,497-$166,370)" in an HTML output as inline maths: every table the
    solutions display with a dollar sign in it carries the class that tells MathJax to leave it alone."""
    import json
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    offenders = []
    for path in sorted((root / "solutions").glob("*.ipynb")):
        for index, cell in enumerate(json.loads(path.read_text())["cells"]):
            for output in cell.get("outputs", []):
                page = "".join(output.get("data", {}).get("text/html", ""))
                if re.search(r"\$[0-9-]", page) and "<table" in page:
                    tables = re.findall(r"<table[^>]*>", page)
                    if not all("mathjax_ignore" in table for table in tables):
                        offenders.append(f"{path.name} cell {index}")
    assert not offenders, offenders
