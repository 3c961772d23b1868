#!/usr/bin/env bash
# README.md is generated from nbs/index.ipynb (nbdev-readme needs Quarto, which cannot be installed everywhere).
# The main job's table and figure in it are read from runs/demo/ (written by `labelnb demo`), never typed by hand.
set -euo pipefail
cd "$(dirname "$0")/.."
jupyter nbconvert --to markdown --execute --ExecutePreprocessor.timeout=120 \
  --TagRemovePreprocessor.enabled=True --TagRemovePreprocessor.remove_input_tags=remove_input \
  nbs/index.ipynb --output-dir . --output README >/dev/null
sed -i -E 's#\]\(([0-9][0-9a-z_]*\.ipynb)\)#](nbs/\1)#g; s#\]\(\.\./runs/#](runs/#g' README.md
sed -i '1i <!-- generated from nbs/index.ipynb by scripts/readme.sh: edit the notebook, not this file -->' README.md
echo "README.md written"
