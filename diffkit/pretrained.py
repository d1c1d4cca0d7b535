"""Trained models shipped inside distributions, and the one Python entry point to any trained model.

A **shipped model** is a run directory cut down to what sampling needs: ``config.json`` (recipe, space,
statistics, checksums), ``model.safetensors`` (the EMA weights only) and ``card.json``, which records how
it was made (recipe, seed, steps, the command), the SHA-256 and size of each file, and the figures
measured when it was made (sampler, steps, number of samples, seed) with the tolerance within which a
fresh draw reproduces them. Distributions register shipped models through the ``diffkit.pretrained``
entry-point group; the entry point is a function returning the model's directory (see :func:`packaged`).

``diffkit.load(target)`` takes a shipped model's name or a run directory and returns a :class:`Model`
whose :meth:`Model.sample` gives data in the modality's natural Python form (``Space.natural``).
"""
from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

CARD = "card.json"
SHIPPED_FILES = ("config.json", "model.safetensors")
SAMPLING_EXTRAS = ("representation.safetensors",)  # shipped too when the run has them


class PretrainedError(LookupError):
    """A shipped model is unknown, ambiguous with a path, or does not match its card."""


def packaged(package: str, name: str) -> Path:
    """The directory ``name`` shipped inside ``package`` (what a ``diffkit.pretrained`` entry point returns)."""
    return Path(str(resources.files(package).joinpath(name)))


def names() -> list[str]:
    from diffkit import registry

    return registry.names("pretrained")


def locate(name: str) -> Path:
    """The directory of the shipped model ``name``; unknown names get the list of shipped ones."""
    from diffkit import registry

    if name not in names():
        shipped = ", ".join(names()) or "none installed"
        raise PretrainedError(f"no shipped model named {name!r} (shipped: {shipped}); 'diffkit pretrained' lists them, or pass a run directory")
    path = Path(registry.load("pretrained", name)())
    if not (path / CARD).exists():
        raise PretrainedError(f"shipped model {name!r} has no {CARD} at {path}; its distribution is incomplete, reinstall it")
    return path


def card(name_or_dir: str | Path) -> dict:
    path = Path(name_or_dir) if Path(name_or_dir).is_dir() else locate(str(name_or_dir))
    return json.loads((path / CARD).read_text())


def verify(path: Path) -> dict:
    """Check every file of a shipped model against the SHA-256 in its card; returns the card."""
    from diffkit.rundir import sha256

    info = json.loads((Path(path) / CARD).read_text())
    for fname, expected in info["sha256"].items():
        if sha256(Path(path) / fname) != expected:
            raise PretrainedError(f"{path / fname} does not match the SHA-256 in its card; the installed model is corrupt, reinstall its distribution")
    return info


def resolve(target: str | Path) -> tuple[Path, str | None]:
    """``(directory, shipped name or None)`` for a run directory or a shipped model's name.

    A name that is also an existing path is ambiguous and refused: ``./NAME`` is always the path,
    ``pretrained:NAME`` always the shipped model."""
    text = str(target)
    if text.startswith("pretrained:"):
        name = text.split(":", 1)[1]
        return locate(name), name
    looks_like_path = "/" in text or text.startswith(".") or Path(text).exists()
    shipped = text in names()
    if shipped and Path(text).exists():
        raise PretrainedError(f"{text!r} is both a path here and a shipped model; write ./{text} for the path or pretrained:{text} for the shipped model")
    if shipped and not looks_like_path:
        return locate(text), text
    if not Path(text).exists():
        raise PretrainedError(f"{text} is neither a run directory nor a shipped model (shipped: {', '.join(names()) or 'none installed'}); "
                              f"pass the directory written by 'diffkit train' or a name from 'diffkit pretrained'")
    return Path(text), None


