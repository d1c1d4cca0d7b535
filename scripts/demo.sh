#!/usr/bin/env bash
# Set up, then run the main job on built-in data: train the gmm recipe and sample it.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
PY=${PYTHON:-python3}
"$PY" -m diffkit train gmm --out runs/gmm
"$PY" -m diffkit sample runs/gmm --out runs/gmm/samples
echo "== samples: runs/gmm/samples/samples.png, figures: runs/gmm/samples/metrics.json"
