"""Whole-plugin conformance: recipes, samplers, and every component a distribution registers."""
from __future__ import annotations

import functools
import math
import re
import tempfile
from pathlib import Path
from typing import Callable

import torch

from diffkit import registry
from diffkit.testing.backbones import check_backbone
from diffkit.testing.datasets import check_dataset, check_metric
from diffkit.testing.errors import Checker, ConformanceError
from diffkit.testing.representations import check_representation
from diffkit.testing.processes import check_process
from diffkit.testing.spaces import check_space


# --- recipes --------------------------------------------------------------------------------------------
def shrink_recipe(recipe: dict, *, steps: int = 2, sample_n: int = 8, sample_steps: int = 4, batch_size: int = 16) -> dict:
    """A copy of a loaded recipe cut down to a smoke test: a few training steps, a few samples."""
    import copy

    r = copy.deepcopy(recipe)
    r["train"].update(steps=int(steps), batch_size=min(int(r["train"]["batch_size"]), batch_size), checkpoint_every=max(int(steps), 1),
                      log_every=1, compile=False, precision="fp32", warmup=0)
    r["sample"].update(n=int(sample_n), batch_size=int(sample_n), steps=int(sample_steps))
    if "bits-per-dim" in r.get("eval", {}).get("metrics", []):  # the likelihood of a few elements on a coarse grid: a smoke test, not a figure
        bpd = r["eval"].setdefault("options", {}).setdefault("bits-per-dim", {})
        bpd.update(n=min(int(bpd.get("n", sample_n)), int(sample_n)), steps=min(int(bpd.get("steps", 8)), 8))
    if r.get("representation"):  # a learned first stage fits at its quick tier's size (``[bench.quick] representation = { options = {...} }``)
        quick = r.get("bench", {}).get("quick", {}).get("representation", {}).get("options", {})
        r["representation"]["options"] = {**r["representation"].get("options", {}), **quick}
        if r["representation"].get("tune"):  # a decoder's tuning: the quick tier's minutes (or a second), from the shrunk sampler's last levels
            quick_tune = r.get("bench", {}).get("quick", {}).get("representation", {}).get("tune", {})
            r["representation"]["tune"] = {**r["representation"]["tune"], "minutes": 0.02, **quick_tune, "steps": int(sample_steps),
                                           "last": [1, min(2, int(sample_steps))]}
    return r


