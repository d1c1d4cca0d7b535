"""Recipes of diffkit-timeseries, shipped as TOML inside the package."""
from diffkit.recipes import read_packaged


def seasonal() -> dict:
    """Registered recipe ``seasonal``: 3-channel series of 64 steps, dilated TCN, v-prediction."""
    return read_packaged("diffkit_timeseries.recipes", "seasonal.toml")


def seasonal_smoke() -> dict:
    """Registered recipe ``seasonal-smoke``: the same task at a smoke-test budget (well under a minute on 2 CPU cores)."""
    recipe = seasonal()
    recipe["name"] = "seasonal-smoke"
    recipe["description"] = "smoke test: checks the path, not the quality; seasonal at 1,000 series, a 32-channel TCN, 300 steps"
    recipe["aliases"] = ["seasonal-quick"]  # the old name, kept for one release
    recipe.pop("bench", None)  # the bench task is seasonal; its quick tier plays this role
    recipe["data"]["options"]["n"] = 1000
    recipe["model"]["options"] = {"hidden": 32, "dilations": [1, 2, 4, 8]}
    recipe["train"].update(steps=300, batch_size=64, checkpoint_every=300, log_every=50, warmup=20)
    recipe["sample"].update(n=256, batch_size=256)
    return recipe
