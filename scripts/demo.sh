#!/usr/bin/env bash
# Set up, then run the main job on built-in data: train the gmm recipe and sample it.
# A second run finds the trained run in runs/gmm and only samples again.
set -euo pipefail
cd "$(dirname "$0")/.."
start=$SECONDS
bash scripts/setup.sh
echo "== set up in $(( SECONDS - start )) s"
PY=${PYTHON:-python3}
resume=()
[ -f runs/gmm/config.json ] && resume=(--resume)
"$PY" -m diffkit train gmm --out runs/gmm ${resume[@]+"${resume[@]}"}
"$PY" -m diffkit sample runs/gmm --out runs/gmm/samples
echo "== done in $(( SECONDS - start )) s; samples: runs/gmm/samples/samples.png, figures: runs/gmm/samples/metrics.json"