def check_recipe(recipe, *, name: str | None = None, steps: int = 2, sample_n: int = 8, sample_steps: int = 4, out_dir: str | Path | None = None) -> list[str]:
    """Train a recipe for ``steps`` steps and sample it through :mod:`diffkit.runs`; returns the contracts checked.

    Rules enforced:

    - ``[load]``: the recipe loads (``load_recipe``) and names its data, diffusion and model.
    - ``[train]``: ``diffkit.training.train`` runs ``steps`` steps with a finite loss and writes a run directory.
    - ``[checkpoint]``: ``load_run`` restores exactly the weights of the run's current checkpoint.
    - ``[sample]``: ``generate`` returns ``sample_n`` valid elements of the space, identical for the same seed.
    - ``[evaluate]``: ``sample_run`` writes files and every metric the recipe names returns finite figures.
    """
    from safetensors.torch import load_file

    from diffkit.recipe import load_recipe

    from diffkit.runs import generate, load_run, sample_run
    from diffkit.rundir import tensor_path, unprefixed
    from diffkit.training.trainer import train

    label = name or (recipe if isinstance(recipe, str) else getattr(recipe, "get", lambda *_: None)("name")) or "recipe"
    ck = Checker("recipe", str(label))
    with ck.step("load", "load_recipe"):
        loaded = shrink_recipe(load_recipe(recipe), steps=steps, sample_n=sample_n, sample_steps=sample_steps)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(out_dir) if out_dir else Path(tmp) / "run"
        with ck.step("train", f"train({steps} steps)"):
            summary = train(loaded, out, progress=False)
        ck.require(summary.get("steps") == steps, "train", f"the run stopped at step {summary.get('steps')}, not {steps}")
        ck.require(math.isfinite(float(summary.get("loss", math.nan))), "train", f"the training loss is {summary.get('loss')}; it must be finite")
        ck.require((out / "config.json").exists(), "train", "the run directory has no config.json")
        with ck.step("checkpoint", "load_run(run_dir, weights='model')"):
            run = load_run(out, weights="model")
        saved = unprefixed("model", load_file(str(tensor_path(out))))
        live = run.denoiser.backbone.state_dict()
        bad = [k for k in saved if k not in live or not torch.equal(saved[k], live[k])]
        ck.require(not bad, "checkpoint", f"load_run did not restore weight(s) {bad[:3]} exactly")
        with ck.step("sample", f"generate(run, {sample_n}, seed=0)"):
            items, labels, _ = generate(run, sample_n, seed=0)
            again, _, _ = generate(run, sample_n, seed=0)
        ck.require(len(items) == sample_n, "sample", f"generate returned {len(items)} elements for n={sample_n}")
        for i, x in enumerate(items):
            with ck.step("sample", f"space.validate(sample {i})"):
                run.data_space.validate(x)  # data elements, also in a two-stage run
        a, b = run.data_space.collate(items), run.data_space.collate(again)
        ck.require(all(a[k].shape == b[k].shape and torch.equal(a[k], b[k]) for k in a), "sample", "two generate calls with the same seed differ; draw only from the seeded generator")
        with ck.step("evaluate", "sample_run(run_dir)"):
            report = sample_run(out, n=sample_n, progress=False, out=out / "samples")
        missing = [p for p in report.get("files", []) if not Path(p).exists()]
        ck.require(report.get("files") and not missing, "evaluate", f"sample_run wrote no files or missing ones {missing[:2]}")
        metrics = report.get("metrics", {})
        ck.require("errors" not in metrics, "evaluate", f"metric(s) failed: {metrics.get('errors')}")
        nonfinite = [k for k, v in metrics.items() if isinstance(v, float) and not math.isfinite(v)]
        ck.require(not nonfinite, "evaluate", f"metric figure(s) {nonfinite} are not finite")
    return ["load", "train", "checkpoint", "sample", "evaluate"]


