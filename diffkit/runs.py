"""Trained runs: load one from its directory, draw samples, write them in the modality's natural form, score them.

The layer above :mod:`diffkit.recipe` (which builds the components) and the run-directory format
(:mod:`diffkit.rundir`): ``diffkit sample``, ``diffkit bench`` and ``diffkit eval`` go through here.
Each dataset split a command needs is loaded once per :class:`~diffkit.recipe.Run` (:meth:`Run.split`).
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch

from diffkit.denoiser import check_guidance_interval, guided
from diffkit.evaluation import EvalContext, run_metrics, split_items
from diffkit.recipe import RecipeError, Run, build_run, build_space, conditioning_fields
from diffkit.recipe_schema import check_component
from diffkit.registry import KINDS, SINGULAR, RegistryError, names
from diffkit import rundir
from diffkit.rundir import CheckpointError, atomic_write_json, check_shapes, checkpoint_dir, load_tensors, read_config, unprefixed
from diffkit.state import MASK_FIELDS, State


# --- loading a trained run ---------------------------------------------------------------------
def load_run(run_dir: str | Path, weights: str = "ema", device: str = "cpu") -> Run:
    """Rebuild a run from its directory (config.json + model.safetensors); ``weights`` is ``ema`` or ``model``."""
    run_dir = Path(run_dir)
    config = read_config(run_dir)
    recipe = config["recipe"]
    for key, dist in config.get("providers", {}).items():  # a component whose plugin is missing here: say which to install
        kind, _, name = key.partition("/")
        if kind in KINDS and name not in names(kind):
            raise CheckpointError(f"{run_dir} was trained with the {SINGULAR[kind]} {name!r} from {dist}, which is not installed here; pip install {dist}")
    try:
        space = build_space(config["space"])
    except RegistryError as exc:
        raise CheckpointError(f"{run_dir} was trained with space {config['space']['name']!r}, which is not installed here: {exc}") from None
    representation = _load_representation(run_dir, config) if config.get("representation") else None
    run = build_run(recipe, stats=config.get("stats", {}), space=space, representation=representation)
    tensors = load_tensors(run_dir, "model.safetensors", config)
    state = unprefixed(weights, tensors) or unprefixed("model", tensors)
    check_shapes(run.denoiser.backbone.state_dict(), state, source=str(checkpoint_dir(run_dir, config) / "model.safetensors"),
                 recipe=str(recipe.get("name")))
    run.denoiser.backbone.load_state_dict(state)
    run.denoiser.to(device).eval()
    run.extra["config"] = config
    if (config.get("representation") or {}).get("report", {}).get("decoder_pending"):
        run.extra["decoder_unfitted"] = str(run_dir)
    return run


def _load_representation(run_dir: Path, config: dict):
    """The first stage of a two-stage run, rebuilt from its recorded spec with the weights saved beside the model."""
    from diffkit.representations import RepresentationError, build_representation

    spec = config["representation"]
    try:
        data_space = build_space(spec["data_space"])
        rep = build_representation({"name": spec["name"], "config": spec.get("config", {})}, data_space)
        rep.load_state_dict(load_tensors(run_dir, "representation.safetensors", config))
    except (RegistryError, RepresentationError) as exc:
        raise CheckpointError(f"{run_dir}: its first stage (representation {spec.get('name')!r}) cannot be rebuilt here: {exc}") from None
    return rep


def _first_stage_source(run_dir, out_dir, command: str, what: str) -> tuple[Path, Path, dict]:
    """The checks of the commands that write a run with a new first stage (``command``): a two-stage source run and an
    ``out_dir`` other than it. Returns both paths and the source's config."""
    from diffkit.representations import RepresentationError

    run_dir, out_dir = Path(run_dir), Path(out_dir)
    config = read_config(run_dir)
    if not config.get("representation"):
        raise RepresentationError(f"{run_dir} is a one-stage run (no [representation]); there is no {what}")
    if out_dir.resolve() == run_dir.resolve():
        raise ValueError(f"{command} writes a new run; choose an --out other than {run_dir}")
    return run_dir, out_dir, config


