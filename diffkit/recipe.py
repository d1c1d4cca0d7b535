"""Recipes: load one (a registered name, a TOML file or a dict), fill its defaults, and build what it names.

A recipe names a dataset, one process per diffused field of the dataset's space, a backbone with its
parameterisation, a training budget, a sampler and metrics. :func:`build_run` turns it into a
:class:`Run` (space, statistics, diffusion, denoiser); the layers above (``diffkit.runs`` for trained
runs, ``diffkit.training`` for training) start from here, and nothing here imports them.
"""
from __future__ import annotations

import copy
import os
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from diffkit.denoiser import Denoiser
from diffkit.evaluation import split_items
from diffkit.processes.composite import Diffusion
from diffkit.registry import RegistryError, load, names
from diffkit.spaces.base import Space
from diffkit.state import State

TRAIN_DEFAULTS = {
    "steps": 1000, "batch_size": 128, "lr": 1e-3, "weight_decay": 0.0, "warmup": 0, "lr_decay": "none", "lr_decay_until": "steps", "ema": 0.999,
    "grad_clip": 1.0, "weighting": "simple", "gamma": 5.0, "p_uncond": 0.0, "checkpoint_every": 500, "log_every": 50,
    "field_weights": {}, "vlb_weight": 0.0, "precision": "fp32", "compile": False, "betas": [0.9, 0.999], "max_minutes": None,
    "init": None,
}
SAMPLE_DEFAULTS = {"sampler": "dpmpp-2m", "steps": 20, "n": 1000, "batch_size": 1000, "guidance": None, "guidance_interval": None, "schedule": None, "constraint": None, "constraint_below": None, "options": {}}


class RecipeError(ValueError):
    """A recipe is missing, malformed or names something that does not fit."""


# --- recipes -------------------------------------------------------------------------------------
def recipe_is_path(recipe: str | Path) -> bool:
    """Whether ``recipe`` names a file rather than a registered recipe: a ``Path``, or text that ends in
    ``.toml`` or is written as a path (holds a ``/``, or starts with ``.`` or ``~``). Anything else is a
    registered name, whatever files lie in the working directory."""
    if isinstance(recipe, Path):
        return True
    text = str(recipe)
    return text.endswith(".toml") or "/" in text or os.sep in text or text.startswith((".", "~"))


def load_recipe(recipe: str | Path | dict) -> dict:
    """A recipe dict from a dict, a TOML path or a registered recipe name (:func:`recipe_is_path` tells which).

    A bare word is a registered name; ``recipe:NAME`` always is. A bare word that is also a file here is
    ambiguous and refused with a one-line error (write ``./NAME`` for the file); a folder of that name is no
    recipe and never shadows one."""
    if isinstance(recipe, dict):
        out = copy.deepcopy(recipe)
    elif not str(recipe).startswith("recipe:") and recipe_is_path(recipe):
        path = Path(recipe).expanduser()
        if not path.exists():
            raise RecipeError(f"recipe file {path} does not exist; pass a registered recipe name (diffkit plugins) or a TOML path")
        if path.is_dir():
            raise RecipeError(f"recipe {path} is a folder; pass a TOML file or a registered recipe name (diffkit plugins)")
        try:
            out = tomllib.loads(path.read_text())
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise RecipeError(f"recipe file {path} is not valid TOML ({exc}); fix the syntax") from None
    else:
        text = str(recipe)
        explicit = text.startswith("recipe:")
        name = text.split(":", 1)[1] if explicit else text
        try:
            out = _registered_recipe(name)
        except RegistryError as exc:
            out = recipe_with_alias(name)
            if out is None:
                if not explicit and Path(name).is_file():
                    raise RecipeError(f"no recipe named {name!r} is registered, but a file {name} is here; write ./{name} to read it as a recipe file") from None
                raise RecipeError(str(exc)) from None
        if not explicit and Path(name).is_file():
            raise RecipeError(f"{name!r} is both a registered recipe and a file here; write ./{name} for the file or recipe:{name} for the registered recipe")
        if name != out.get("name", name) and name in out.get("aliases", []):
            what = str(out.get("description", "")).split(";")[0]  # the recipes' descriptions open with what they are
            print(f"diffkit: recipe {name!r} is now called {out['name']!r}" + (f" ({what})" if what else "") + "; the old name goes after this "
                  "release. For recognisable samples: 'diffkit pretrained' lists the shipped models, 'diffkit sample NAME' samples one", file=sys.stderr)
    from diffkit.recipe_schema import validate_recipe

    validate_recipe(out, out.get("name", str(recipe)) if isinstance(out, dict) else str(recipe))  # typos are errors, not defaults
    for section in ("data", "diffusion", "model"):
        if section not in out:
            raise RecipeError(f"recipe {out.get('name', recipe)!r} has no [{section}] section; see docs/contracts.md for the recipe format")
    out.setdefault("name", str(recipe).removeprefix("recipe:"))
    out["train"] = {**TRAIN_DEFAULTS, **out.get("train", {})}
    out["sample"] = {**SAMPLE_DEFAULTS, **out.get("sample", {})}
    out.setdefault("eval", {"metrics": [], "reference": "test"})
    out.setdefault("seed", 0)
    return out