# --- samplers -------------------------------------------------------------------------------------------
def check_sampler(sampler, *, name: str | None = None, steps: int = 30, n: int = 512) -> list[str]:
    """Check a sampler's declaration and run it on the exact-score oracle (eight Gaussians on a ring of radius 2, VP-cosine).

    Rules enforced:

    - ``[declaration]``: the function is declared with :func:`diffkit.samplers.sampler` (``fn.spec``), under the
      name it is registered as (``name``, when given); ``nfe(steps)`` is a positive integer that does not decrease
      with ``steps``; ``updates`` names process families (FieldProcess subclasses).
    - ``[output]``: ``sampler(denoiser, x_T, times, generator=...)`` returns a State of the prior's shapes, finite.
    - ``[nfe]``: a run over ``steps`` levels calls the denoiser exactly ``nfe(steps)`` times, as declared.
    - ``[determinism]``: the same seed gives the same samples.
    - ``[quality]``: with the exact denoiser and ``steps`` levels the samples land on the ring: mean radius
      within 0.25 of 2 (the prior's is about 1.25).
    """
    from diffkit.denoiser import Denoiser, guided
    from diffkit.oracle import AnalyticBackbone, ring
    from diffkit.processes import Diffusion, FieldProcess, VPCosine
    from diffkit.samplers import resolve, sample
    from diffkit.spaces import EuclideanSpace

    ck = Checker("sampler", name or (sampler if isinstance(sampler, str) else getattr(sampler, "__name__", "sampler")))
    fn, spec = resolve(sampler)
    ck.require(spec is not None, "declaration", "the sampler has no declaration; decorate it with @diffkit.samplers.sampler(name, nfe=..., schedule=..., updates=...)")
    ck.require(name is None or spec.name == name, "declaration", f"it is declared as {spec.name!r} but registered as {name!r}; use one name")
    with ck.step("declaration", "spec.nfe(steps) for steps = 1..12"):
        costs = [spec.nfe(k) for k in range(1, 13)]
    ck.require(all(isinstance(c, int) and c >= 1 for c in costs) and all(b >= a for a, b in zip(costs, costs[1:])), "declaration",
               f"nfe(1..12) = {costs}; the cost must be a positive integer that does not decrease with steps")
    ck.require(len(spec.updates) > 0 and all(issubclass(f, FieldProcess) for f in spec.updates), "declaration",
               f"updates = {spec.updates!r}; name the process families (FieldProcess subclasses) the update moves")

    proc = VPCosine()
    diffusion = Diffusion({"x": proc})
    exact = guided(Denoiser(AnalyticBackbone(ring(8), proc, "eps"), diffusion, "eps"))
    calls = []

    def counted(state, t):
        calls.append(t)
        return exact(state, t)

    counted.diffusion = diffusion
    template = EuclideanSpace(2).template(n)
    with ck.step("output", f"sampling {n} points with {steps} steps"):
        x = sample(counted, template, sampler=fn, steps=steps, generator=torch.Generator().manual_seed(0))
        used = len(calls)
        y = sample(counted, template, sampler=fn, steps=steps, generator=torch.Generator().manual_seed(0))
    ck.require(isinstance(x, dict) and "x" in x and x["x"].shape == (n, 2), "output", f"the sampler returned {type(x).__name__} without an x of shape ({n}, 2)")
    ck.require(bool(torch.isfinite(x["x"]).all()), "output", "the samples hold NaN or infinite values")
    ck.require(used == spec.nfe(steps), "nfe", f"{steps} levels called the denoiser {used} times but the declaration says nfe({steps}) = {spec.nfe(steps)}; fix the declared cost")
    ck.require(torch.equal(x["x"], y["x"]), "determinism", "two runs with the same seed differ; draw noise only from the generator")
    radius = float(x["x"].norm(dim=-1).mean())
    ck.require(abs(radius - 2.0) < 0.25, "quality", f"samples of the exact denoiser have mean radius {radius:.3f}, not 2 ± 0.25; the update does not follow the reverse process")
    return ["declaration", "output", "nfe", "determinism", "quality"]


# --- whole plugins --------------------------------------------------------------------------------------
def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", str(name)).lower()


def _load(kind: str, name: str):
    try:
        return registry.load(kind, name)
    except registry.RegistryError as exc:
        raise ConformanceError(registry.SINGULAR[kind], "import", name, f"{exc}") from None


@functools.lru_cache(maxsize=None)
def _recipes_of(distribution: str) -> tuple:
    """``(name, recipe dict or None)`` for the recipes a distribution registers (None when it does not load)."""
    from diffkit.recipe import load_recipe

    out = []
    for (kind, name), comp in sorted(registry.discover().items()):
        if kind == "recipes" and _norm(comp.distribution) == _norm(distribution):
            try:
                out.append((name, load_recipe(f"recipe:{name}")))
            except Exception:  # noqa: BLE001 - the recipe's own check reports it
                out.append((name, None))
    return tuple(out)


def _using(distribution: str, predicate) -> dict | None:
    for _, recipe in _recipes_of(distribution):
        if recipe is not None and predicate(recipe):
            return recipe
    return None


def _first_items(dataset, k: int):
    from diffkit.evaluation import split_items

    return split_items([dataset[i] for i in range(min(k, len(dataset)))])


