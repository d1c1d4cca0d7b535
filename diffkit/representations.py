"""Two-stage generation: a representation between the data and the diffusion.

A recipe may name a first stage in a ``[representation]`` table::

    [representation]
    name = "pca"                 # registered under the entry-point group diffkit.representations
    options = { dim = 2 }        # the factory's keyword arguments

The factory is ``factory(data_space, **options) -> Representation``. The diffusion then runs on the
representation's own :attr:`Representation.space` (a Space like any other: every process, sampler and
backbone applies to it unchanged), and samples are decoded back to data elements, written by the data space.

A representation keeps this contract (:class:`Representation` gives the defaults):

- ``space``: the Space its codes live in; ``data_space``: the Space of the data it encodes;
- ``encode(elements) -> codes`` and ``decode(codes) -> elements`` on lists (elements of ``data_space``,
  codes of ``space``), deterministic, in evaluation mode;
- ``fit(elements, labels) -> report`` (a JSON dict): a no-op for fixed transforms (log-mel), training for
  learned ones (an autoencoder); ``learned`` says which;
- ``config()``: the options that rebuild it, ``factory(data_space, **config())``;
- learned ones: ``state_dict()`` / ``load_state_dict(tensors)``, plain tensors saved with safetensors in
  the run directory (``representation.safetensors``) and in the cache.

A fitted first stage is cached under ``$DIFFKIT_CACHE/representations/<name>-<key>.safetensors`` with a JSON
file beside it, ``key`` a hash of everything the fit depends on (the representation's name and config, the
recipe's ``[data]`` table, the seed, the code version the representation states), as the metric classifiers
are cached: a second recipe over the same data and first stage trains only the diffusion.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import threading
from pathlib import Path
from typing import Any, Sequence

import torch

from diffkit.spaces.base import Space
from diffkit.spaces.euclidean import EuclideanSpace


class RepresentationError(ValueError):
    """A representation is misconfigured or its cached weights are unusable. The message names the fix."""


class Representation:
    """Base class of first stages (see the module docstring for the contract)."""

    name = "representation"
    learned = False
    version = 1  # bump when a change of code changes what fit() produces: cached fits are then ignored
    space: Space
    data_space: Space

    def encode(self, elements: Sequence[Any]) -> list:
        raise NotImplementedError

    def decode(self, codes: Sequence[Any]) -> list:
        raise NotImplementedError

    def fit(self, elements: Sequence[Any], labels: Sequence[int] | None = None) -> dict:
        return {}

    #: True where ``fit`` is ``fit_codes`` then ``fit_decoder`` and the second leaves ``encode`` unchanged (a fixed
    #: transform with a learned decoder: log-mel frames and a vocoder). The decoder may then be fitted in a process of
    #: its own while the diffusion trains on the codes (``[representation] fit = "beside"``, :class:`DecoderFit`).
    decoder_fits_apart = False

    def fit_codes(self, elements: Sequence[Any], labels: Sequence[int] | None = None) -> dict:
        """Fit what ``encode`` depends on and nothing more (representations with ``decoder_fits_apart``)."""
        raise NotImplementedError(f"representation {self.name!r} does not fit its decoder apart")

    def fit_decoder(self, elements: Sequence[Any], labels: Sequence[int] | None = None) -> dict:
        """Fit the decoder of the codes ``fit_codes`` fixed, leaving ``encode`` as it is (``decoder_fits_apart``)."""
        raise NotImplementedError(f"representation {self.name!r} does not fit its decoder apart")

    #: True where :meth:`tune_decoder` can go on training the decoder on codes the diffusion made (the decoder is
    #: learned and ``encode`` does not depend on it). ``diffkit tune-first-stage`` (:func:`diffkit.runs.tune_first_stage`)
    #: then fits the decoder to what it will be asked to decode at sampling time.
    decoder_tunes_on_codes = False

    def tune_decoder(self, elements: Sequence[Any], codes: Sequence[Any], labels: Sequence[int] | None = None, *,
                     minutes: float, share: float = 0.8, seed: int = 0) -> dict:
        """Go on training the decoder for ``minutes`` so that ``decode(codes[i]) ≈ elements[i]``, where ``codes[i]``
        is the diffusion's own reconstruction of ``encode(elements[i])`` (:func:`diffkit.runs.diffusion_reconstructions`);
        ``share`` of each batch comes from these codes and the rest from the elements' own codes, so the decoder keeps
        what it knew. ``encode`` must not change. Returns a JSON report."""
        raise RepresentationError(f"representation {self.name!r} has no learned decoder to tune on the diffusion's codes; "
                                  f"tune-first-stage applies to first stages with decoder_tunes_on_codes")

    def config(self) -> dict:
        return {}

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {}

    def load_state_dict(self, tensors: dict[str, torch.Tensor]) -> None:
        if tensors:
            raise RepresentationError(f"representation {self.name!r} is fixed and takes no weights, got {sorted(tensors)[:3]}")

    def spec(self) -> dict:
        """What a run's config records: ``{"name", "config", "space": {name, config}}``."""
        return {"name": self.name, "config": self.config(), "space": {"name": self.space.name, "config": self.space.config()}}