def _registered_recipe(name: str) -> dict:
    """The recipe registered as ``name`` (a function returning a dict, a TOML path or a dict), as a fresh dict."""
    obj = load("recipes", name)
    return obj() if callable(obj) else tomllib.loads(Path(obj).read_text()) if isinstance(obj, (str, Path)) else copy.deepcopy(obj)


def recipe_with_alias(alias: str) -> dict | None:
    """The registered recipe whose ``aliases`` list holds ``alias`` (an old name kept working for a release),
    or None. Read only when no recipe is registered under that name; a broken recipe is skipped."""
    for name in names("recipes"):
        try:
            recipe = _registered_recipe(name)
        except Exception:  # noqa: BLE001 - a broken plugin's recipe is reported by 'diffkit plugins', never here
            continue
        if isinstance(recipe, dict) and alias in (recipe.get("aliases") or []):
            return recipe
    return None


# --- building -------------------------------------------------------------------------------------
def load_dataset(recipe: dict, split: str = "train"):
    """The recipe's dataset for ``split``. ``[data] space = {...}`` rebuilds the dataset's space with those
    keyword arguments over its ``config()`` (e.g. ``{ n_mels = 40 }`` asks the audio space for mel frames)."""
    data = recipe["data"]
    factory = load("datasets", data["dataset"])
    dataset = factory(split=split, **data.get("options", {}))
    if not isinstance(getattr(dataset, "space", None), Space):
        raise RecipeError(f"dataset {data['dataset']!r} has no .space (a diffkit Space); datasets must say what their elements are")
    if data.get("space"):
        space = dataset.space
        unknown = sorted(set(data["space"]) - set(space.config()))
        if unknown:
            raise RecipeError(f"[data] space option(s) {unknown} are not options of space {space.name!r}; its options are {sorted(space.config())}")
        try:
            dataset.space = type(space)(**{**space.config(), **data["space"]})
        except TypeError as exc:
            raise RecipeError(f"[data] space = {data['space']} does not fit space {space.name!r} ({exc}); its options are {sorted(space.config())}") from None
    return dataset


def build_space(spec: dict) -> Space:
    """The space a run's config.json describes: ``{"name": registered space, "config": its keyword arguments}``."""
    cls = load("spaces", spec["name"])
    try:
        return cls(**spec["config"])
    except TypeError as exc:
        raise RecipeError(f"space {spec['name']!r} takes no options {spec['config']} as recorded ({exc}); the run was written by another version of its plugin") from None


def conditioning_fields(space: Space) -> list[str]:
    """The space's fields that are not diffused (``FieldSpec.diffused = False``): inputs the backbone reads."""
    return [f.name for f in space.fields if not f.diffused]


