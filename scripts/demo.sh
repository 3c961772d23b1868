#!/usr/bin/env bash
# Install the main job's set (if needed), then run the main job offline: MiniLM students on Jigsaw's gold labels and on
# Qwen2.5-7B's real labels over three seeds, the TF-IDF baseline, and labelnb's in-process annotator on short MR sentences.
# Writes runs/demo/{table.md,table.csv,runs.csv,figure.png,summary.json} and prints the table. Options: labelnb demo --help.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
labelnb demo "$@"
