#!/usr/bin/env bash
# Set up, then run the main job on built-in data: first sample the shipped gmm model (a picture within
# seconds of the install), then train the gmm recipe from scratch and sample it.
# A second run finds the trained run in runs/gmm and only samples again.
set -euo pipefail
cd "$(dirname "$0")/.."
start=$SECONDS
bash scripts/setup.sh
echo "== set up in $(( SECONDS - start )) s"
PY=${PYTHON:-python3}
"$PY" -m diffkit sample pretrained:gmm --out runs/gmm-shipped --quiet >/dev/null
echo "== first result in $(( SECONDS - start )) s: runs/gmm-shipped/samples.png (the shipped gmm model, sampled before any training)"
resume=()
[ -f runs/gmm/config.json ] && resume=(--resume)
"$PY" -m diffkit train gmm --out runs/gmm ${resume[@]+"${resume[@]}"}
"$PY" -m diffkit sample runs/gmm --out runs/gmm/samples
echo "== done in $(( SECONDS - start )) s; samples: runs/gmm/samples/samples.png, figures: runs/gmm/samples/metrics.json"