def build_diffusion(recipe: dict, space: Space, stats: dict) -> Diffusion:
    """One process per diffused field of ``space`` from the recipe's ``[diffusion.<field>]`` tables
    (conditioning fields get none: they travel through noising and sampling unchanged)."""
    processes, layouts = {}, {}
    table = recipe["diffusion"]
    unknown = set(table) - {f.name for f in space.fields}
    if unknown:
        raise RecipeError(f"[diffusion] names field(s) {sorted(unknown)} that space {space.name!r} does not have; its fields are {[f.name for f in space.fields]}")
    fixed = sorted(set(table) & set(conditioning_fields(space)))
    if fixed:
        raise RecipeError(f"[diffusion] gives a process for conditioning field(s) {fixed} of space {space.name!r}, which are never noised; remove [diffusion.{fixed[0]}]")
    for f in space.fields:
        if not f.diffused:
            continue
        if f.name not in table:
            raise RecipeError(f"[diffusion] gives no process for field {f.name!r} of space {space.name!r}; add [diffusion.{f.name}] process = \"...\"")
        options = dict(table[f.name])
        name = options.pop("process", None)
        if name is None:
            raise RecipeError(f"[diffusion.{f.name}] has no 'process' key")
        if options.get("frequencies") == "data":
            try:
                options["frequencies"] = stats["frequencies"][f.name]
            except KeyError:
                raise RecipeError(f"[diffusion.{f.name}] asks for data frequencies but space {space.name!r} computes none for it") from None
        processes[f.name] = load("processes", name)(f, **options)
        layouts[f.name] = f.layout
    return Diffusion(processes, layouts)


def build_backbone(recipe: dict, space: Space, diffusion: Diffusion) -> torch.nn.Module:
    model = recipe["model"]
    factory = load("backbones", model["backbone"])
    return factory(space, diffusion, num_classes=int(model.get("num_classes", 0)), **model.get("options", {}))


@dataclass
class Run:
    """A built model: space, diffusion, denoiser (backbone + parameterisation) and statistics."""

    recipe: dict
    space: Space
    stats: dict
    diffusion: Diffusion
    denoiser: Denoiser
    dataset: Any = None
    extra: dict = field(default_factory=dict)
    splits: dict = field(default_factory=dict, repr=False)
    representation: Any = None  # the first stage of a two-stage recipe (diffkit.representations), or None
    encoded: Any = None  # the training data as the diffusion sees it (encoded by the representation, else the dataset)

    @property
    def data_space(self) -> Space:
        """The space of the data and of decoded samples: the representation's data space in a two-stage run, else ``space``."""
        return self.space if self.representation is None else self.representation.data_space

    def to_data(self, items: list) -> list:
        """Samples of :attr:`space` as data elements (decoded by the representation in a two-stage run)."""
        if self.representation is None:
            return items
        self.check_decoder()
        from diffkit.representations import decode_in_batches

        return decode_in_batches(self.representation, items)

    def check_decoder(self) -> None:
        """Make the first stage ready to decode: wait for a decoder fitted beside the diffusion; refuse, in one line, a
        checkpoint written before such a decoder was done (its decoder is untrained)."""
        if self.decoder_pending:
            self.finish_first_stage()
        if self.extra.get("decoder_unfitted"):
            from diffkit.representations import RepresentationError

            where = self.extra["decoder_unfitted"]
            raise RepresentationError(f"{where} was written while its first stage's decoder was still being fitted beside the diffusion, so it "
                                      f"cannot decode; sample the finished run, or fit a decoder with 'diffkit refit-first-stage {where} --out NEW'")

    @property
    def decoder_pending(self) -> bool:
        """Whether the first stage's decoder is still being fitted beside the diffusion (``[representation] fit = "beside"``)."""
        return self.extra.get("decoder_fit") is not None

    def finish_first_stage(self) -> dict:
        """Wait for a decoder fitted beside the diffusion and load it; returns the first stage's report."""
        pending = self.extra.pop("decoder_fit", None)
        if pending is not None:
            self.extra["representation_report"] = pending.wait()
        return self.extra.get("representation_report", {})

    @property
    def num_classes(self) -> int:
        return int(self.recipe["model"].get("num_classes", 0))

    def split(self, name: str):
        """The recipe's dataset for split ``name``, loaded once per run and kept: a command that needs a split
        twice (conditioning and metrics both read the reference split) reads it once."""
        if name == "train" and self.dataset is not None:
            return self.dataset
        if name not in self.splits:
            self.splits[name] = load_dataset(self.recipe, name)
            if name == "train":
                self.dataset = self.splits[name]
        return self.splits[name]

    @property
    def reference_split(self) -> str:
        """The split metrics compare with and conditioning fields are taken from (``[eval] reference``)."""
        return self.recipe.get("eval", {}).get("reference", "test")

    def space_spec(self) -> dict:
        return {"name": self.space.name, "config": self.space.config()}

    def providers(self) -> dict:
        """The distribution that registered each component the recipe names, as ``{"kind/name": distribution}``:
        written into a run's config, so loading it where a plugin is missing says which one to install."""
        from diffkit.registry import provider

        named = [("spaces", self.space.name), ("datasets", self.recipe["data"]["dataset"]), ("backbones", self.recipe["model"]["backbone"])]
        named += [("processes", table["process"]) for table in self.recipe["diffusion"].values() if "process" in table]
        if self.representation is not None:
            named += [("representations", self.representation.name)]
        named += [("samplers", self.recipe["sample"]["sampler"])] + [("metrics", m) for m in self.recipe.get("eval", {}).get("metrics", [])]
        found = {f"{kind}/{name}": provider(kind, name) for kind, name in named}
        return {k: v for k, v in sorted(found.items()) if v}


