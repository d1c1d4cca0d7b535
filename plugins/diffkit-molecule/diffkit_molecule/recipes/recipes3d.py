"""The 3-D molecule recipes (``qm9-3d``, ``qm9-3d-cpu``, ``qm9-conformers``, ``qm9-conformers-cpu``), shipped as
TOML files beside this module."""
from __future__ import annotations

from diffkit.recipes import read_packaged


def qm9_3d() -> dict:
    """De novo 3-D QM9 with hydrogens, sized for a GPU."""
    return read_packaged("diffkit_molecule.recipes", "qm9_3d.toml")


def qm9_3d_cpu() -> dict:
    """``qm9-3d`` within one hour of training on 2 CPU cores."""
    return read_packaged("diffkit_molecule.recipes", "qm9_3d_cpu.toml")


def qm9_conformers() -> dict:
    """QM9 conformers conditioned on the molecular graph, sized for a GPU."""
    return read_packaged("diffkit_molecule.recipes", "qm9_conformers.toml")


def qm9_conformers_cpu() -> dict:
    """``qm9-conformers`` within one hour of training on 2 CPU cores."""
    return read_packaged("diffkit_molecule.recipes", "qm9_conformers_cpu.toml")