def refit_first_stage(run_dir: str | Path, out_dir: str | Path, options: dict, *, atol: float = 1e-5) -> dict:
    """A two-stage run whose first stage is fitted again under changed ``options`` while its diffusion stage is kept:
    a new decoder (a better vocoder, a longer-trained one) for codes the diffusion already learned.

    The first stage is rebuilt with ``{**its config, **options}`` and fitted on the run's training split with the
    recipe's data and seed (through the representation cache, as training does). It is kept only if it encodes the
    training elements to the same codes as before, within ``atol``: the diffusion stage learned those codes, so an
    option that changes the encoder needs a new training run, and is refused. The run is written to ``out_dir``
    (model weights unchanged; the recipe's ``[representation] options``, the recorded spec and its fit report
    updated; ``refitted_from`` naming the source). Returns the new fit's report."""
    from diffkit.representations import RepresentationError, build_representation, encode_in_batches, fit_representation

    run_dir, out_dir, config = _first_stage_source(run_dir, out_dir, "refit_first_stage", "first stage to refit")
    run = load_run(run_dir)
    old = run.representation
    recipe = json.loads(json.dumps(config["recipe"]))
    spec = {**recipe["representation"], "options": {**old.config(), **options}}
    new = build_representation({k: v for k, v in spec.items() if k != "config"}, old.data_space)
    elements, labels = split_items(run.split("train"))
    elements = [old.data_space.validate(e) for e in elements]
    report = fit_representation(new, elements, labels, data=recipe["data"], seed=int(recipe.get("seed", 0)), cache=bool(spec.get("cache", True)))
    probe = elements[: min(len(elements), 512)]
    before, after = torch.stack(encode_in_batches(old, probe)), torch.stack(encode_in_batches(new, probe))
    gap = float((before - after).abs().max()) if before.shape == after.shape else float("inf")
    if not gap <= atol:
        raise RepresentationError(f"options {options} change the first stage's codes (largest difference {gap:.3g} > {atol:g}), which the diffusion "
                                  f"stage of {run_dir} was trained on; train a new run with them instead")
    recipe["representation"] = {**recipe["representation"], "options": {**recipe["representation"].get("options", {}), **options}}
    keep = {k: v for k, v in config.items() if k not in ("format", "format_version", "checkpoint", "previous", "checksums", "recipe", "representation")}
    described = {**new.spec(), "data_space": config["representation"]["data_space"], "report": report}
    model = load_tensors(run_dir, "model.safetensors", config)
    rundir.write_checkpoint(out_dir, {**keep, "recipe": recipe, "representation": described, "refitted_from": str(run_dir)},
                            {"model.safetensors": model, "representation.safetensors": new.state_dict()})
    return report