class EncodedDataset(torch.utils.data.Dataset):
    """A dataset whose elements were encoded by a representation; items keep their labels."""

    def __init__(self, codes: list, labels: list | None, space: Space):
        self.codes, self.labels, self.space = codes, labels, space

    def __len__(self) -> int:
        return len(self.codes)

    def __getitem__(self, i: int):
        return self.codes[i] if self.labels is None else (self.codes[i], self.labels[i])


# --- a small learned first stage in the core ---------------------------------------------------------
class PCARepresentation(Representation):
    """Registered representation ``pca`` for the ``euclidean`` space: whitened principal components.

    ``fit`` computes the mean ``m`` and the covariance's eigenpairs ``(lambda_k, u_k)`` of the training points;
    ``encode(x) = U^T (x - m) / sqrt(lambda)`` keeps the ``dim`` leading components (all by default),
    ``decode(z) = m + U (sqrt(lambda) z)``. With every component kept, ``decode(encode(x)) = x`` to rounding."""

    name = "pca"
    learned = True

    def __init__(self, space: Space, dim: int | None = None):
        if not isinstance(space, EuclideanSpace):
            raise RepresentationError(f"representation 'pca' encodes points of the euclidean space, not {space.name!r}; choose a representation for that space")
        self.data_space, self.dim = space, int(dim or space.dim)
        if not 1 <= self.dim <= space.dim:
            raise RepresentationError(f"representation 'pca': dim must be in 1..{space.dim}, got {dim}")
        self.space = EuclideanSpace(self.dim)
        self.mean = torch.zeros(space.dim)
        self.components = torch.eye(space.dim)[:, : self.dim]
        self.scale = torch.ones(self.dim)

    def fit(self, elements, labels=None) -> dict:
        x = torch.stack([self.data_space.validate(e) for e in elements]).double()
        self.mean = x.mean(0)
        eigvals, eigvecs = torch.linalg.eigh(torch.cov((x - self.mean).T).reshape(x.shape[1], x.shape[1]))
        order = eigvals.argsort(descending=True)[: self.dim]
        self.components, self.scale = eigvecs[:, order], eigvals[order].clamp_min(1e-12).sqrt()
        self.mean, self.components, self.scale = self.mean.float(), self.components.float(), self.scale.float()
        return {"explained_variance": float(eigvals[order].sum() / eigvals.sum())}

    def encode(self, elements) -> list:
        x = torch.stack([self.data_space.validate(e) for e in elements])
        return list(((x - self.mean) @ self.components) / self.scale)

    def decode(self, codes) -> list:
        z = torch.stack([self.space.validate(c) for c in codes])
        return list(self.mean + (z * self.scale) @ self.components.T)

    def config(self) -> dict:
        return {"dim": self.dim}

    def state_dict(self) -> dict:
        return {"mean": self.mean, "components": self.components, "scale": self.scale}

    def load_state_dict(self, tensors) -> None:
        missing = {"mean", "components", "scale"} - set(tensors)
        if missing:
            raise RepresentationError(f"representation 'pca': weights lack {sorted(missing)}; the file is not this representation's")
        self.mean, self.components, self.scale = (tensors[k].float() for k in ("mean", "components", "scale"))


