#!/usr/bin/env bash
# Install the test set (if needed: `setup.sh dev`), then run the notebook tests and the pytest suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh dev
. .venv/bin/activate
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
nbdev-test --n-workers 1
python -m pytest tests/ -q -p no:cacheprovider
