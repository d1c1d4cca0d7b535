"""Build the core and every plugin distribution into one folder of wheels (a wheelhouse).

``pip install --find-links WHEELHOUSE "diffkit[molecule]"`` then installs diffkit and its plugins
from that folder, with no package index needed for the diffkit distributions.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def source_root() -> Path:
    """The source checkout this diffkit was installed from (editable installs only)."""
    root = Path(__file__).resolve().parent.parent
    if not (root / "setup.cfg").exists():
        raise FileNotFoundError(f"no diffkit source checkout at {root}; run 'diffkit wheelhouse' from an editable install (pip install -e .)")
    return root


def plugin_dirs(root: Path | None = None) -> list[Path]:
    root = root or source_root()
    if not (root / "plugins").is_dir():
        return []
    return sorted(p for p in (root / "plugins").iterdir() if (p / "setup.cfg").exists() or (p / "pyproject.toml").exists())


def build_wheelhouse(out: str | Path = "wheelhouse") -> list[Path]:
    """Build wheels of the core and of each folder under ``plugins/`` into ``out``; returns their paths."""
    root = source_root()
    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    projects = [root, *plugin_dirs(root)]
    cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--quiet", "--wheel-dir", str(out), *map(str, projects)]
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        tail = (result.stderr or result.stdout).strip().splitlines()[-1:] or ["unknown error"]
        raise RuntimeError(f"building wheels failed: {tail[0]}; run '{' '.join(cmd)}' to see the full log")
    return sorted(out.glob("diffkit*.whl"))