# --- building, fitting, caching ------------------------------------------------------------------------
def build_representation(spec: dict, data_space: Space) -> Representation:
    """The representation a recipe's ``[representation]`` table (or a run's recorded spec) names, over ``data_space``."""
    from diffkit.registry import RegistryError, load

    if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
        raise RepresentationError(f"[representation] must name one: name = \"...\" (see diffkit plugins), got {spec!r}")
    unknown = set(spec) - {"name", "options", "config", "space", "cache", "fit", "tune"}
    if unknown:
        raise RepresentationError(f"[representation] has unknown key(s) {sorted(unknown)}; it takes name, options, cache, fit and tune")
    try:
        factory = load("representations", spec["name"])
    except RegistryError as exc:
        raise RepresentationError(str(exc)) from None
    options = spec.get("config", spec.get("options", {})) or {}
    try:
        rep = factory(data_space, **options)
    except TypeError as exc:
        raise RepresentationError(f"[representation] options {options} do not fit representation {spec['name']!r} ({exc}); see its docstring") from None
    if not isinstance(getattr(rep, "space", None), Space):
        raise RepresentationError(f"representation {spec['name']!r} has no .space (a diffkit Space); a representation must say what its codes are")
    return rep


def cache_dir() -> Path:
    """``$DIFFKIT_CACHE/representations`` (``DIFFKIT_CACHE`` defaults to ``~/.cache/diffkit``)."""
    return Path(os.environ.get("DIFFKIT_CACHE") or Path.home() / ".cache" / "diffkit").expanduser() / "representations"


def fit_key(rep: Representation, data: dict, seed: int) -> str:
    """A hash of everything a fit depends on: the representation (name, config, version) and the data table."""
    described = {"name": rep.name, "config": rep.config(), "version": getattr(rep, "version", 1), "data": data, "seed": int(seed)}
    return hashlib.sha256(json.dumps(described, sort_keys=True, default=str).encode()).hexdigest()[:16]


_LOCK = threading.Lock()


FIT_MODES = ("before", "beside")


def fit_mode(spec: dict, rep: Representation) -> str:
    """The recipe's ``[representation] fit``: ``before`` (default; the whole first stage is fitted before the diffusion
    trains) or ``beside`` (the codes first, then the decoder in a process of its own while the diffusion trains)."""
    mode = spec.get("fit", "before")
    if mode not in FIT_MODES:
        raise RepresentationError(f"[representation] fit must be one of {', '.join(FIT_MODES)}, got {mode!r}")
    if mode == "beside" and not (rep.learned and rep.decoder_fits_apart):
        raise RepresentationError(f"[representation] fit = \"beside\" needs a learned first stage whose decoder fits apart from its codes; "
                                  f"representation {rep.name!r} does not, so remove the line")
    return mode


TUNE_KEYS = ("minutes", "share", "last", "sampler", "steps", "guidance", "seed")


def tune_options(spec: dict, rep: Representation) -> dict | None:
    """The recipe's ``[representation] tune`` table, checked: after the diffusion has trained, its decoder goes on
    training for ``minutes`` on the diffusion's own reconstructions (:func:`diffkit.runs.tune_first_stage`; keys
    ``minutes`` (required), ``share``, ``last``, ``sampler``, ``steps``, ``guidance``, ``seed``). None when absent."""
    tune = spec.get("tune")
    if tune is None:
        return None
    if not isinstance(tune, dict) or "minutes" not in tune:
        raise RepresentationError(f"[representation] tune must be a table with at least minutes, e.g. tune = {{ minutes = 5 }}, got {tune!r}")
    unknown = set(tune) - set(TUNE_KEYS)
    if unknown:
        raise RepresentationError(f"[representation] tune has unknown key(s) {sorted(unknown)}; it takes {', '.join(TUNE_KEYS)}")
    if not (rep.learned and rep.decoder_tunes_on_codes):
        raise RepresentationError(f"[representation] tune needs a first stage whose learned decoder can be tuned on the diffusion's codes; "
                                  f"representation {rep.name!r} cannot, so remove the table")
    number = lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)  # noqa: E731
    whole = lambda v: isinstance(v, int) and not isinstance(v, bool)  # noqa: E731
    last = tune.get("last", [3, 5])
    last_ok = isinstance(last, (list, tuple)) and len(last) == 2 and all(whole(k) for k in last) and 1 <= last[0] <= last[1]
    problems = [what for what, bad in [
        ("minutes must be a number > 0", not (number(tune["minutes"]) and tune["minutes"] > 0)),
        ("share must be a number in (0, 1]", "share" in tune and not (number(tune["share"]) and 0 < tune["share"] <= 1)),
        ("last must be two whole numbers 1 <= K_LO <= K_HI, e.g. [3, 5]", not last_ok),
        ("steps must be a whole number >= last's K_HI", "steps" in tune and last_ok and not (whole(tune["steps"]) and tune["steps"] >= last[1])),
    ] if bad]
    if problems:
        raise RepresentationError(f"[representation] tune: {'; '.join(problems)} (got {tune})")
    return dict(tune)


