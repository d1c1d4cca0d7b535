#!/usr/bin/env bash
# Install diffkit and every plugin in this checkout (editable), with the test tools.
# Idempotent: a second run installs nothing new. Uses the python3 on PATH (set PYTHON to override).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
args=(-e ".[dev]")
for plugin in plugins/*/; do
  if [ -f "$plugin/setup.cfg" ] || [ -f "$plugin/pyproject.toml" ]; then
    args+=(-e "$plugin")
  fi
done
# an *.egg-info left in the checkout by an older install shadows the installed metadata (entry points) for
# every python started here: remove it so the fresh install is the one that is read
rm -rf ./*.egg-info plugins/*/*.egg-info
echo "== installing $(( ${#args[@]} / 2 )) editable distributions (diffkit and its plugins) (torch comes from the local wheel cache when present)"
"$PY" -m pip install --progress-bar off -q --disable-pip-version-check "${args[@]}"
"$PY" -m diffkit plugins >/dev/null
echo "== installed: $("$PY" -m diffkit --version)"