def _check_space_component(distribution: str, name: str) -> list[str]:
    from diffkit.spaces.base import Space

    cls = _load("spaces", name)
    ck = Checker("space", name)
    ck.require(isinstance(cls, type) and issubclass(cls, Space), "fields", f"the entry point gives {cls!r}, not a subclass of diffkit.spaces.Space")
    ck.require(getattr(cls, "name", None) == name, "fields", f"its name attribute is {getattr(cls, 'name', None)!r} but it is registered as {name!r}; make them equal")
    for (kind, ds_name), comp in sorted(registry.discover().items()):
        if kind != "datasets" or _norm(comp.distribution) != _norm(distribution):
            continue
        recipe = _using(distribution, lambda r: r["data"]["dataset"] == ds_name)
        options = recipe["data"].get("options", {}) if recipe else {}
        try:
            dataset = _load("datasets", ds_name)(split="train", **options)
        except Exception:  # noqa: BLE001 - the dataset's own check reports it
            continue
        if isinstance(getattr(dataset, "space", None), cls):
            elements, _ = _first_items(dataset, 8)
            return check_space(dataset.space, elements, registered_name=name)
    return ["fields"]  # no dataset of this distribution uses it: call check_space(space, examples) in your own tests


def _check_backbone_component(distribution: str, name: str) -> list[str]:
    from diffkit.recipe import build_run

    factory = _load("backbones", name)
    ck = Checker("backbone", name)
    ck.require(callable(factory), "build", f"the entry point gives {type(factory).__name__}, not a factory")
    recipe = _using(distribution, lambda r: r["model"]["backbone"] == name)
    if recipe is None:
        return ["build"]  # no recipe of this distribution uses it: call check_backbone(...) in your own tests
    with ck.step("build", f"build_run(recipe {recipe['name']!r})"):
        run = build_run(recipe)
    elements, _ = _first_items(run.dataset, 4)
    return check_backbone(factory, run.space, run.diffusion, examples=elements, stats=run.stats, num_classes=run.num_classes,
                          options=recipe["model"].get("options", {}), name=name)


def _check_dataset_component(distribution: str, name: str) -> list[str]:
    recipe = _using(distribution, lambda r: r["data"]["dataset"] == name)
    return check_dataset(_load("datasets", name), options=recipe["data"].get("options", {}) if recipe else {}, name=name)


def _check_metric_component(distribution: str, name: str) -> list[str]:
    from diffkit.evaluation import EvalContext
    from diffkit.recipe import load_dataset

    metric = _load("metrics", name)
    ck = Checker("metric", name)
    ck.require(callable(metric), "output", f"the entry point gives {type(metric).__name__}, not a function")
    recipe = _using(distribution, lambda r: name in r.get("eval", {}).get("metrics", []))
    if recipe is None:
        return ["output"]
    with ck.step("output", f"loading the data of recipe {recipe['name']!r}"):
        train = load_dataset(recipe, "train")
        ref = load_dataset(recipe, recipe.get("eval", {}).get("reference", "test"))
    gen, gen_labels = _first_items(train, 64)
    ref_items, ref_labels = _first_items(ref, 64)
    ctx = EvalContext(generated=gen, reference=[ref.space.validate(x) for x in ref_items], labels=gen_labels, reference_labels=ref_labels, train=train, space=ref.space)
    return check_metric(metric, ctx, options=recipe.get("eval", {}).get("options", {}).get(name, {}), name=name)


def _check_representation_component(distribution: str, name: str) -> list[str]:
    """A recipe of the distribution that names the representation: fit it at the recipe's smoke size on 64 training
    elements and check shapes, determinism and config (the round-trip bound is the representation's own to state:
    call ``check_representation(rep, elements, bound)`` after a full fit in the plugin's tests)."""
    from diffkit.recipe import load_dataset
    from diffkit.representations import build_representation

    factory = _load("representations", name)
    ck = Checker("representation", name)
    ck.require(callable(factory), "contract", f"the entry point gives {type(factory).__name__}, not a factory")
    recipe = _using(distribution, lambda r: (r.get("representation") or {}).get("name") == name)
    if recipe is None:
        return ["contract"]  # no recipe of this distribution uses it: call check_representation(...) in your own tests
    recipe = shrink_recipe(recipe)
    with ck.step("contract", f"building it as recipe {recipe['name']!r} names it"):
        dataset = load_dataset(recipe, "train")
        rep = build_representation(recipe["representation"], dataset.space)
    elements, _ = _first_items(dataset, 64)
    check_representation(rep, elements, bound=float("inf"), registered_name=name, fit=True)
    return ["contract", "fit", "shapes", "determinism", "config"]


