#!/usr/bin/env bash
# Install (if needed), then run the main job offline: annotate IMDB with the in-process LLM, fine-tune on gold,
# on those LLM labels and on the real Llama-2-70B labels, and print one table.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
labelnb demo "$@"
