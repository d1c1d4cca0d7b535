"""From a recipe to a trained run and back: build, train, load, sample, evaluate.

A recipe (a registered name or a TOML file) names a dataset, one process per field of the dataset's
space, a backbone with its parameterisation, a training budget, a sampler and metrics. Everything
needed to rebuild the model later is written to the run's ``config.json``.
"""
from __future__ import annotations

import copy
import json
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from diffkit.denoiser import Denoiser, guided
from diffkit.evaluation import EvalContext, run_metrics, split_items
from diffkit.processes.composite import Diffusion
from diffkit.registry import RegistryError, load
from diffkit.spaces.base import Space
from diffkit.state import State
from diffkit.training.checkpoint import CheckpointError, atomic_write_json, load_tensors, read_config, unprefixed

TRAIN_DEFAULTS = {
    "steps": 1000, "batch_size": 128, "lr": 1e-3, "weight_decay": 0.0, "warmup": 0, "lr_decay": "none", "ema": 0.999,
    "grad_clip": 1.0, "weighting": "simple", "gamma": 5.0, "p_uncond": 0.0, "checkpoint_every": 500, "log_every": 50,
    "field_weights": {}, "vlb_weight": 0.0, "precision": "fp32", "compile": False, "betas": [0.9, 0.999], "max_minutes": None,
}
SAMPLE_DEFAULTS = {"sampler": "dpmpp-2m", "steps": 20, "n": 1000, "batch_size": 1000, "guidance": None, "schedule": None, "options": {}}


class RecipeError(ValueError):
    """A recipe is missing, malformed or names something that does not fit."""


# --- recipes -------------------------------------------------------------------------------------
def load_recipe(recipe: str | Path | dict) -> dict:
    """A recipe dict from a dict, a TOML path or a registered recipe name."""
    if isinstance(recipe, dict):
        out = copy.deepcopy(recipe)
    else:
        text = str(recipe)
        path = Path(text)
        if text.endswith(".toml") or path.exists():
            if not path.exists():
                raise RecipeError(f"recipe file {path} does not exist; pass a registered recipe name (diffkit plugins) or a TOML path")
            try:
                out = tomllib.loads(path.read_text())
            except tomllib.TOMLDecodeError as exc:
                raise RecipeError(f"recipe file {path} is not valid TOML ({exc}); fix the syntax") from None
        else:
            try:
                obj = load("recipes", text)
            except RegistryError as exc:
                raise RecipeError(str(exc)) from None
            out = obj() if callable(obj) else tomllib.loads(Path(obj).read_text()) if isinstance(obj, (str, Path)) else copy.deepcopy(obj)
    for section in ("data", "diffusion", "model"):
        if section not in out:
            raise RecipeError(f"recipe {out.get('name', recipe)!r} has no [{section}] section; see docs/contracts.md for the recipe format")
    out.setdefault("name", str(recipe))
    out["train"] = {**TRAIN_DEFAULTS, **out.get("train", {})}
    out["sample"] = {**SAMPLE_DEFAULTS, **out.get("sample", {})}
    out.setdefault("eval", {"metrics": [], "reference": "test"})
    out.setdefault("seed", 0)
    return out


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
        try:
            dataset.space = type(space)(**{**space.config(), **data["space"]})
        except TypeError as exc:
            raise RecipeError(f"[data] space = {data['space']} does not fit space {space.name!r} ({exc}); its options are {sorted(space.config())}") from None
    return dataset


def build_space(spec: dict) -> Space:
    cls = load("spaces", spec["name"])
    return cls(**spec["config"])


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

    @property
    def num_classes(self) -> int:
        return int(self.recipe["model"].get("num_classes", 0))

    def space_spec(self) -> dict:
        return {"name": self.space.name, "config": self.space.config()}


def build_run(recipe: dict, dataset=None, stats: dict | None = None, space: Space | None = None) -> Run:
    """Build every component of a recipe. Without ``stats``, the training data is loaded and fitted."""
    if space is None or stats is None:
        dataset = dataset if dataset is not None else load_dataset(recipe, "train")
        space = dataset.space
        if stats is None:
            elements, _ = split_items(dataset)
            stats = space.fit(elements)
    diffusion = build_diffusion(recipe, space, stats)
    backbone = build_backbone(recipe, space, diffusion)
    denoiser = Denoiser(backbone, diffusion, recipe["model"].get("parameterization", "eps"))
    return Run(recipe, space, stats, diffusion, denoiser, dataset)