def diffusion_reconstructions(run: Run, elements: list, labels: list | None = None, *, sampler: str | None = None, steps: int | None = None,
                              guidance: float | None = None, last: tuple[int, int] = (3, 5), seed: int = 0, batch_size: int = 128) -> tuple[list, dict]:
    """The diffusion's own codes for known elements, for a decoder to learn what sampling will hand it.

    Each element's code ``z0 = encode(x)`` is noised to one level of the sampler's grid (``steps`` levels, the
    sampler's declared schedule), ``z_t ~ q(z_t | z0)`` at ``t = times[steps - k]`` with ``k`` drawn per element
    uniformly from ``last = (k_lo, k_hi)``, and the sampler runs its last ``k`` levels from there, class-conditioned
    on the element's label with ``guidance``. The result ``ẑ`` carries the diffusion's own fine structure (what it
    gets wrong in the last levels) while still describing ``x``, so ``(ẑ, x)`` is a training pair for the decoder
    (ground-truth-aligned codes, as a TTS vocoder is fine-tuned on its acoustic model's frames). Defaults: the
    recipe's ``[sample]`` sampler, steps, guidance (and its interval), options and constraint. Returns the codes (in ``elements``' order) and a JSON report."""
    from diffkit.representations import encode_in_batches
    from diffkit.samplers import sampler_grid

    if run.representation is None:
        raise RecipeError("diffusion_reconstructions: the run is one-stage (no [representation]); there are no codes to reconstruct")
    cfg = run.recipe["sample"]
    sampler = sampler or cfg["sampler"]
    check_component("samplers", sampler, "sampler")
    steps = positive_count(cfg["steps"] if steps is None else steps, "the number of sampling steps (--steps)")
    guidance = cfg.get("guidance") if guidance is None else guidance
    interval = check_guidance_interval(cfg.get("guidance_interval"))
    k_lo, k_hi = (int(v) for v in last)
    if not 1 <= k_lo <= k_hi <= steps:
        raise ValueError(f"last = ({k_lo}, {k_hi}): the levels sampled again must satisfy 1 <= first <= second <= steps ({steps}); e.g. last = (3, 5) of 10 steps")
    if run.num_classes and labels is None:
        raise ValueError("diffusion_reconstructions: the model is class-conditional; pass the elements' labels")
    diffusion = run.denoiser.diffusion
    fn, times = sampler_grid(diffusion, sampler, steps, cfg.get("schedule"))
    # as sampling runs it (the constraint too), so the codes are those sampling hands over
    opts = sampling_options(run, sampler, constraint=cfg.get("constraint"), constraint_below=cfg.get("constraint_below"))
    codes = encode_in_batches(run.representation, elements)
    generator = torch.Generator().manual_seed(int(seed))
    ks = torch.randint(k_lo, k_hi + 1, (len(codes),), generator=generator)
    out: list = [None] * len(codes)
    t0 = time.perf_counter()
    for k in range(k_lo, k_hi + 1):
        chosen = torch.nonzero(ks == k).flatten().tolist()
        start = len(times) - k
        for b in range(0, len(chosen), batch_size):
            idx = chosen[b:b + batch_size]
            z0 = run.space.collate([codes[i] for i in idx])
            z_t, _ = diffusion.noise(z0, torch.full((len(idx),), float(times[start])), generator)
            cond = torch.tensor([labels[i] for i in idx]) if run.num_classes else None
            made = fn(guided(run.denoiser, cond, guidance, interval), z_t, times[start:], generator=generator, **opts)
            for i, code in zip(idx, run.space.decode(made)):
                out[i] = code
    report = {"n": len(codes), "sampler": sampler, "steps": steps, "guidance": guidance, **({"guidance_interval": list(interval)} if interval else {}),
              "last": [k_lo, k_hi], "seed": int(seed),
              "start_times": [float(times[len(times) - k]) for k in range(k_lo, k_hi + 1)], "seconds": time.perf_counter() - t0}
    return out, report


