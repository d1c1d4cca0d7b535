"""The trainer: AdamW, EMA, gradient clipping, learning-rate warm-up, optional bf16 autocast and
torch.compile, one seeded generator for every random draw, a progress bar, a JSON-lines log,
atomic checkpoints, exact resumption on CPU, and data parallelism through ``torchrun``.

Random draws (batch indices, times, noise, label dropout, dequantisation) all come from one
``torch.Generator`` whose state is checkpointed, so a resumed run continues exactly where the
killed one stopped. Under ``torchrun`` every rank draws the same global batch and noise and
evaluates its own slice; gradients are averaged by DistributedDataParallel, so the update equals
one process's update on the global batch. Only rank 0 writes.
"""
from __future__ import annotations

import math
import os
import time
from contextlib import nullcontext
from pathlib import Path

import torch

from diffkit import __version__
from diffkit.cpu import resolve_precision
from diffkit.denoiser import Denoiser
from diffkit.losses import diffusion_loss
from diffkit.recipe import build_run, collate_dataset, load_dataset, load_recipe
from diffkit.recipe_schema import validate_components
from diffkit.rundir import (
    CheckpointError, append_log, check_shapes, clean_stale, load_tensors, nonfinite_tensors, prefixed, read_config, roll_back, truncate_log, unprefixed,
    write_checkpoint,
)


class TrainingDiverged(RuntimeError):
    """The loss or the gradient became NaN or infinite."""


def _dist_info() -> tuple[int, int]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    return rank, world


def _init_distributed(device: str) -> tuple[int, int]:
    rank, world = _dist_info()
    if world > 1 and not torch.distributed.is_initialized():
        backend = "nccl" if device.startswith("cuda") else "gloo"
        torch.distributed.init_process_group(backend=backend)
    return rank, world


LR_DECAYS = ("none", "cosine")
LR_DECAY_UNTIL = ("steps", "budget")


def learning_rate(step: int, cfg: dict, budget_used: float = 0.0) -> float:
    """Linear warm-up over ``warmup`` steps to ``lr``, then constant or (``lr_decay = "cosine"``) a half cosine

        lr(s) = lr * (1 + cos(pi * min(1, p))) / 2,   p = (s - warmup) / (steps - warmup)

    down to zero at ``steps``. With ``lr_decay_until = "budget"`` the cosine ends at whichever comes first, ``steps``
    or the end of the wall-clock budget ``max_minutes``: ``p = max((s - warmup) / (steps - warmup), budget_used)``,
    ``budget_used`` being the fraction of the budget spent so far, so a recipe sized for a faster machine still
    anneals to zero on a slower one instead of stopping at a high learning rate."""
    lr, warmup, total = float(cfg["lr"]), int(cfg["warmup"]), int(cfg["steps"])
    if warmup and step < warmup:
        return lr * (step + 1) / warmup
    if cfg.get("lr_decay") == "cosine":
        progress = (step - warmup) / max(1, total - warmup)
        if cfg.get("lr_decay_until") == "budget":
            progress = max(progress, float(budget_used))
        return lr * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))
    return lr


def check_schedule(cfg: dict) -> None:
    """Refuse a learning-rate schedule the trainer would otherwise read as something else (a misspelt decay)."""
    if cfg.get("lr_decay", "none") not in LR_DECAYS:
        raise ValueError(f"train.lr_decay must be one of {', '.join(LR_DECAYS)}, got {cfg.get('lr_decay')!r}; fix the recipe's [train]")
    until = cfg.get("lr_decay_until", "steps")
    if until not in LR_DECAY_UNTIL:
        raise ValueError(f"train.lr_decay_until must be one of {', '.join(LR_DECAY_UNTIL)}, got {until!r}; fix the recipe's [train]")
    if until == "budget" and not cfg.get("max_minutes"):
        raise ValueError("train.lr_decay_until = 'budget' needs a time budget: set train.max_minutes (or pass --minutes), or use 'steps'")