# --- loading a trained run ---------------------------------------------------------------------
def load_run(run_dir: str | Path, weights: str = "ema", device: str = "cpu") -> Run:
    """Rebuild a run from its directory (config.json + model.safetensors); ``weights`` is ``ema`` or ``model``."""
    run_dir = Path(run_dir)
    config = read_config(run_dir)
    recipe = config["recipe"]
    try:
        space = build_space(config["space"])
    except RegistryError as exc:
        raise CheckpointError(f"{run_dir} was trained with space {config['space']['name']!r}, which is not installed here: {exc}") from None
    run = build_run(recipe, stats=config.get("stats", {}), space=space)
    tensors = load_tensors(run_dir, "model.safetensors", config)
    state = unprefixed(weights, tensors) or unprefixed("model", tensors)
    missing, unexpected = run.denoiser.backbone.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise CheckpointError(f"{run_dir}/model.safetensors does not fit the recipe's backbone (missing {missing[:3]}, unexpected {unexpected[:3]}); the run and the installed plugin disagree")
    run.denoiser.to(device).eval()
    run.extra["config"] = config
    return run


# --- sampling ---------------------------------------------------------------------------------------
def reference_conditioning(run: Run, n: int, split: str | None = None) -> tuple[State, list | None, list]:
    """Conditioning for ``n`` samples, taken from the first ``n`` elements of the recipe's reference split
    (``[eval] reference``, default ``test``): the conditioning fields of their collated State, their labels
    (or None) and the elements. Sample ``i`` is then conditioned on reference element ``i``, which is what
    paired metrics (``mrstft`` with ``paired = true``) compare it with."""
    split = split or run.recipe.get("eval", {}).get("reference", "test")
    fields = conditioning_fields(run.space)
    items, labels = split_items(load_dataset(run.recipe, split))
    if n > len(items):
        raise RecipeError(f"space {run.space.name!r} is conditioned on {fields} from split {split!r}, one sample per element, but n={n} exceeds its {len(items)} elements; lower n")
    state = run.space.collate(items[:n])
    return State({k: state[k] for k in fields}), (None if labels is None else labels[:n]), items[:n]


def generate(run: Run, n: int, *, sampler: str | None = None, steps: int | None = None, guidance: float | None = None, schedule: str | None = None,
             seed: int = 0, batch_size: int | None = None, labels: torch.Tensor | None = None, device: str = "cpu", progress: bool = False, options: dict | None = None,
             conditioning: State | None = None) -> tuple[list, list | None, dict]:
    """Draw ``n`` samples; returns decoded elements, their class labels (or None) and timing figures.

    A space with conditioning fields (``FieldSpec.diffused = False``) takes their values for sample ``i``
    from row ``i`` of ``conditioning``; without it, from the reference split (:func:`reference_conditioning`),
    whose labels are then returned as the samples' labels (and condition a class-conditional model)."""
    from diffkit.samplers import sample as run_sampler

    cfg = run.recipe["sample"]
    sampler = sampler or cfg["sampler"]
    steps = int(steps or cfg["steps"])
    guidance = cfg.get("guidance") if guidance is None else guidance
    schedule = schedule or cfg.get("schedule")
    batch_size = int(batch_size or cfg.get("batch_size", 1000))
    opts = {**cfg.get("options", {}).get(sampler, {}), **(options or {})}  # [sample.options.<sampler>] in the recipe
    generator = torch.Generator().manual_seed(int(seed))
    fields = conditioning_fields(run.space)
    if fields and conditioning is None:
        conditioning, ref_labels, _ = reference_conditioning(run, n)
        if labels is None and ref_labels is not None:
            labels = torch.tensor(ref_labels)
    if fields:
        missing = [k for k in fields if k not in conditioning]
        if missing or conditioning.batch_size < n:
            raise ValueError(f"generate: conditioning must hold field(s) {fields} for {n} samples, got {list(conditioning)} for {conditioning.batch_size}; "
                             f"pass reference_conditioning(run, n)[0] or leave conditioning=None")
    if run.num_classes and labels is None:
        labels = torch.arange(n) % run.num_classes
    items, nfe, evaluations, t0 = [], 0, 0, time.perf_counter()
    bar = _progress(n, "sampling", progress)
    for start in range(0, n, batch_size):
        b = min(batch_size, n - start)
        cond = None if labels is None or not run.num_classes else labels[start:start + b].to(device)
        fn = guided(run.denoiser, cond, guidance)
        counted = _CountingDenoiser(fn)
        template = run.space.template(b, run.stats, generator).to(device)
        for k in fields:
            template[k] = conditioning[k][start:start + b].to(device)
        out = run_sampler(counted, template, sampler=sampler, steps=steps, schedule=schedule, generator=generator, **opts)
        nfe, evaluations = counted.calls, evaluations + counted.calls
        items.extend(run.space.decode(out))
        bar.update(b)
    bar.close()
    seconds = time.perf_counter() - t0
    timing = {"sampler": sampler, "steps": steps, "nfe": nfe, "evaluations": evaluations, "seconds": seconds, "seconds_per_evaluation": seconds / max(evaluations, 1),
              "samples_per_second": n / max(seconds, 1e-9), "guidance": guidance}
    return items, (None if labels is None else labels.tolist()), timing