def tune_run_decoder(run: Run, *, minutes: float, share: float = 0.8, last: tuple[int, int] = (3, 5), sampler: str | None = None,
                     steps: int | None = None, guidance: float | None = None, seed: int = 0, atol: float = 1e-5) -> dict:
    """Tune ``run``'s first-stage decoder in place on the diffusion's reconstructions of the run's training elements
    (:func:`diffusion_reconstructions`, then :meth:`~diffkit.representations.Representation.tune_decoder`), and check
    that the codes of the training elements stayed as they were, within ``atol``. Returns the tuning's report."""
    from diffkit.representations import RepresentationError, encode_in_batches

    if not (float(minutes) > 0 and float(minutes) < float("inf")):
        raise ValueError(f"tuning the decoder: minutes must be a positive number, got {minutes!r}")
    if not 0.0 < float(share) <= 1.0:
        raise ValueError(f"tuning the decoder: share must lie in (0, 1] (the part of each batch taken from the diffusion's codes), got {share!r}")
    rep = run.representation
    if rep is None:
        raise RepresentationError("the run is one-stage (no [representation]); there is no decoder to tune")
    if not rep.decoder_tunes_on_codes:
        raise RepresentationError(f"representation {rep.name!r} has no learned decoder to tune on the diffusion's codes")
    run.check_decoder()
    elements, labels = split_items(run.split("train"))
    elements = [run.data_space.validate(e) for e in elements]
    probe = elements[: min(len(elements), 512)]
    before = torch.stack(encode_in_batches(rep, probe))
    codes, made = diffusion_reconstructions(run, elements, labels, sampler=sampler, steps=steps, guidance=guidance, last=last, seed=seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        report = rep.tune_decoder(elements, codes, labels, minutes=float(minutes), share=float(share), seed=int(seed))
    gap = float((before - torch.stack(encode_in_batches(rep, probe))).abs().max())
    if not gap <= atol:
        raise RepresentationError(f"representation {rep.name!r}: tune_decoder changed the codes (largest difference {gap:.3g} > {atol:g}); "
                                  f"it must train the decoder only")
    return {"reconstructions": made, **report, "minutes": float(minutes), "share": float(share)}


def tune_first_stage(run_dir: str | Path, out_dir: str | Path, *, minutes: float, share: float = 0.8, last: tuple[int, int] = (3, 5),
                     sampler: str | None = None, steps: int | None = None, guidance: float | None = None, seed: int = 0) -> dict:
    """``diffkit tune-first-stage``: a two-stage run whose decoder has gone on training, for ``minutes``, on the
    diffusion's own reconstructions of the training elements (:func:`tune_run_decoder`); the diffusion stage is kept.
    The run is written to ``out_dir`` (model weights unchanged; the representation's weights, and its report under
    ``tune``, updated; ``tuned_from`` naming the source; the recipe unchanged). Returns the tuning's report."""
    run_dir, out_dir, config = _first_stage_source(run_dir, out_dir, "tune_first_stage", "decoder to tune")
    run = load_run(run_dir)
    report = tune_run_decoder(run, minutes=minutes, share=share, last=last, sampler=sampler, steps=steps, guidance=guidance, seed=seed)
    keep = {k: v for k, v in config.items() if k not in ("format", "format_version", "checkpoint", "previous", "checksums", "representation")}
    described = {**config["representation"], "report": {**config["representation"].get("report", {}), "tune": report}}
    model = load_tensors(run_dir, "model.safetensors", config)
    rundir.write_checkpoint(out_dir, {**keep, "representation": described, "tuned_from": str(run_dir)},
                            {"model.safetensors": model, "representation.safetensors": run.representation.state_dict()})
    return report


# --- sampling ---------------------------------------------------------------------------------------
class NonFiniteSamples(RuntimeError):
    """A sampler produced NaN or infinite values; nothing is written."""


def positive_count(value, what: str) -> int:
    """``value`` as a positive whole number, or a one-line ValueError naming ``what``."""
    if isinstance(value, bool) or not isinstance(value, int) and not (isinstance(value, float) and value.is_integer()) or int(value) < 1:
        raise ValueError(f"{what} must be a positive whole number, got {value!r}")
    return int(value)


def reference_conditioning(run: Run, n: int, split: str | None = None) -> tuple[State, list | None, list]:
    """Conditioning for ``n`` samples, taken from the first ``n`` elements of the recipe's reference split
    (``[eval] reference``, default ``test``): the conditioning fields of their collated State, their labels
    (or None) and the elements. Sample ``i`` is then conditioned on reference element ``i``, which is what
    paired metrics (``mrstft`` with ``paired = true``) compare it with."""
    split = split or run.reference_split
    fields = conditioning_fields(run.space)
    items, labels = split_items(run.split(split))
    if n > len(items):
        raise RecipeError(f"space {run.space.name!r} is conditioned on {fields} from split {split!r}, one sample per element, but n={n} exceeds its {len(items)} elements; lower n")
    codes = items[:n] if run.representation is None else run.representation.encode(items[:n])  # a two-stage run conditions on codes
    state = run.space.collate(codes)
    return conditioning_state(state, fields), (None if labels is None else labels[:n]), items[:n]


def conditioning_state(state: State, fields: list[str]) -> State:
    """The conditioning fields of a collated State, with its node mask when it has one (variable-size
    elements: the reference element then fixes the size of the sample conditioned on it)."""
    return State({k: state[k] for k in list(fields) + [m for m in MASK_FIELDS if m in state]})


def generate(run: Run, n: int, *, sampler: str | None = None, steps: int | None = None, guidance: float | None = None, schedule: str | None = None,
             guidance_interval=None, seed: int = 0, batch_size: int | None = None, labels: torch.Tensor | None = None, device: str = "cpu", progress: bool = False, options: dict | None = None,
             conditioning: State | None = None, constraint: str | None = None, constraint_below: float | None = None) -> tuple[list, list | None, dict]:
    """Draw ``n`` samples; returns decoded elements, their class labels (or None) and timing figures.

    ``constraint``: a constraint of the run's space (:meth:`diffkit.spaces.Space.constraints`) that the sampler keeps
    at every level (default: the recipe's ``[sample] constraint``, normally none); ``""`` turns the recipe's off.
    ``constraint_below``: keep it only on the levels that start at ``t <= constraint_below`` (default: the recipe's
    ``[sample] constraint_below``; none: every level).
    ``guidance_interval``: ``(t_lo, t_hi)``, guide only at times ``t_lo < t <= t_hi`` (:func:`diffkit.denoiser.guided`;
    default: the recipe's ``[sample] guidance_interval``, where ``()`` overrides it with guidance at every level).

    Elements are data elements (:attr:`Run.data_space`): a two-stage run decodes its samples through its representation.

    A space with conditioning fields (``FieldSpec.diffused = False``) takes their values for sample ``i``
    from row ``i`` of ``conditioning``; without it, from the reference split (:func:`reference_conditioning`),
    whose labels are then returned as the samples' labels (and condition a class-conditional model)."""
    from diffkit.samplers import sample as run_sampler

    if run.representation is not None:
        run.check_decoder()  # before anything is drawn
    cfg = run.recipe["sample"]
    sampler = sampler or cfg["sampler"]
    if isinstance(sampler, str):  # checked before anything is drawn, so the error never shares a line with a progress bar
        check_component("samplers", sampler, "sampler")
    n = positive_count(n, "the number of samples (--n)")
    steps = positive_count(cfg["steps"] if steps is None else steps, "the number of sampling steps (--steps)")
    guidance = cfg.get("guidance") if guidance is None else guidance
    guidance_interval = check_guidance_interval(cfg.get("guidance_interval") if guidance_interval is None else guidance_interval)
    schedule = schedule or cfg.get("schedule")
    batch_size = positive_count(cfg.get("batch_size", 1000) if batch_size is None else batch_size, "the sampling batch size")
    constraint = cfg.get("constraint") if constraint is None else constraint
    constraint_below = cfg.get("constraint_below") if constraint_below is None else constraint_below
    opts = sampling_options(run, sampler, options, constraint, constraint_below)
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
        fn = guided(run.denoiser, cond, guidance, guidance_interval)
        counted = _CountingDenoiser(fn)
        template = run.space.template(b, run.stats, generator).to(device)
        if fields:  # a mask in the conditioning fixes each sample's size
            for k in fields + [m for m in MASK_FIELDS if m in conditioning]:
                template[k] = conditioning[k][start:start + b].to(device)
        out = run_sampler(counted, template, sampler=sampler, steps=steps, schedule=schedule, generator=generator, **opts)
        for name, value in out.items():
            if value.dtype.is_floating_point and not bool(torch.isfinite(value).all()):
                raise NonFiniteSamples(f"sampling gave NaN or infinite values in field {name!r} (samples {start} to {start + b - 1}); nothing was written. "
                                       f"The run's weights are unusable (a diverged training?) or the sampler is unstable here: resume from an earlier "
                                       f"checkpoint, retrain with a lower learning rate, or sample with more --steps")
        nfe, evaluations = counted.calls, evaluations + counted.calls
        items.extend(run.to_data(run.space.decode(out)))  # a two-stage run decodes its codes back to data
        bar.update(b)
    bar.close()
    seconds = time.perf_counter() - t0
    timing = {"sampler": sampler, "steps": steps, "nfe": nfe, "evaluations": evaluations, "seconds": seconds, "seconds_per_evaluation": seconds / max(evaluations, 1),
              "samples_per_second": n / max(seconds, 1e-9), "guidance": guidance,
              **({"guidance_interval": list(guidance_interval)} if guidance_interval else {}),
              **({"constraint": constraint, "constraint_below": constraint_below} if constraint else {})}
    return items, (None if labels is None else labels.tolist()), timing


class _CountingDenoiser:
    """Counts network evaluations (per batch) while passing calls through."""

    def __init__(self, fn):
        self.fn, self.calls, self.diffusion = fn, 0, fn.diffusion

    def __call__(self, state, t):
        self.calls += 1
        return self.fn(state, t)


def _progress(total: int, desc: str, enabled: bool):
    from diffkit.progress import progress_bar

    return progress_bar(total, desc, enabled, leave=False)


def evaluate(run: Run, items: list, labels: list | None, out_dir: Path | None = None, reference: str | None = None, metrics: list | None = None, reference_data=None) -> dict:
    """Score decoded samples with the recipe's metrics against its reference split."""
    names = metrics if metrics is not None else run.recipe.get("eval", {}).get("metrics", [])
    if not names:
        return {}
    ref_dataset = reference_data if reference_data is not None else run.split(reference or run.reference_split)
    ref_items, ref_labels = split_items(ref_dataset)
    train = run.split("train")  # novelty needs the training set
    # model-based metrics (bits per dimension) read the denoiser; their results are kept per run in "memo",
    # since they do not depend on the sampler that drew ``items``
    extras = {"denoiser": run.denoiser, "num_classes": run.num_classes, "memo": run.extra.setdefault("metric_memo", {})}
    space = run.data_space  # metrics compare data elements, also in a two-stage run
    # the reference elements are validated once per run and reference set, not once per sampler scored against them
    checked = run.extra.setdefault("validated_references", {})
    if id(ref_dataset) not in checked:
        checked.clear()
        checked[id(ref_dataset)] = (ref_dataset, [space.validate(x) for x in ref_items])
    ctx = EvalContext(generated=items, reference=checked[id(ref_dataset)][1], labels=labels, reference_labels=ref_labels,
                      train=train, space=space, out_dir=out_dir, extras=extras)
    options = run.recipe.get("eval", {}).get("options", {})
    return run_metrics(names, ctx, options)


def sample_run(run_dir: str | Path, *, n: int | None = None, sampler: str | None = None, steps: int | None = None, guidance: float | None = None,
               seed: int = 0, out: str | Path | None = None, device: str = "cpu", progress: bool = True, evaluate_metrics: bool = True, schedule: str | None = None,
               reference: str | Path | None = None, constraint: str | None = None, constraint_below: float | None = None, guidance_interval=None) -> dict:
    """``diffkit sample``: load a run (a directory, or a shipped model's name), draw samples, write them and (when the
    recipe names metrics) metrics.json. Samples go to ``RUN_DIR/samples``, or ``./NAME-samples`` for a shipped model.

    ``reference``: a file of elements to condition on (read by the space's ``read``, e.g. a SMILES file or an
    SDF for conformers), instead of the recipe's reference split; ``n`` samples are drawn for each element,
    elements that cannot be read are counted and skipped (summary under ``reference``), and no metrics are
    computed (the file carries no ground truth)."""
    from diffkit.pretrained import resolve, verify

    run_dir, shipped = resolve(run_dir)
    if shipped:
        verify(run_dir)
    if sampler is not None:
        check_component("samplers", sampler, "--sampler")
    run = load_run(run_dir, device=device)
    if guidance is not None and not run.num_classes:
        raise ValueError(f"guidance {guidance:g} needs a class-conditional model, and {run_dir} holds recipe {run.recipe['name']!r}, "
                         f"which is unconditional ([model] num_classes = 0); drop --guidance")
    if guidance_interval and not run.num_classes:
        raise ValueError(f"--guidance-interval needs a class-conditional model, and {run_dir} holds recipe {run.recipe['name']!r}, "
                         f"which is unconditional ([model] num_classes = 0); drop --guidance-interval")
    n = positive_count(run.recipe["sample"]["n"] if n is None else n, "the number of samples (--n)")
    if constraint:  # checked before sampling, which may take minutes
        sampler_constraint(run, sampler or run.recipe["sample"]["sampler"], constraint, constraint_below)
    if steps is not None:
        positive_count(steps, "the number of sampling steps (--steps)")
    out = Path(out) if out else Path(f"{shipped}-samples") if shipped else Path(run_dir) / "samples"  # checked before sampling, which may take minutes
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"--out {out} is an existing file; choose a folder path for the samples")
    if out.is_dir() and any(out.iterdir()):
        print(f"diffkit sample: {out} already holds samples; writing over them (pass --out DIR to keep both)", file=sys.stderr)
    conditioning = cond_labels = cond_items = None
    read_summary = None
    if reference is not None:
        conditioning, cond_labels, cond_items, read_summary = file_conditioning(run, reference, n)
        n, evaluate_metrics = len(cond_items), False
    elif conditioning_fields(run.space):  # conditioned on reference elements: written beside the samples, in reference/
        conditioning, cond_labels, cond_items = reference_conditioning(run, n)
    items, labels, timing = generate(run, n, sampler=sampler, steps=steps, guidance=guidance, seed=seed, device=device, progress=progress, schedule=schedule,
                                     conditioning=conditioning, labels=None if cond_labels is None else torch.tensor(cond_labels), constraint=constraint,
                                     constraint_below=constraint_below, guidance_interval=guidance_interval)
    out.mkdir(parents=True, exist_ok=True)
    names = run.recipe.get("eval", {}).get("metrics", [])
    reference_items = None
    if names and evaluate_metrics:
        reference_items, _ = split_items(run.split(run.reference_split))
    title = f"{run.recipe['name']}: {timing['sampler']}, {timing['nfe']} evaluations"
    paths = run.data_space.write(items, out, labels=labels, reference=None if reference_items is None else reference_items[:len(items)], title=title)
    if cond_items is not None and read_summary is None:  # a reference file's elements are the user's own input: not written again
        paths += run.data_space.write([run.data_space.validate(x) for x in cond_items], out / "reference", labels=cond_labels)
    summary = {"recipe": run.recipe["name"], "n": n, "seed": seed, **timing, "files": [str(p) for p in paths]}
    if shipped:
        summary["shipped_model"] = shipped
    if read_summary is not None:
        summary["reference"] = read_summary
    if names and evaluate_metrics:
        summary["metrics"] = evaluate(run, items, labels, out_dir=out)
        atomic_write_json(out / "metrics.json", summary)
    return summary


