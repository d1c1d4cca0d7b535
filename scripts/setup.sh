#!/usr/bin/env bash
# Install diffkit and every plugin in this checkout (editable), with the test tools.
# Idempotent: a second run installs nothing new. Uses the python3 on PATH (set PYTHON to override).
#
# torch: by default pip's index decides (on Linux, the CUDA build: torch plus ~16 nvidia wheels and triton,
# 6.3 GB installed). DIFFKIT_TORCH=cpu installs torch's CPU build first (1.8 GB installed with everything
# else): from a local +cpu wheel when one of pip's find-links folders holds one, else from PyTorch's CPU
# index (DIFFKIT_TORCH_INDEX, default https://download.pytorch.org/whl/cpu), with the matching CPU torchaudio
# for the audio plugin. An interpreter that already has torch keeps it.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
PIP=("$PY" -m pip --disable-pip-version-check)

mode=${DIFFKIT_TORCH:-default}
case "$mode" in
  default|cpu) ;;
  *) echo "setup.sh: DIFFKIT_TORCH must be cpu or unset (pip's default build), got '$mode'" >&2; exit 2 ;;
esac

if [ "$mode" = cpu ] && ! "$PY" -c "import torch" >/dev/null 2>&1; then
  # a local CPU wheel in one of pip's find-links folders (pip config or $PIP_FIND_LINKS), newest first
  links=$("${PIP[@]}" config list 2>/dev/null | sed -n "s/^[^=]*find-links='\(.*\)'$/\1/p" | tr ' ' '\n'; echo "${PIP_FIND_LINKS:-}" | tr ' ' '\n')
  wheel=""
  for dir in $links; do
    dir=${dir#file://}
    [ -d "$dir" ] || continue
    found=$(ls "$dir"/torch-*+cpu-*.whl 2>/dev/null | sort -V | tail -n 1 || true)
    [ -n "$found" ] && wheel=$found
  done
  if [ -n "$wheel" ]; then
    echo "== installing torch's CPU build from the local wheel $wheel"
    "${PIP[@]}" install --progress-bar off -q "$wheel"
  else
    index=${DIFFKIT_TORCH_INDEX:-https://download.pytorch.org/whl/cpu}
    echo "== installing torch's CPU build and the audio plugin's torchaudio from $index"
    "${PIP[@]}" install --progress-bar off -q torchaudio==2.11.0 torch --index-url "$index"
  fi
fi

args=(-e ".[dev]")
for plugin in plugins/*/; do
  if [ -f "$plugin/setup.cfg" ] || [ -f "$plugin/pyproject.toml" ]; then
    args+=(-e "$plugin")
  fi
done
# an *.egg-info left in the checkout by an older install shadows the installed metadata (entry points) for
# every python started here: remove it so the fresh install is the one that is read
rm -rf ./*.egg-info plugins/*/*.egg-info
echo "== installing $(( ${#args[@]} / 2 )) editable distributions (diffkit and its plugins; torch: ${mode} build unless one is installed)"
"${PIP[@]}" install --progress-bar off -q "${args[@]}"
if [ -d plugins/diffkit-audio ] && ! "$PY" -c "import torchaudio" >/dev/null 2>&1; then
  echo "== warning: torchaudio does not import beside torch $("$PY" -c 'import torch; print(torch.__version__)') (a CUDA torchaudio beside a CPU torch?);" \
       "the audio plugin is listed as broken until the matching build is installed:" \
       "pip install --force-reinstall torch torchaudio==2.11.0 --index-url https://download.pytorch.org/whl/cpu (or leave DIFFKIT_TORCH unset)" >&2
fi
"$PY" -m diffkit plugins >/dev/null
echo "== installed: $("$PY" -m diffkit --version), torch $("$PY" -c 'import torch; print(torch.__version__)')"