def _cached_fit(rep: Representation, key: str) -> tuple[Path, Path]:
    weights = cache_dir() / f"{rep.name}-{key}.safetensors"
    return weights, weights.with_suffix(".json")


def _load_cached(rep: Representation, key: str) -> dict | None:
    """The cached fit's report with its weights loaded into ``rep``, or None where there is none."""
    from safetensors.torch import load_file

    weights, meta = _cached_fit(rep, key)
    if not (weights.exists() and meta.exists()):
        return None
    try:
        rep.load_state_dict(load_file(str(weights)))
        return {**json.loads(meta.read_text())["report"], "key": key, "cached": True}
    except Exception as exc:  # noqa: BLE001 - re-raised naming the file to delete
        raise RepresentationError(f"cached representation {weights} is unreadable ({type(exc).__name__}: {exc}); delete {weights} and {meta} to refit it") from None


def _plain_tensors(rep: Representation) -> dict[str, torch.Tensor]:
    """``rep``'s weights as contiguous CPU tensors, as safetensors writes them."""
    return {k: v.detach().contiguous().cpu() for k, v in rep.state_dict().items()}


def _store_cached(rep: Representation, key: str, report: dict, data: dict, seed: int) -> None:
    from safetensors.torch import save_file

    weights, meta = _cached_fit(rep, key)
    weights.parent.mkdir(parents=True, exist_ok=True)
    tag = f".{os.getpid()}-{threading.get_ident()}.tmp"
    tmp_w, tmp_m = weights.with_name(weights.name + tag), meta.with_name(meta.name + tag)
    save_file(_plain_tensors(rep), str(tmp_w), metadata={"key": key})
    tmp_m.write_text(json.dumps({"key": key, "representation": rep.name, "config": rep.config(), "data": data, "seed": seed, "report": report},
                                indent=2, sort_keys=True, default=str))
    os.replace(tmp_w, weights)  # weights first: a JSON file present means its weights are whole
    os.replace(tmp_m, meta)


def fit_representation(rep: Representation, elements: list, labels: list | None, *, data: dict, seed: int = 0, cache: bool = True,
                       beside: bool = False) -> dict | tuple[dict, "DecoderFit | None"]:
    """Fit ``rep`` on training elements, or load the cached fit of the same configuration; returns its report
    (``{"key", "cached", ...fit report}``). Fixed representations are fitted every time (it costs nothing).

    With ``beside`` (a representation with ``decoder_fits_apart``) only the codes are fitted here and the decoder is
    fitted by a :class:`DecoderFit` started in a process of its own; returns ``(report, decoder_fit)``, the second None
    where the cache already held the whole fit. ``decoder_fit.wait()`` then finishes ``rep`` and the cache."""
    if not rep.learned:
        report = {**(rep.fit(elements, labels) or {}), "cached": False}
        return (report, None) if beside else report
    key = fit_key(rep, data, seed)
    with _LOCK:
        report = _load_cached(rep, key) if cache else None
        if report is not None:
            return (report, None) if beside else report
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(seed))
            if beside:
                codes_report = dict(rep.fit_codes(elements, labels) or {})
                pending = DecoderFit(rep, elements, labels, key=key, data=data, seed=int(seed), cache=cache, codes_report=codes_report)
                return {**codes_report, "decoder": "fitting beside the diffusion", "key": key, "cached": False}, pending
            report = dict(rep.fit(elements, labels) or {})
        if cache:
            _store_cached(rep, key, report, data, seed)
    return {**report, "key": key, "cached": False}


def _fit_decoder_job(rep: Representation, elements: list, labels: list | None, seed: int, threads: int, path: str) -> None:
    """The body of a :class:`DecoderFit`'s process: fit the decoder, write its weights and report to ``path``."""
    from safetensors.torch import save_file

    from diffkit.cpu import flush_denormals

    flush_denormals()
    torch.set_num_threads(threads)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        report = dict(rep.fit_decoder(elements, labels) or {})
    tmp = path + ".tmp"
    save_file(_plain_tensors(rep), tmp, metadata={"report": json.dumps(report, default=str)})
    os.replace(tmp, path)


