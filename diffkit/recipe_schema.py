"""The recipe format, as data: every section and key a recipe may hold, checked when a recipe is loaded.

A typo is an error that names it and the closest valid name (``batchsize`` in ``[train]``: did you
mean ``batch_size``?), never a silent default. Two checks:

- :func:`validate_recipe` (at load, needs nothing installed): unknown sections and keys, tables where a
  table belongs, ``[bench.<tier>]`` overrides held to the sections they override.
- :func:`validate_components` (at ``train``, before any data is read): the dataset, processes, backbone,
  sampler and metrics the recipe names are installed (``diffkit plugins``).

Tables whose keys belong to a component (``[data] options``, ``[model] options``, the options of a
process in ``[diffusion.<field>]``, ``[eval] options``, ``[sample] options``) are that component's to check.
"""
from __future__ import annotations

import difflib

from diffkit.cpu import check_precision

OPEN = None
"""A table whose keys are not the recipe format's (a component's options)."""

from diffkit.recipe import SAMPLE_DEFAULTS, TRAIN_DEFAULTS  # noqa: E402  (the keys [train] and [sample] know are their defaults' keys)

TRAIN_KEYS = tuple(TRAIN_DEFAULTS)
SAMPLE_KEYS = tuple(SAMPLE_DEFAULTS)
DATA = {"dataset": str, "options": OPEN, "space": OPEN}
MODEL = {"backbone": str, "parameterization": str, "num_classes": int, "options": OPEN}
TRAIN = {key: object for key in TRAIN_KEYS} | {"field_weights": OPEN}
SAMPLE = {key: object for key in SAMPLE_KEYS} | {"options": OPEN}
EVAL = {"metrics": list, "reference": str, "options": OPEN}
REPRESENTATION = {"name": str, "options": OPEN, "cache": bool, "fit": str, "tune": OPEN}  # the first stage of a two-stage recipe
TIER = {"train": TRAIN, "sample": SAMPLE, "data": DATA, "model": MODEL, "representation": REPRESENTATION, "n": int, "nfe": list, "samplers": list,
        "ancestral_steps": int, "guidance": object}
BENCH = {"task": str, "method": str, "primary": str, "higher_is_better": bool, "samplers": list, "ancestral_steps": int, "guidance": object, "options": OPEN,
         "n": int, "nfe": list, "quick": TIER, "standard": TIER, "full": TIER}
RECIPE = {"name": str, "description": str, "aliases": list, "seed": int, "data": DATA, "diffusion": OPEN, "model": MODEL, "train": TRAIN, "sample": SAMPLE,
          "eval": EVAL, "bench": BENCH, "representation": REPRESENTATION}
REQUIRED = ("data", "diffusion", "model")


def closest(name: str, valid) -> str:
    """`` (did you mean 'x'?)`` for the valid name nearest to ``name`` (difflib), or ``''`` when none is near."""
    valid = [str(v) for v in valid]
    # one wrong letter in a name of 3 or 4 ('gmn' for 'gmm') scores 0.67-0.75; longer names need 0.7
    match = difflib.get_close_matches(str(name), valid, n=1, cutoff=0.6 if len(str(name)) <= 4 else 0.7)
    if not match:  # two letters swapped in a short name ('mpl' for 'mlp') scores below the cutoff
        match = [v for v in valid if sorted(v) == sorted(str(name))][:1]
    return f" (did you mean {match[0]!r}?)" if match else ""


def _where(path: tuple) -> str:
    return "the recipe's top level" if not path else "[" + ".".join(path) + "]"


def _check_table(table: dict, schema: dict, path: tuple, problems: list[str]) -> None:
    for key, value in table.items():
        if key not in schema:
            hint = closest(key, schema)
            kind = "section" if isinstance(value, dict) else "key"
            problems.append(f"unknown {kind} {key!r} in {_where(path)}{hint or f' (valid: {sorted(schema)})'}")
            continue
        expected = schema[key]
        if isinstance(expected, dict) or expected is OPEN:
            if not isinstance(value, dict):
                problems.append(f"{_where(path + (key,))} must be a table (key = value pairs), got {type(value).__name__} {value!r}")
            elif isinstance(expected, dict):
                _check_table(value, expected, path + (key,), problems)


