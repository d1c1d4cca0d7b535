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


def qm9_quick() -> dict:
    return _finish(read_packaged("diffkit_molecule.recipes", "qm9_quick.toml"))


def qm9_cpu() -> dict:
    """QM9 within one hour of training on 2 CPU cores (``train.max_minutes = 60``)."""
    return _finish(read_packaged("diffkit_molecule.recipes", "qm9_cpu.toml"))


def qm9_cpu_flow() -> dict:
    """``qm9-cpu`` by discrete flow matching: same backbone and budget, ``discrete-flow-marginal`` fields, ``dfm-euler``."""
    return _finish(read_packaged("diffkit_molecule.recipes", "qm9_cpu_flow.toml"))


def qm9_onehot() -> dict:
    return _finish(read_packaged("diffkit_molecule.recipes", "qm9_onehot.toml"))


def qm9_onehot_quick() -> dict:
    """``qm9-onehot`` at the ``qm9-quick`` budget (small model, short training, 500 samples)."""
    recipe = qm9_onehot()
    quick = qm9_quick()
    recipe["name"] = "qm9-onehot-quick"
    recipe["description"] = "QM9 smoke run of the continuous relaxation (one-hot Gaussian diffusion)"
    recipe["model"]["options"] = dict(quick["model"]["options"])
    recipe["train"] = dict(quick["train"])
    recipe["sample"].update(n=quick["sample"]["n"], batch_size=quick["sample"]["batch_size"], steps=30)
    recipe["eval"]["options"]["fcd"] = dict(quick["eval"]["options"]["fcd"])
    return recipe