def sampling_options(run: Run, sampler, options: dict | None = None, constraint: str | None = None, constraint_below: float | None = None) -> dict:
    """The keyword options ``sampler`` runs with: the recipe's ``[sample.options.<sampler>]`` updated by ``options``,
    and, when ``constraint`` names one, the constraint it keeps (:func:`sampler_constraint`)."""
    opts = {**run.recipe["sample"].get("options", {}).get(sampler, {}), **(options or {})}
    if constraint:
        opts["constraint"] = sampler_constraint(run, sampler, constraint, constraint_below)
    return opts


def sampler_constraint(run: Run, sampler, name: str, below: float | None = None):
    """The run's space's constraint ``name`` for ``sampler`` (on the levels from ``t <= below`` when given), after
    checking that the sampler takes one (every sampler built on :func:`diffkit.samplers.drive` does): a clear error
    otherwise, before anything is drawn."""
    import inspect

    from diffkit.samplers import level_constraint, resolve

    fn, _ = resolve(sampler)
    if "constraint" not in inspect.signature(fn).parameters:
        raise ValueError(f"sampler {sampler!r} takes no constraint, so it cannot keep {name!r}; "
                         f"use a sampler built on diffkit.samplers.drive (every built-in one) or drop the constraint")
    return level_constraint(run.space.constraint(name), below)


