"""The molecule recipes, shipped as TOML files beside this module and exposed as functions returning dicts.

Each function also points the novelty metric at the recipe's own training data
(``[eval.options.molecule-novelty] train_dataset``), so ``diffkit sample`` can score novelty even
though a loaded run does not carry its dataset.
"""
from __future__ import annotations

import copy

from diffkit.recipes import read_packaged


def _finish(recipe: dict) -> dict:
    recipe = copy.deepcopy(recipe)
    options = recipe.setdefault("eval", {}).setdefault("options", {})
    options.setdefault("molecule-novelty", {})["train_dataset"] = {"dataset": recipe["data"]["dataset"], "options": dict(recipe["data"].get("options", {}))}
    return recipe


def qm9() -> dict:
    return _finish(read_packaged("diffkit_molecule.recipes", "qm9.toml"))


def qm9_smoke() -> dict:
    """The smoke test of the QM9 pipeline: checks the path, not the quality."""
    return _finish(read_packaged("diffkit_molecule.recipes", "qm9_smoke.toml"))


def qm9_cpu() -> dict:
    """QM9 within one hour of training on 2 CPU cores (``train.max_minutes = 60``)."""
    return _finish(read_packaged("diffkit_molecule.recipes", "qm9_cpu.toml"))


def qm9_cpu_flow() -> dict:
    """``qm9-cpu`` by discrete flow matching: same backbone and budget, ``discrete-flow-marginal`` fields, ``dfm-euler``."""
    return _finish(read_packaged("diffkit_molecule.recipes", "qm9_cpu_flow.toml"))


def qm9_flow() -> dict:
    """``qm9`` by discrete flow matching: the same backbone and budget at every bench tier; the bench task qm9's second method."""
    return _finish(read_packaged("diffkit_molecule.recipes", "qm9_flow.toml"))


def qm9_onehot() -> dict:
    return _finish(read_packaged("diffkit_molecule.recipes", "qm9_onehot.toml"))


def qm9_onehot_smoke() -> dict:
    """``qm9-onehot`` at the ``qm9-smoke`` budget (small model, short training, 500 samples)."""
    recipe = qm9_onehot()
    smoke = qm9_smoke()
    recipe["name"] = "qm9-onehot-smoke"
    recipe["description"] = "smoke test: checks the path, not the quality; QM9 by the continuous relaxation (one-hot Gaussian diffusion) at the qm9-smoke budget"
    recipe["aliases"] = ["qm9-onehot-quick"]  # the old name, kept for one release
    recipe["model"]["options"] = dict(smoke["model"]["options"])
    recipe["train"] = dict(smoke["train"])
    recipe["sample"].update(n=smoke["sample"]["n"], batch_size=smoke["sample"]["batch_size"], steps=30)
    recipe["eval"]["options"]["fcd"] = dict(smoke["eval"]["options"]["fcd"])
    return recipe