class DecoderFit:
    """A first stage's decoder fitted in a process of its own while the diffusion trains on the codes.

    A log-mel representation's codes need only band statistics; its vocoder is a network of its own that the diffusion
    never sees. Fitted one after the other, the two stages share the machine's budget in turn; fitted side by side,
    each runs for the whole of it (``threads`` torch threads for the decoder, the rest for the diffusion). The process
    receives the representation with its codes fitted, runs ``rep.fit_decoder`` under the recipe's seed and writes the
    weights to a temporary file; :meth:`wait` loads them into ``rep``, stores the whole fit in the cache and returns the
    report. A failed fit raises there, naming what to do; the process dies with its parent."""

    def __init__(self, rep: Representation, elements: list, labels: list | None, *, key: str, data: dict, seed: int, cache: bool,
                 codes_report: dict, threads: int = 1):
        import multiprocessing
        import tempfile

        self.rep, self.key, self.data, self.seed, self.cache, self.codes_report = rep, key, data, seed, cache, codes_report
        self.folder = Path(tempfile.mkdtemp(prefix="diffkit-decoder-"))
        self.path = self.folder / "decoder.safetensors"
        self.parent_threads = torch.get_num_threads()
        self.threads = int(threads)
        context = multiprocessing.get_context("spawn")  # a fork would copy torch's thread pool in whatever state it is
        self.process = context.Process(target=_fit_decoder_job, args=(rep, elements, labels, seed, self.threads, str(self.path)), daemon=True)
        self.process.start()
        torch.set_num_threads(max(1, self.parent_threads - self.threads))  # the diffusion takes the other threads

    def wait(self) -> dict:
        """Wait for the decoder's fit; load it into the representation and return the first stage's whole report."""
        import shutil

        from safetensors import safe_open

        self.process.join()
        torch.set_num_threads(self.parent_threads)
        try:
            if self.process.exitcode != 0 or not self.path.exists():
                raise RepresentationError(f"the first stage's decoder, fitted beside the diffusion, failed (exit code {self.process.exitcode}; its "
                                          f"error is printed above); the diffusion's checkpoints are kept: fix the cause and run "
                                          f"'diffkit refit-first-stage' on the run, or set [representation] fit = \"before\"")
            with safe_open(str(self.path), "pt") as f:
                tensors = {k: f.get_tensor(k) for k in f.keys()}
                decoder_report = json.loads((f.metadata() or {}).get("report", "{}"))
            self.rep.load_state_dict(tensors)
        finally:
            shutil.rmtree(self.folder, ignore_errors=True)
        report = {**self.codes_report, **decoder_report}
        if self.cache:
            with _LOCK:
                _store_cached(self.rep, self.key, report, self.data, self.seed)
        return {**report, "fit": "beside", "key": self.key, "cached": False}

    def stop(self) -> None:
        """End the fit unfinished (training stopped with an error)."""
        import shutil

        if self.process.is_alive():
            self.process.terminate()
            self.process.join()
        torch.set_num_threads(self.parent_threads)
        shutil.rmtree(self.folder, ignore_errors=True)


def encode_in_batches(rep: Representation, elements: list, batch_size: int = 512) -> list:
    out = []
    for start in range(0, len(elements), batch_size):
        out.extend(rep.encode(elements[start:start + batch_size]))
    return out


def decode_in_batches(rep: Representation, codes: list, batch_size: int = 512) -> list:
    out = []
    for start in range(0, len(codes), batch_size):
        out.extend(rep.decode(codes[start:start + batch_size]))
    return out


def pca(space: Space, **options) -> PCARepresentation:
    """Registered factory ``pca`` (see :class:`PCARepresentation`)."""
    return PCARepresentation(space, **options)


__all__ = ["DecoderFit", "EncodedDataset", "FIT_MODES", "TUNE_KEYS", "PCARepresentation", "Representation", "RepresentationError", "build_representation",
           "cache_dir", "decode_in_batches", "encode_in_batches", "fit_key", "fit_mode", "fit_representation", "pca", "tune_options"]