def build_run(recipe: dict, dataset=None, stats: dict | None = None, space: Space | None = None, representation=None) -> Run:
    """Build every component of a recipe. Without ``stats``, the training data is loaded and fitted.

    A recipe with a ``[representation]`` table is two-stage: the first stage is built over the dataset's space
    and fitted on the training data (or read from its cache, :func:`diffkit.representations.fit_representation`),
    the training data is encoded (``Run.encoded``), and the diffusion and backbone are built on the
    representation's space. ``representation`` passes one already built and loaded (a trained run's).

    With ``[representation] fit = "beside"`` only the codes are fitted here; the decoder is fitted in a process of
    its own (:class:`diffkit.representations.DecoderFit`) while the caller trains the diffusion, and
    :meth:`Run.finish_first_stage` (called by training at its end, and before any decoding) waits for it."""
    spec = recipe.get("representation")
    if spec and representation is None and (space is None or stats is None):
        from diffkit.representations import EncodedDataset, build_representation, encode_in_batches, fit_mode, fit_representation, tune_options

        dataset = dataset if dataset is not None else load_dataset(recipe, "train")
        representation = build_representation(spec, dataset.space)
        beside = fit_mode(spec, representation) == "beside"
        tune_options(spec, representation)  # checked before anything is fitted; training applies it at its end
        elements, labels = split_items(dataset)
        elements = [dataset.space.validate(e) for e in elements]
        fitted = fit_representation(representation, elements, labels, data=recipe["data"], seed=int(recipe.get("seed", 0)),
                                    cache=bool(spec.get("cache", True)), beside=beside)
        report, pending = fitted if beside else (fitted, None)
        encoded = EncodedDataset(encode_in_batches(representation, elements), labels, representation.space)
        run = build_run(recipe, encoded, stats=stats, representation=representation)
        run.dataset, run.encoded = dataset, encoded
        run.extra["representation_report"] = report
        if pending is not None:
            run.extra["decoder_fit"] = pending
        return run
    if space is None or stats is None:
        dataset = dataset if dataset is not None else load_dataset(recipe, "train")
        space = dataset.space
        if stats is None and hasattr(dataset, "space_statistics"):  # a dataset that computes (and caches) space.fit of its elements itself
            stats = dataset.space_statistics()
        elif stats is None:
            elements, _ = split_items(dataset)
            stats = space.fit(elements)
    if representation is not None and space is not representation.space:
        space = representation.space
    diffusion = build_diffusion(recipe, space, stats)
    backbone = build_backbone(recipe, space, diffusion)
    denoiser = Denoiser(backbone, diffusion, recipe["model"].get("parameterization", "eps"))
    return Run(recipe, space, stats, diffusion, denoiser, dataset, representation=representation, encoded=dataset)


def collate_dataset(space: Space, dataset) -> tuple[State, torch.Tensor | None]:
    """Encode a whole dataset once: the State of every element and their labels (or None). A dataset with a
    ``collate_all()`` method (packed data that validates and encodes itself in one pass) is asked for both."""
    if hasattr(dataset, "collate_all") and getattr(dataset, "space", None) is space:
        return dataset.collate_all()
    elements, labels = split_items(dataset)
    state = space.collate(elements)
    return state, (None if labels is None else torch.tensor(labels, dtype=torch.long))