def file_conditioning(run: Run, path: str | Path, per_element: int) -> tuple[State, list, list, dict]:
    """Conditioning for ``per_element`` samples of each element read from ``path`` by the space's ``read``:
    ``(conditioning, labels = element index of each sample, repeated elements, read summary)``. Elements that
    cannot be read are counted and skipped; none readable is a one-line error."""
    fields = conditioning_fields(run.space)
    path = Path(path)
    if not fields:
        raise ValueError(f"--reference gives elements to condition on, but space {run.space.name!r} has no conditioning fields; drop --reference")
    if not hasattr(run.space, "read"):
        raise ValueError(f"space {run.space.name!r} cannot read {path}; it has no read()")
    if not path.exists():
        raise FileNotFoundError(f"reference file {path} does not exist; pass a file the {run.space.name} space reads")
    elements, failures = run.space.read(path)
    summary = {"path": str(path), "read": len(elements), "skipped": len(failures), "failures": failures[:10]}
    if not elements:
        first = f"; first: {failures[0]['item']}: {failures[0]['reason']}" if failures else ""
        raise ValueError(f"no usable element in {path} ({len(failures)} skipped{first})")
    per_element = max(int(per_element), 1)
    items = [e for e in elements for _ in range(per_element)]
    labels = [i for i in range(len(elements)) for _ in range(per_element)]
    return conditioning_state(run.space.collate(items), fields), labels, items, summary


read_log = rundir.read_log  # the run's log.jsonl records (a line cut short by a kill is skipped)