def export(run_dir: str | Path, dest: str | Path, *, figures: dict, made_by: str, tolerance: dict, weights: str = "ema") -> dict:
    """Cut a trained run down to a shipped model in ``dest``: the ``weights`` (EMA by default) under the prefix
    sampling reads, its config with checksums for that file alone, and the card. Returns the card."""
    from diffkit.rundir import atomic_save_tensors, atomic_write_json, load_tensors, prefixed, read_config, sha256, unprefixed

    run_dir, dest = Path(run_dir), Path(dest)
    config = read_config(run_dir)
    tensors = unprefixed(weights, load_tensors(run_dir, "model.safetensors", config))
    if not tensors:
        raise PretrainedError(f"{run_dir}/model.safetensors holds no {weights!r} weights")
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    digest = atomic_save_tensors(dest / "model.safetensors", prefixed("ema", tensors), {"format": config["format"]})
    shipped = {k: v for k, v in config.items() if k not in ("optimizer", "checksums", "world_size", "checkpoint", "previous")}  # a flat run: files beside config.json
    shipped["checksums"] = {"model.safetensors": digest}
    for name in SAMPLING_EXTRAS:  # what sampling reads beside the weights (a two-stage model's first stage)
        if name in config.get("checksums", {}):
            shipped["checksums"][name] = atomic_save_tensors(dest / name, load_tensors(run_dir, name, config), {"format": config["format"]})
    # `diffkit sample NAME` samples, by default, as the card's figures were measured: its sampler, steps, guidance and count
    measured = {key: figures[key] for key in ("sampler", "steps", "guidance", "n") if figures.get(key) is not None}
    if measured:
        shipped["recipe"] = {**shipped["recipe"], "sample": {**shipped["recipe"].get("sample", {}), **measured}}
    atomic_write_json(dest / "config.json", shipped)
    files = [f for f in (*SHIPPED_FILES, *SAMPLING_EXTRAS) if (dest / f).exists()]
    info = {
        "name": dest.name, "recipe": config["recipe"]["name"], "seed": config["recipe"].get("seed", 0), "steps": config.get("step"),
        "made_by": made_by, "figures": figures, "tolerance": tolerance,
        "sha256": {f: sha256(dest / f) for f in files}, "bytes": {f: (dest / f).stat().st_size for f in files},
    }
    atomic_write_json(dest / CARD, info)
    return info


@dataclass
class Model:
    """A trained model ready to sample: ``run`` (the built recipe with its weights) and, for a shipped one, its card."""

    run: object
    source: Path
    card: dict | None = None
    device: str = "cpu"

    @property
    def space(self):
        """The data's space (for a two-stage model, the space the representation decodes to, not the codes')."""
        return self.run.data_space

    @property
    def num_classes(self) -> int:
        return self.run.num_classes

    def sample(self, n: int, *, sampler: str | None = None, steps: int | None = None, guidance: float | None = None, seed: int = 0,
               labels=None, schedule=None, progress: bool = False, guidance_interval=None) -> list:
        """``n`` samples in the modality's natural Python form (``Space.natural``): image tensors in [0, 1],
        ``(waveform, sample_rate)`` pairs, RDKit molecules. ``labels``: class labels for a class-conditional
        model (default ``0, 1, ..., K-1, 0, ...``). ``guidance_interval = (t_lo, t_hi)``: guide only at those times
        (default: the recipe's)."""
        import torch

        from diffkit.runs import generate

        if n < 1:
            raise ValueError(f"sample needs n >= 1, got {n}")
        if labels is not None:
            labels = torch.as_tensor(labels, dtype=torch.long)
            if labels.numel() != n:
                raise ValueError(f"labels has {labels.numel()} entries for n={n} samples; give one label per sample")
        items, _, _ = generate(self.run, n, sampler=sampler, steps=steps, guidance=guidance, seed=seed, labels=labels, schedule=schedule,
                               device=self.device, progress=progress, guidance_interval=guidance_interval)
        return self.space.natural(items)

    def __repr__(self) -> str:
        name = self.card["name"] if self.card else str(self.source)
        return f"Model({name!r}, recipe={self.run.recipe['name']!r}, space={self.space.name!r})"


def load_model(target: str | Path, device: str = "cpu") -> Model:
    """A :class:`Model` from a shipped model's name or a run directory (weights checked on load)."""
    from diffkit.runs import load_run

    path, shipped = resolve(target)
    info = verify(path) if shipped else None
    return Model(load_run(path, device=device), path, info, device)
