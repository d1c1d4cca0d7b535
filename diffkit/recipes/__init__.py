"""Built-in recipes, shipped as TOML files inside the package."""
from __future__ import annotations

import tomllib
from importlib import resources


def read_packaged(package: str, filename: str) -> dict:
    """Parse a TOML recipe shipped inside ``package`` (plugins use this for their own recipes)."""
    return tomllib.loads(resources.files(package).joinpath(filename).read_text())


def gmm() -> dict:
    return read_packaged("diffkit.recipes", "gmm.toml")


def gmm_flow() -> dict:
    """The ``gmm`` task by flow matching (linear path, velocity): same data, backbone and budget."""
    return read_packaged("diffkit.recipes", "gmm-flow.toml")


def gmm_smoke() -> dict:
    """The ``gmm`` recipe at a tenth of the training budget (for smoke tests)."""
    recipe = gmm()
    recipe["name"] = "gmm-smoke"
    recipe["description"] = "smoke test: checks the path, not the quality; gmm at a tenth of its training budget (300 steps)"
    recipe["aliases"] = ["gmm-quick"]  # the old name, kept for one release
    recipe.pop("bench", None)  # the bench task is gmm; its quick tier plays this role there
    recipe["train"].update(steps=300, checkpoint_every=100, log_every=50)
    recipe["sample"]["n"] = 2000
    return recipe