class _CountingDenoiser:
    """Counts network evaluations (per batch) while passing calls through."""

    def __init__(self, fn):
        self.fn, self.calls, self.diffusion = fn, 0, fn.diffusion

    def __call__(self, state, t):
        self.calls += 1
        return self.fn(state, t)


def _progress(total: int, desc: str, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, disable=not enabled, leave=False, dynamic_ncols=True)


def evaluate(run: Run, items: list, labels: list | None, out_dir: Path | None = None, reference: str | None = None, metrics: list | None = None, reference_data=None) -> dict:
    """Score decoded samples with the recipe's metrics against its reference split."""
    names = metrics if metrics is not None else run.recipe.get("eval", {}).get("metrics", [])
    if not names:
        return {}
    split = reference or run.recipe.get("eval", {}).get("reference", "test")
    ref_dataset = reference_data if reference_data is not None else load_dataset(run.recipe, split)
    ref_items, ref_labels = split_items(ref_dataset)
    train = run.dataset if run.dataset is not None else load_dataset(run.recipe, "train")  # novelty needs the training set
    # model-based metrics (bits per dimension) read the denoiser; their results are kept per run in "memo",
    # since they do not depend on the sampler that drew ``items``
    extras = {"denoiser": run.denoiser, "num_classes": run.num_classes, "memo": run.extra.setdefault("metric_memo", {})}
    ctx = EvalContext(generated=items, reference=[run.space.validate(x) for x in ref_items], labels=labels, reference_labels=ref_labels,
                      train=train, space=run.space, out_dir=out_dir, extras=extras)
    options = run.recipe.get("eval", {}).get("options", {})
    return run_metrics(names, ctx, options)


def sample_run(run_dir: str | Path, *, n: int | None = None, sampler: str | None = None, steps: int | None = None, guidance: float | None = None,
               seed: int = 0, out: str | Path | None = None, device: str = "cpu", progress: bool = True, evaluate_metrics: bool = True, schedule: str | None = None) -> dict:
    """``diffkit sample``: load a run, draw samples, write them and (when the recipe names metrics) metrics.json."""
    run = load_run(run_dir, device=device)
    n = int(n or run.recipe["sample"]["n"])
    conditioning = cond_labels = cond_items = None
    if conditioning_fields(run.space):  # conditioned on reference elements: written beside the samples, in reference/
        conditioning, cond_labels, cond_items = reference_conditioning(run, n)
    items, labels, timing = generate(run, n, sampler=sampler, steps=steps, guidance=guidance, seed=seed, device=device, progress=progress, schedule=schedule,
                                     conditioning=conditioning, labels=None if cond_labels is None else torch.tensor(cond_labels))
    out = Path(out) if out else Path(run_dir) / "samples"
    out.mkdir(parents=True, exist_ok=True)
    reference = None
    names = run.recipe.get("eval", {}).get("metrics", [])
    ref_data = None
    if names and evaluate_metrics:
        ref_data = load_dataset(run.recipe, run.recipe.get("eval", {}).get("reference", "test"))
        reference, _ = split_items(ref_data)
    write_kwargs = {"labels": labels}
    if reference is not None and run.space.name == "euclidean":
        write_kwargs["reference"] = torch.stack(reference[:len(items)])
        write_kwargs["title"] = f"{run.recipe['name']}: {timing['sampler']}, {timing['nfe']} evaluations"
    paths = run.space.write(items, out, **write_kwargs)
    if cond_items is not None:
        paths += run.space.write([run.space.validate(x) for x in cond_items], out / "reference", labels=cond_labels)
    summary = {"recipe": run.recipe["name"], "n": n, "seed": seed, **timing, "files": [str(p) for p in paths]}
    if names and evaluate_metrics:
        summary["metrics"] = evaluate(run, items, labels, out_dir=out, reference_data=ref_data)
        atomic_write_json(out / "metrics.json", summary)
    return summary


def read_log(run_dir: str | Path) -> list[dict]:
    path = Path(run_dir) / "log.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def collate_dataset(space: Space, dataset) -> tuple[State, torch.Tensor | None]:
    """Encode a whole dataset once: the State of every element and their labels (or None)."""
    elements, labels = split_items(dataset)
    state = space.collate(elements)
    return state, (None if labels is None else torch.tensor(labels, dtype=torch.long))