def _check_shipped_model(name: str) -> list[str]:
    """A shipped model: its card names every file with a SHA-256 that matches, its weights load into its recipe's
    backbone, and two samples come out finite (``diffkit.runs.generate`` refuses non-finite samples)."""
    from diffkit.pretrained import load_model, locate, verify
    from diffkit.runs import generate

    ck = Checker("shipped model", name)
    with ck.step("card", "locating it and checking its files against card.json"):
        card = verify(locate(name))
    for key in ("recipe", "figures", "tolerance", "sha256", "made_by"):
        ck.require(key in card, "card", f"card.json has no {key!r}; make it with scripts/make_pretrained.py")
    with ck.step("load", "loading its weights into its recipe's backbone"):
        model = load_model(name)
    with ck.step("sample", "drawing two samples"):
        items, _, _ = generate(model.run, 2, sampler="ddim", steps=4)
    ck.require(len(items) == 2, "sample", f"two samples decoded to {len(items)} elements")
    return ["card", "load", "sample"]


def plugin_checks(distribution: str, *, steps: int = 2, sample_n: int = 8) -> list[tuple[str, Callable[[], list]]]:
    """``(id, check)`` pairs, one per component that ``distribution`` registers, for ``pytest.mark.parametrize``.

    Each ``check()`` runs that component's conformance checks and raises :class:`ConformanceError` on failure.
    Recipes are trained for ``steps`` steps and sampled (``sample_n`` samples) through :mod:`diffkit.runs`.
    """
    comps = [(k, n) for (k, n), c in sorted(registry.discover(refresh=True).items()) if _norm(c.distribution) == _norm(distribution)]
    _recipes_of.cache_clear()
    if not comps:
        def missing():
            raise ConformanceError("plugin", "entry-points", distribution, "no installed distribution of that name registers diffkit components; "
                                   "install it (pip install -e PATH) and declare [options.entry_points] in its setup.cfg")
        return [(f"plugin:{distribution}", missing)]
    runners = {
        "spaces": lambda n: _check_space_component(distribution, n),
        "processes": lambda n: check_process(_load("processes", n), name=n),
        "backbones": lambda n: _check_backbone_component(distribution, n),
        "datasets": lambda n: _check_dataset_component(distribution, n),
        "metrics": lambda n: _check_metric_component(distribution, n),
        "recipes": lambda n: check_recipe(n, name=n, steps=steps, sample_n=sample_n),
        "samplers": lambda n: check_sampler(_load("samplers", n), name=n),
        "representations": lambda n: _check_representation_component(distribution, n),
        "pretrained": _check_shipped_model,
    }
    return [(f"{registry.SINGULAR[k]}:{n}", functools.partial(runners[k], n)) for k, n in comps if k in runners]


def check_plugin(distribution: str, *, steps: int = 2, sample_n: int = 8) -> dict[str, list[str]]:
    """Run every check of every component ``distribution`` registers (discovered through ``diffkit.registry``).

    Returns ``{component id: contracts checked}``; raises the first :class:`ConformanceError` met.
    """
    return {cid: fn() for cid, fn in plugin_checks(distribution, steps=steps, sample_n=sample_n)}


def parametrize_checks(distribution: str, argname: str = "check", **kwargs):
    """``@parametrize_checks("diffkit-NAME")`` on ``def test_conformance(check): check()``: one pytest case per component."""
    import pytest

    return pytest.mark.parametrize(argname, [pytest.param(fn, id=cid) for cid, fn in plugin_checks(distribution, **kwargs)])


__all__ = ["check_plugin", "check_recipe", "check_sampler", "parametrize_checks", "plugin_checks", "shrink_recipe"]