def validate_recipe(recipe: dict, name: str | None = None) -> None:
    """Raise :class:`~diffkit.recipe.RecipeError` naming every unknown section or key of ``recipe`` (one line,
    each with the closest valid name) and every section that is missing or not a table."""
    from diffkit.recipe import RecipeError

    label = name or recipe.get("name", "?")
    if not isinstance(recipe, dict):
        raise RecipeError(f"recipe {label!r} must be a table (a dict), got {type(recipe).__name__}")
    problems: list[str] = []
    _check_table(recipe, RECIPE, (), problems)
    for section in REQUIRED:
        if section not in recipe:
            problems.append(f"no [{section}] section")
    for field, table in (recipe.get("diffusion") or {}).items() if isinstance(recipe.get("diffusion"), dict) else ():
        if not isinstance(table, dict):
            problems.append(f"[diffusion.{field}] must be a table with a 'process' key, got {table!r}")
        elif "process" not in table:
            typo = difflib.get_close_matches("process", [str(k) for k in table], n=1, cutoff=0.7)
            problems.append(f"[diffusion.{field}] has no 'process' key" + (f" ({typo[0]!r} is not 'process')" if typo else ""))
    precision = recipe.get("train", {}).get("precision", "fp32") if isinstance(recipe.get("train"), dict) else "fp32"
    try:
        check_precision(precision)
    except ValueError as err:
        problems.append(f"[train] {err}")
    interval = recipe.get("sample", {}).get("guidance_interval") if isinstance(recipe.get("sample"), dict) else None
    if interval is not None:  # checked here, not first when sampling after hours of training
        from diffkit.denoiser import check_guidance_interval

        try:
            check_guidance_interval(interval)
        except ValueError as err:
            problems.append(f"[sample] {err}")
    if problems:
        raise RecipeError(f"recipe {label!r}: " + "; ".join(problems) + "; see docs/contracts.md for the recipe format")


def recipe_components(recipe: dict) -> list[tuple[str, str, str]]:
    """``(kind, name, where)`` for every installed component the recipe names."""
    out = [("datasets", recipe["data"]["dataset"], "[data] dataset")] if "dataset" in recipe.get("data", {}) else []
    if "backbone" in recipe.get("model", {}):
        out.append(("backbones", recipe["model"]["backbone"], "[model] backbone"))
    for field, table in recipe.get("diffusion", {}).items():
        if isinstance(table, dict) and "process" in table:
            out.append(("processes", table["process"], f"[diffusion.{field}] process"))
    if isinstance(recipe.get("representation"), dict) and "name" in recipe["representation"]:
        out.append(("representations", recipe["representation"]["name"], "[representation] name"))
    sampler = recipe.get("sample", {}).get("sampler")
    if sampler is not None:
        out.append(("samplers", sampler, "[sample] sampler"))
    out += [("metrics", m, "[eval] metrics") for m in recipe.get("eval", {}).get("metrics", [])]
    return out


def validate_components(recipe: dict) -> None:
    """Raise :class:`~diffkit.recipe.RecipeError` when a component the recipe names is not installed: the
    name, where the recipe names it, the closest installed name. Reads only the registry (no data, no model)."""
    from diffkit.recipe import RecipeError
    from diffkit.registry import SINGULAR, names

    problems = []
    for kind, name, where in recipe_components(recipe):
        installed = names(kind)
        if name not in installed:
            hint = closest(name, installed)
            problems.append(f"{where} names {SINGULAR[kind]} {name!r}, which is not installed{hint or f' (installed: {installed})'}")
    if problems:
        raise RecipeError(f"recipe {recipe.get('name', '?')!r}: " + "; ".join(problems) + "; see 'diffkit plugins' for what is installed")


def check_component(kind: str, name: str, what: str) -> None:
    """Raise :class:`~diffkit.recipe.RecipeError` unless a ``kind`` component named ``name`` is installed;
    ``what`` says where the name came from (``--sampler``)."""
    from diffkit.recipe import RecipeError
    from diffkit.registry import SINGULAR, names

    installed = names(kind)
    if name not in installed:
        hint = closest(name, installed)
        raise RecipeError(f"{what} names {SINGULAR[kind]} {name!r}, which is not installed{hint}; installed: {', '.join(installed)}")