class Trainer:
    def __init__(self, recipe, out_dir: str | Path, *, steps: int | None = None, device: str = "cpu", seed: int | None = None,
                 resume: bool = False, progress: bool = True, dataset=None, max_minutes: float | None = None, init: str | None = None):
        self.recipe = load_recipe(recipe)
        validate_components(self.recipe)  # a misspelled sampler or metric fails now, not after training
        if init is not None:
            self.recipe["train"]["init"] = str(init)
        if seed is not None:
            self.recipe["seed"] = int(seed)
        if steps is not None:
            if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
                raise ValueError(f"steps must be a positive whole number of training steps, got {steps!r}; pass e.g. --steps 1000")
            self.recipe["train"]["steps"] = int(steps)
        if max_minutes is not None:
            if not float(max_minutes) > 0:
                raise ValueError(f"max_minutes must be a positive number of minutes, got {max_minutes}")
            self.recipe["train"]["max_minutes"] = float(max_minutes)
        self.cfg = self.recipe["train"]
        check_schedule(self.cfg)
        self.out_dir = Path(out_dir)
        self.device = device
        self.progress = progress
        self.rank, self.world = _init_distributed(device)
        if int(self.cfg["batch_size"]) % self.world:
            raise ValueError(f"batch_size {self.cfg['batch_size']} does not divide among {self.world} processes; choose a multiple of {self.world}")
        check_output_dir(self.out_dir, resume)
        if resume:
            read_config(self.out_dir)  # refuses foreign or corrupt runs before anything else happens

        seed = int(self.recipe["seed"])
        torch.manual_seed(seed)
        self.dataset = dataset if dataset is not None else load_dataset(self.recipe, "train")
        self.run = build_run(self.recipe, self.dataset)
        self.space = self.run.space
        self.backbone = self.run.denoiser.backbone.to(device)
        if self.cfg.get("init") and not resume:
            self._initialise_from(self.cfg["init"])
        self.data, self.labels = collate_dataset(self.space, self.run.encoded)  # a two-stage run trains on the encoded data
        self.data = self.data.to(device)
        if self.run.num_classes and self.labels is None:
            raise ValueError(f"recipe {self.recipe['name']!r} is class-conditional (num_classes={self.run.num_classes}) but dataset {self.recipe['data']['dataset']!r} has no labels")
        self.labels = None if not self.run.num_classes else self.labels.to(device)
        self.generator = torch.Generator().manual_seed(seed)
        params = [p for p in self.backbone.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(params, lr=float(self.cfg["lr"]), betas=tuple(self.cfg["betas"]), weight_decay=float(self.cfg["weight_decay"]))
        self.ema = {k: v.detach().clone() for k, v in self.backbone.state_dict().items()}
        self.step = 0
        model = self.backbone
        if self.world > 1:
            model = torch.nn.parallel.DistributedDataParallel(model)
        if self.cfg.get("compile"):
            model = torch.compile(model)
        self.train_denoiser = Denoiser(model, self.run.diffusion, self.run.denoiser.parameterization)
        self.checkpoint_step: int | None = None  # the step of the checkpoint config.json points at
        if resume:
            self._load_checkpoint()

    def _initialise_from(self, init: str) -> None:
        """Start from trained weights (fine-tuning): ``"pretrained"`` is the shipped model of this recipe's name,
        anything else a shipped model's name or a run directory. Every tensor must match in name and shape."""
        from diffkit.pretrained import locate, resolve
        from diffkit.runs import load_run

        path = locate(self.recipe["name"]) if init == "pretrained" else resolve(init)[0]
        source = load_run(path, device="cpu").denoiser.backbone.state_dict()
        own = self.backbone.state_dict()
        missing, extra = sorted(set(own) - set(source)), sorted(set(source) - set(own))
        if missing or extra:
            raise ValueError(f"--init {init}: its weights do not fit recipe {self.recipe['name']!r}'s backbone (missing {missing[:3]}, unexpected {extra[:3]}); "
                             f"initialise from a model of the same backbone and options")
        for key, value in source.items():
            if value.shape != own[key].shape:
                raise ValueError(f"--init {init}: tensor {key!r} has shape {tuple(value.shape)} there and {tuple(own[key].shape)} in recipe "
                                 f"{self.recipe['name']!r}; initialise from a model of the same backbone and options")
        self.backbone.load_state_dict(source)

    # --- checkpoints -----------------------------------------------------------------------------
    def _trainer_tensors(self) -> tuple[dict, list]:
        opt = self.optimizer.state_dict()
        tensors = {}
        for idx, state in opt["state"].items():
            for key, value in state.items():
                tensors[f"opt.{idx}.{key}"] = torch.as_tensor(value)
        tensors["rng.train"] = self.generator.get_state()
        tensors["rng.torch"] = torch.get_rng_state()
        return tensors, opt["param_groups"]

    def save_checkpoint(self) -> None:
        """Write the current step as one checkpoint unit (:func:`diffkit.rundir.write_checkpoint`). Weights
        holding a NaN or an infinity are never written: training stops with the last good checkpoint kept."""
        model = {**prefixed("model", self.backbone.state_dict()), **prefixed("ema", self.ema)}
        bad = nonfinite_tensors(model)
        if bad:
            self._diverged("the weights", None, at_step=self.step)
        if self.rank != 0:
            self.checkpoint_step = self.step
            return
        files = {"model.safetensors": model}
        extra = {}
        if self.run.representation is not None:  # the first stage travels with the run, so sampling needs no cache
            rep = self.run.representation
            report = {**self.run.extra.get("representation_report", {}), **({"decoder_pending": True} if self.run.decoder_pending else {})}
            extra["representation"] = {**rep.spec(), "data_space": {"name": rep.data_space.name, "config": rep.data_space.config()}, "report": report}
            files["representation.safetensors"] = rep.state_dict()
        tensors, groups = self._trainer_tensors()
        write_checkpoint(self.out_dir, {
            "diffkit_version": __version__, "torch_version": torch.__version__,
            "recipe": self.recipe, "space": self.run.space_spec(), "providers": self.run.providers(), "stats": self.run.stats, "step": self.step,
            "optimizer": {"param_groups": groups}, "world_size": self.world, **extra,
        }, {**files, "trainer.safetensors": tensors})
        self.checkpoint_step = self.step

    def _load_checkpoint(self) -> None:
        config = read_config(self.out_dir)
        trained = config["recipe"].get("name")
        if self.recipe["name"] != trained and trained not in self.recipe.get("aliases", []):  # a run of the recipe under an old name resumes
            raise CheckpointError(f"{self.out_dir} holds a run of recipe {trained!r}, not {self.recipe['name']!r}; resume with the same recipe or choose another --out")
        model = load_tensors(self.out_dir, "model.safetensors", config)
        trainer = load_tensors(self.out_dir, "trainer.safetensors", config)
        live = self.backbone.state_dict()
        for prefix in ("model", "ema"):
            check_shapes(live, unprefixed(prefix, model), source=f"{self.out_dir} ({prefix} weights)", recipe=self.recipe["name"], trained=str(trained))
        self.backbone.load_state_dict(unprefixed("model", model))
        self.ema = {k: v.to(self.device) for k, v in unprefixed("ema", model).items()}
        state: dict = {}
        for key, value in trainer.items():
            if key.startswith("opt."):
                _, idx, name = key.split(".", 2)
                state.setdefault(int(idx), {})[name] = value.to(self.device) if name != "step" else value
        self.optimizer.load_state_dict({"state": state, "param_groups": config["optimizer"]["param_groups"]})
        self.generator.set_state(trainer["rng.train"])
        torch.set_rng_state(trainer["rng.torch"])
        self.step = int(config["step"])
        self.checkpoint_step = self.step
        if self.rank == 0:
            clean_stale(self.out_dir)
            truncate_log(self.out_dir, self.step)  # steps trained after this checkpoint were lost with the process

    # --- the loop ---------------------------------------------------------------------------------
    @torch.no_grad()
    def _update_ema(self) -> None:
        decay = min(float(self.cfg["ema"]), (1 + self.step) / (10 + self.step))
        for k, v in self.backbone.state_dict().items():
            if v.dtype.is_floating_point:
                self.ema[k].mul_(decay).add_(v.detach(), alpha=1 - decay)
            else:
                self.ema[k].copy_(v)

    def _log(self, record: dict) -> None:
        if self.rank == 0:
            append_log(self.out_dir, record)

    def _diverged(self, what: str, rng_state: torch.Tensor | None, at_step: int | None = None) -> None:
        """Stop without writing: the checkpoint on disk is the last one whose weights were finite. When the
        non-finite loss or gradient was computed from the very weights of that checkpoint, they are not good
        either and the previous checkpoint (kept until a newer one is complete) becomes current again."""
        at_step = self.step + 1 if at_step is None else at_step
        if rng_state is not None:
            self.generator.set_state(rng_state)
        self.optimizer.zero_grad(set_to_none=True)
        kept = self.checkpoint_step
        if self.rank == 0 and what in ("the loss", "the gradient") and kept == self.step and kept is not None:
            restored = roll_back(self.out_dir)
            if restored is not None:
                kept = int(restored["step"])
        self._log({"step": self.step, "event": "diverged", "what": what, "kept_checkpoint": kept})
        raise TrainingDiverged(
            f"{what} became NaN or infinite at step {at_step}; stopped and kept the last good checkpoint (step {kept}) in {self.out_dir}. "
            f"Lower the learning rate, enable grad_clip, or resume with --resume after changing the recipe"
        )

    def fit(self) -> dict:
        """Train to ``steps`` or the time budget; a first-stage decoder fitted beside the diffusion is waited for
        before the last checkpoint, which then holds both stages (earlier checkpoints say theirs was pending)."""
        try:
            result = self._fit()
            if self.run.decoder_pending:
                self._log({"step": self.step, "event": "waiting for the first stage's decoder"})
                t0 = time.perf_counter()
                self.run.finish_first_stage()
                self._log({"step": self.step, "event": "first stage's decoder fitted", "waited_seconds": time.perf_counter() - t0})
                self.save_checkpoint()
            tune = (self.recipe.get("representation") or {}).get("tune")
            if tune and self.rank == 0 and "tune" not in self.run.extra.get("representation_report", {}):
                self._tune_first_stage(tune)
            return result
        finally:
            pending = self.run.extra.pop("decoder_fit", None)
            if pending is not None:  # training stopped with an error: the decoder's fit ends with it
                pending.stop()

    def _tune_first_stage(self, tune: dict) -> None:
        """``[representation] tune``: the decoder goes on training on the reconstructions that the just-written
        checkpoint's diffusion (its EMA weights, as sampling reads them) makes of the training data; the last
        checkpoint then holds the tuned decoder (the ones before it, the decoder as fitted)."""
        from diffkit.runs import load_run, tune_run_decoder

        self._log({"step": self.step, "event": "tuning the first stage's decoder on the diffusion's reconstructions", "minutes": float(tune["minutes"])})
        run = load_run(self.out_dir)
        report = tune_run_decoder(run, **tune)
        self.run.representation.load_state_dict(run.representation.state_dict())
        self.run.extra["representation_report"] = {**self.run.extra.get("representation_report", {}), "tune": report}
        self._log({"step": self.step, "event": "first stage's decoder tuned", "reconstruction_seconds": report["reconstructions"]["seconds"]})
        self.save_checkpoint()

    def _fit(self) -> dict:
        from diffkit.progress import progress_bar

        total, B = int(self.cfg["steps"]), int(self.cfg["batch_size"])
        local = B // self.world
        shard = slice(self.rank * local, (self.rank + 1) * local) if self.world > 1 else None
        N = self.data.batch_size
        precision = resolve_precision(self.cfg.get("precision", "fp32"), self.device)
        autocast = torch.autocast(self.device.split(":")[0], dtype=torch.bfloat16) if precision == "bf16" else nullcontext()
        if self.cfg.get("precision", "fp32") != "fp32":  # what "auto" became on this device, in the log
            self._log({"step": self.step, "event": "precision", "requested": self.cfg["precision"], "precision": precision})
        params = [p for p in self.backbone.parameters() if p.requires_grad]
        self.backbone.train()
        if self.step == 0:
            self.save_checkpoint()
        bar = progress_bar(total, f"train {self.recipe['name']}", self.progress and self.rank == 0, initial=self.step)
        t_last, step_last, t_start = time.perf_counter(), self.step, time.perf_counter()
        last = {}
        budget = float(self.cfg["max_minutes"]) * 60.0 if self.cfg.get("max_minutes") else math.inf
        while self.step < total:
            if time.perf_counter() - t_start >= budget:  # the wall-clock budget of this call, checked between steps
                self._log({"step": self.step, "event": "time budget", "minutes": budget / 60.0})
                break
            rng_state = self.generator.get_state()
            idx = torch.randint(N, (B,), generator=self.generator).to(self.data.device)
            x0 = self.space.train_transform(self.data.index(idx), self.generator)
            cond = None if self.labels is None else self.labels[idx]
            for group in self.optimizer.param_groups:
                group["lr"] = learning_rate(self.step, self.cfg, (time.perf_counter() - t_start) / budget)
            with autocast:
                loss, fields = diffusion_loss(
                    self.train_denoiser, x0, self.generator, weighting=self.cfg["weighting"], gamma=float(self.cfg["gamma"]), cond=cond,
                    p_uncond=float(self.cfg["p_uncond"]), field_weights=self.cfg["field_weights"], vlb_weight=float(self.cfg["vlb_weight"]), shard=shard,
                )
            if not torch.isfinite(loss):
                self._diverged("the loss", rng_state)
            loss.backward()
            clip = float(self.cfg["grad_clip"]) if self.cfg["grad_clip"] else math.inf
            grad_norm = torch.nn.utils.clip_grad_norm_(params, clip)
            if not torch.isfinite(grad_norm):
                self._diverged("the gradient", rng_state)
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
            self._update_ema()
            self.step += 1
            bar.update(1)
            last = {"loss": float(loss.detach()), **{f"loss_{k}": v for k, v in fields.items()}}
            if self.step % int(self.cfg["log_every"]) == 0 or self.step == total:
                now = time.perf_counter()
                rate = (self.step - step_last) * B / max(now - t_last, 1e-9)
                t_last, step_last = now, self.step
                self._log({"step": self.step, **last, "lr": self.optimizer.param_groups[0]["lr"], "grad_norm": float(grad_norm), "items_per_second": rate})
                bar.set_postfix(loss=f"{last['loss']:.4f}", refresh=False)
            if self.step % int(self.cfg["checkpoint_every"]) == 0 and self.step < total:
                self.save_checkpoint()
        bar.close()
        self.save_checkpoint()
        seconds = time.perf_counter() - t_start
        return {"recipe": self.recipe["name"], "steps": self.step, "out": str(self.out_dir), "seconds": seconds, "precision": precision, **last}


def check_output_dir(out_dir: Path, resume: bool) -> None:
    """Refuse an output path that is a file, or a folder holding things that are not a run: training never
    writes over files it did not create. A folder left by a run killed before its first checkpoint was
    committed (only ``checkpoints/``, ``log.jsonl`` and temporaries) counts as empty."""
    if out_dir.exists() and not out_dir.is_dir():
        raise FileExistsError(f"--out {out_dir} is an existing file; choose a folder path for the run")
    if resume or not out_dir.is_dir():
        return
    if (out_dir / "config.json").exists():
        raise FileExistsError(f"{out_dir} already holds a run; pass --resume to continue it or choose another --out")
    leftovers = {"checkpoints", "log.jsonl"}
    foreign = sorted(p.name for p in out_dir.iterdir() if p.name not in leftovers and not (p.name.startswith(".") and p.name.endswith(".tmp")))
    if foreign:
        raise FileExistsError(f"--out {out_dir} is a folder that holds files but no run ({', '.join(foreign[:3])}{', ...' if len(foreign) > 3 else ''}); "
                              f"choose a new or empty folder")
    clean_stale(out_dir)
    import shutil

    shutil.rmtree(out_dir / "checkpoints", ignore_errors=True)
    (out_dir / "log.jsonl").unlink(missing_ok=True)


def train(recipe, out_dir, *, steps=None, device="cpu", seed=None, resume=False, progress=True, dataset=None, max_minutes=None, init=None) -> dict:
    """``diffkit train``: build the recipe and train it into ``out_dir``; with ``max_minutes`` (or the
    recipe's ``train.max_minutes``) training stops at the first step boundary past that wall-clock
    budget, checkpointed (the learning-rate schedule still refers to ``steps``)."""
    return Trainer(recipe, out_dir, steps=steps, device=device, seed=seed, resume=resume, progress=progress, dataset=dataset,
                   max_minutes=max_minutes, init=init).fit()
