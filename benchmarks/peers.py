"""diffkit's samplers side by side with diffusers' schedulers and k-diffusion's samplers on the exact-score oracle.

    python benchmarks/peers.py [--out benchmarks/results/peers-DATE.json] [--quick] [--seeds 3] [--n 10000]

Peers are optional (``pip install -r benchmarks/requirements-peers.txt``, then k-diffusion with
``--no-deps``; see benchmarks/README.md). A peer that is not installed is skipped with a note.

Protocol (one run, everything side by side):
* Forward process: DDPM's linear betas 1e-4..0.02 over 1000 steps, ``alpha_k^2 = prod_{j<=k}(1 - beta_j)``.
  diffusers gets it as its default ``beta_schedule="linear"`` table; diffkit gets a ``GaussianProcess``
  whose log-SNR is that table interpolated linearly in the index (the same interpolation diffusers uses
  for fractional timesteps, in ``log sigma``); k-diffusion gets ``sigma = sqrt(1 - alpha^2)/alpha`` in
  [sigma_0, sigma_999] and the variance-exploding view ``x_ve = x_vp / alpha``.
* Model: the exact denoiser of the Gaussian mixture, ``E[x0 | x_t = x]`` in closed form
  (:class:`diffkit.oracle.GaussianMixture`), evaluated in float64 at the noise level each library
  conditions its model on: diffkit's ``t``, diffusers' (possibly fractional) timestep, k-diffusion's sigma.
  diffusers receives ``eps``, k-diffusion ``D(x, sigma)``, diffkit an eps backbone inside its Denoiser.
* Cost: NFE counted by counting model calls; every row states the NFE it used (Heun and DPM-2 spend 2 per
  step and end with an Euler step, so a budget of 10 buys 9).
* Same sample size, same standard-normal draw scaled to each library's prior, same target draws.
* Quality: sliced Wasserstein-2 (diffkit.metrics.sliced_wasserstein, 256 directions) to fresh target draws,
  beside the floor: SW2 between two independent target draws of the same size (what a perfect sampler scores).
  Mean over ``--seeds`` seeds (each seed: new prior draw, new target draws). Beside it the coupled error
  (diffkit.oracle_mixtures.coupled_error): each sample's RMS distance to the converged flow from the same prior
  draw, which separates samplers where SW2 sits at its floor.
* Budgets: NFE 5, 10, 20, 50 by default (5 is a first-class budget); mixtures: the 2-D ring, a 16-D mixture and
  the hard cases of diffkit.oracle_mixtures (narrow components, anisotropic 32-D components, very unequal weights).
* Flow matching: diffkit on the linear path (LinearFlow, exact velocity, every ODE sampler plus flow-euler and
  flow-midpoint) and diffusers' FlowMatchEulerDiscreteScheduler fed the same exact velocity, beside the VP rows.
* Overhead: the same samplers driven by a free model (it returns a precomputed tensor), interleaved
  repeats, medians; the free model's own per-call time is measured alone and subtracted.

Writes the JSON report, a PNG (SW2 against NFE, one panel per mixture) and a markdown report beside it.
"""
from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import inspect
import json
import math
import platform
import statistics
import sys
import time
import types
from pathlib import Path

import torch

from diffkit.denoiser import Denoiser, guided
from diffkit.metrics import sliced_wasserstein
from diffkit.oracle import random_mixture, ring
from diffkit.oracle_mixtures import HARD_MIXTURES, AnalyticVelocityBackbone, coupled_error, linear_path_velocity
from diffkit.processes import Diffusion, LinearFlow
from diffkit.processes.gaussian import GaussianProcess
from diffkit.samplers import SAMPLERS, make_times, steps_for_nfe
from diffkit.state import State

DATE = time.strftime("%Y-%m-%d")

# --- the forward process: DDPM's linear betas over 1000 steps ---------------------------------
T_TRAIN = 1000
BETAS = torch.linspace(1e-4, 0.02, T_TRAIN, dtype=torch.float64)
ALPHA2 = torch.cumprod(1.0 - BETAS, 0)  # alpha_k^2, k = 0..999
LAMBDA = torch.log(ALPHA2) - torch.log1p(-ALPHA2)  # log-SNR, decreasing in k
INDEX = torch.arange(T_TRAIN, dtype=torch.float64)
SIGMA_MIN, SIGMA_MAX = float(torch.exp(-0.5 * LAMBDA[0])), float(torch.exp(-0.5 * LAMBDA[-1]))  # VE sigmas at k = 0 and 999


def _interp(x: torch.Tensor, xp: torch.Tensor, fp: torch.Tensor) -> torch.Tensor:
    """Piecewise-linear interpolation (``xp`` increasing), clamped at the ends."""
    x = torch.as_tensor(x, dtype=torch.float64)
    x = x.clamp(float(xp[0]), float(xp[-1]))
    i = torch.searchsorted(xp, x.reshape(-1).contiguous()).clamp(1, len(xp) - 1).reshape(x.shape)
    w = (x - xp[i - 1]) / (xp[i] - xp[i - 1])
    return fp[i - 1] + w * (fp[i] - fp[i - 1])


def lambda_at_index(k) -> torch.Tensor:
    """log-SNR at a (fractional) DDPM index: linear in ``k`` between the table's entries."""
    return _interp(k, INDEX, LAMBDA)


class DDPMLinear(GaussianProcess):
    """DDPM's discrete linear-beta process seen in continuous time: ``t = k / 999`` and
    ``lambda(t)`` interpolates the table ``log(alpha_k^2 / (1 - alpha_k^2))`` linearly in ``k``."""

    name = "ddpm-linear-1000"
    t_min, t_max = 0.0, 1.0

    def _lam(self, t):
        return lambda_at_index(torch.as_tensor(t, dtype=torch.float64) * (T_TRAIN - 1))

    def log_alpha(self, t):
        return -0.5 * torch.nn.functional.softplus(-self._lam(t))

    def log_sigma(self, t):
        return -0.5 * torch.nn.functional.softplus(self._lam(t))

    def log_snr(self, t):
        return self._lam(t)

    def t_from_log_snr(self, log_snr):
        return _interp(log_snr, LAMBDA.flip(0), INDEX.flip(0)) / (T_TRAIN - 1)


# --- one exact model, seen through each library's interface -------------------------------------
class Counter:
    def __init__(self):
        self.calls = 0


def _vp_from_lambda(lam: float) -> tuple[float, float]:
    return math.sqrt(1.0 / (1.0 + math.exp(-lam))), math.sqrt(1.0 / (1.0 + math.exp(lam)))


def diffusers_model(mix, counter):
    """``eps(x, timestep)`` for diffusers: the exact eps at the noise level of ``timestep``."""

    def model(x, timestep):
        counter.calls += 1
        alpha, sigma = _vp_from_lambda(float(lambda_at_index(float(timestep))))
        x0 = mix.posterior_mean(x, alpha, sigma).double()
        return ((x.double() - alpha * x0) / sigma).to(x.dtype)

    return model


def kdiffusion_model(mix, counter):
    """``D(x, sigma) = E[x0 | x0 + sigma n = x]`` for k-diffusion, through the VP view
    ``x_vp = x / sqrt(1 + sigma^2)``, ``alpha = 1/sqrt(1 + sigma^2)``, ``sigma_vp = sigma alpha``."""

    def model(x, sigma):
        counter.calls += 1
        s = float(sigma.reshape(-1)[0])
        a = 1.0 / math.sqrt(1.0 + s * s)
        return mix.posterior_mean(x * a, a, s * a)

    return model


class OracleEps(torch.nn.Module):
    """diffkit backbone: the exact eps at the time ``t`` (one time for the whole batch, as samplers call it)."""

    def __init__(self, mix, proc, counter):
        super().__init__()
        self.mix, self.proc, self.counter = mix, proc, counter

    def forward(self, state, t, cond=None):
        self.counter.calls += 1
        x = state["x"]
        t0 = float(t.reshape(-1)[0])
        alpha, sigma = float(self.proc.alpha(t0)), float(self.proc.sigma(t0))
        x0 = self.mix.posterior_mean(x, alpha, sigma).double()
        return {"x": ((x.double() - alpha * x0) / sigma).to(x.dtype)}


def diffkit_model(mix, proc, counter):
    diff = Diffusion({"x": proc})
    return guided(Denoiser(OracleEps(mix, proc, counter), diff, "eps"))


# --- the peers -------------------------------------------------------------------------------
def load_diffusers():
    try:
        import diffusers  # noqa: F401
    except Exception as exc:  # pragma: no cover - optional peer
        return None, f"diffusers not importable: {exc}"
    return diffusers, None


def load_kdiffusion_sampling():
    """k-diffusion's ``sampling`` module. The package's ``__init__`` imports its training code (torchvision,
    CLIP, wandb, clean-fid, kornia, ...); when that fails, ``k_diffusion/sampling.py`` is loaded on its own
    under a private package name, with a stand-in ``utils`` holding the one helper it uses (``append_dims``).
    Needs scipy, torchdiffeq, torchsde and tqdm, which sampling.py imports at the top."""
    try:
        import k_diffusion.sampling as sampling  # the whole package, where its dependencies are installed

        return sampling, "import k_diffusion.sampling (full package)"
    except Exception:
        pass
    for name in [m for m in sys.modules if m == "k_diffusion" or m.startswith("k_diffusion.")]:
        del sys.modules[name]  # a half-imported package must not shadow the stand-in below
    spec = importlib.util.find_spec("k_diffusion")
    if spec is None or not spec.submodule_search_locations:
        return None, "k-diffusion not installed"
    folder = Path(list(spec.submodule_search_locations)[0])
    pkg_name = "_peers_k_diffusion"
    pkg = types.ModuleType(pkg_name)
    pkg.__path__ = [str(folder)]
    utils = types.ModuleType(f"{pkg_name}.utils")

    def append_dims(x, target_dims):
        return x[(...,) + (None,) * (target_dims - x.ndim)]

    utils.append_dims = append_dims
    pkg.utils = utils
    sys.modules[pkg_name], sys.modules[f"{pkg_name}.utils"] = pkg, utils
    mod_spec = importlib.util.spec_from_file_location(f"{pkg_name}.sampling", folder / "sampling.py")
    sampling = importlib.util.module_from_spec(mod_spec)
    sys.modules[mod_spec.name] = sampling
    try:
        mod_spec.loader.exec_module(sampling)
    except Exception as exc:
        return None, f"k_diffusion/sampling.py could not be loaded: {exc}"
    return sampling, "k_diffusion/sampling.py loaded alone (package installed with --no-deps; utils.append_dims stood in)"


def version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


# --- methods: (library, method, config) -> run(noise, nfe, model) -> samples --------------------
class Method:
    def __init__(self, library, method, config, steps_for, run, make_model, make_free, path="vp"):
        self.library, self.method, self.config = library, method, config
        self.steps_for, self.run, self.make_model, self.make_free = steps_for, run, make_model, make_free
        self.path = path  # "vp": DDPM's linear betas (diffusion); "linear": the rectified-flow path x_t = (1 - t) x0 + t x1

    @property
    def key(self) -> tuple[str, str, str, str]:
        return self.library, self.method, self.config, self.path

    @property
    def label(self):
        return f"{self.library}:{self.method}/{self.config}" + ("" if self.path == "vp" else f" [{self.path} path]")


REFERENCE = ("diffkit", "dpmpp-3m", "logsnr", "vp")
"""The method (library, method, config, path) whose long run is the converged flow every coupled error is measured against."""

DIFFKIT_SAMPLERS = ("ddim", "euler", "heun", "dpmpp-2m", "dpmpp-3m", "deis", "unipc")


DIFFKIT_SCHEDULES = ("uniform", "logsnr", "karras", "uniform-trailing", "logsnr-trailing", "karras-trailing")


def diffkit_variants(sampler) -> list[tuple[str, dict]]:
    """(label suffix, options): the sampler's defaults and, where it has the option, ``lower_order_final`` flipped."""
    param = inspect.signature(sampler).parameters.get("lower_order_final")
    if param is None:
        return [("", {})]
    return [("", {}), (f" lof={'off' if param.default else 'on'}", {"lower_order_final": not param.default})]


def diffkit_methods(proc) -> list[Method]:
    diff = Diffusion({"x": proc})
    sigma_T = float(proc.sigma(proc.t_max))
    out = []
    for name in DIFFKIT_SAMPLERS:
        sampler = SAMPLERS[name]
        for (suffix, opts), schedule in ((v, s) for v in diffkit_variants(sampler) for s in DIFFKIT_SCHEDULES):
            def run(noise, steps, model, sampler=sampler, schedule=schedule, opts=opts):
                return sampler(model, State(x=sigma_T * noise), make_times(diff, steps, schedule), **opts)["x"]

            def make_free(shape, sampler=sampler):
                eps = torch.randn(shape, generator=torch.Generator().manual_seed(3))

                class Free(torch.nn.Module):
                    def forward(self, state, t, cond=None):
                        return {"x": eps}

                backbone = Free()
                fn = guided(Denoiser(backbone, diff, "eps"))
                return fn, (lambda: backbone(None, None))

            out.append(Method("diffkit", name, schedule + suffix, lambda nfe, s=sampler: steps_for_nfe(s, nfe), run,
                              lambda mix, c: diffkit_model(mix, proc, c), make_free))
    return out


FLOW_SAMPLERS = ("flow-euler", "flow-midpoint", "ddim", "heun", "dpmpp-2m", "dpmpp-3m", "deis", "unipc")


def diffkit_flow_methods() -> list[Method]:
    """diffkit on the linear path (``LinearFlow``, noise at t = 1, t_max = 0.999) with the exact velocity of the mixture
    (the ``velocity`` parameterisation): the flow solvers and every ODE sampler of the continuous-time view."""
    path = LinearFlow()
    diff = Diffusion({"x": path})
    sigma_T = float(path.sigma(path.t_max))
    out = []
    for name in FLOW_SAMPLERS:
        sampler = SAMPLERS[name]
        for schedule in ("uniform", "logsnr", "karras"):
            def run(noise, steps, model, sampler=sampler, schedule=schedule):
                return sampler(model, State(x=sigma_T * noise), make_times(diff, steps, schedule))["x"]

            def make_model(mix, counter):
                backbone = AnalyticVelocityBackbone(mix, path)

                class Counted(torch.nn.Module):
                    def forward(self, state, t, cond=None):
                        counter.calls += 1
                        return backbone(state, t)

                return guided(Denoiser(Counted(), diff, "velocity"))

            out.append(Method("diffkit", name, schedule, lambda nfe, s=sampler: steps_for_nfe(s, nfe), run, make_model, None, path="linear"))
    return out


def diffusers_flow_methods(diffusers) -> list[Method]:
    """diffusers' FlowMatchEulerDiscreteScheduler (shift 1, 1000 training steps) on the linear path, fed the exact
    velocity ``x1 - x0`` in its convention (``sigma`` = t, model output = ``noise - x0``)."""
    cls = getattr(diffusers, "FlowMatchEulerDiscreteScheduler", None)
    if cls is None:
        return []

    def run(noise, steps, model):
        sched = cls(num_train_timesteps=T_TRAIN, shift=1.0)
        sched.set_timesteps(steps)
        x = noise.clone()
        for t in sched.timesteps:
            x = sched.step(model(x, t), t, x).prev_sample
        return x

    def make_model(mix, counter):
        def model(x, timestep):
            counter.calls += 1
            return linear_path_velocity(mix, x, float(timestep) / T_TRAIN)

        return model

    return [Method("diffusers", "flow-euler", "FlowMatchEuler", lambda nfe: nfe, run, make_model, None, path="linear")]


DIFFUSERS = {  # method -> (scheduler class name, extra config, first-order cost per step)
    "ddim": ("DDIMScheduler", {"clip_sample": False}),
    "euler": ("EulerDiscreteScheduler", {}),
    "heun": ("HeunDiscreteScheduler", {}),
    "dpmpp-2m": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++", "solver_order": 2}),
    "unipc": ("UniPCMultistepScheduler", {}),
    "deis": ("DEISMultistepScheduler", {}),
}
DIFFUSERS_CONFIGS = {  # config name -> scheduler options (each only where the scheduler accepts it)
    "default": {},
    "trailing": {"timestep_spacing": "trailing"},  # only where the default spacing differs: DDIM (leading), Euler and Heun (linspace to t=0)
    "karras": {"use_karras_sigmas": True},
    "lu-lambdas": {"use_lu_lambdas": True},  # uniform in log-SNR (DPM-Solver++ only)
}
TRAILING = ("ddim", "euler", "heun")


def diffusers_methods(diffusers) -> list[Method]:
    out = []
    for method, (cls_name, extra) in DIFFUSERS.items():
        cls = getattr(diffusers, cls_name)
        accepted = inspect.signature(cls.__init__).parameters
        for config, opts in DIFFUSERS_CONFIGS.items():
            if any(k not in accepted for k in opts) or (config == "trailing" and method not in TRAILING):
                continue
            kwargs = {"num_train_timesteps": T_TRAIN, "beta_start": 1e-4, "beta_end": 0.02, "beta_schedule": "linear", "prediction_type": "epsilon", **extra, **opts}

            def run(noise, steps, model, cls=cls, kwargs=kwargs):
                sched = cls(**kwargs)
                sched.set_timesteps(steps)
                x = noise * sched.init_noise_sigma
                for t in sched.timesteps:
                    eps = model(sched.scale_model_input(x, t), t)
                    x = sched.step(eps, t, x).prev_sample
                return x

            def make_free(shape):
                eps = torch.randn(shape, generator=torch.Generator().manual_seed(3))

                def free(x, t):
                    return eps

                return free, (lambda: free(None, None))

            heun = method == "heun"
            out.append(Method("diffusers", method, config, (lambda nfe: (nfe + 1) // 2) if heun else (lambda nfe: nfe), run,
                              diffusers_model, make_free))
    return out


KDIFF_SAMPLERS = {"euler": "sample_euler", "heun": "sample_heun", "lms": "sample_lms", "dpm-2": "sample_dpm_2", "dpmpp-2m": "sample_dpmpp_2m"}


def kdiffusion_methods(kd) -> list[Method]:
    out = []
    schedules = {
        "karras": lambda n: kd.get_sigmas_karras(n, SIGMA_MIN, SIGMA_MAX),
        "exponential": lambda n: kd.get_sigmas_exponential(n, SIGMA_MIN, SIGMA_MAX),
    }
    for method, fn_name in KDIFF_SAMPLERS.items():
        fn = getattr(kd, fn_name)
        two = method in ("heun", "dpm-2")
        for config, sigmas_fn in schedules.items():
            def run(noise, steps, model, fn=fn, sigmas_fn=sigmas_fn):
                sigmas = sigmas_fn(steps)
                return fn(model, noise * sigmas[0], sigmas, disable=True)

            def make_free(shape):
                x0 = torch.randn(shape, generator=torch.Generator().manual_seed(3))

                def free(x, sigma):
                    return x0

                return free, (lambda: free(None, None))

            out.append(Method("k-diffusion", method, config, (lambda nfe: (nfe + 1) // 2) if two else (lambda nfe: nfe), run,
                              kdiffusion_model, make_free))
    return out


# --- quality ---------------------------------------------------------------------------------
def quality(methods, mixtures, nfes, n, seeds, reference_nfe=0) -> tuple[list[dict], dict, dict]:
    """SW2 to fresh target draws and, when ``reference_nfe`` > 0, the coupled error: RMS distance per coordinate between
    each sample and the converged flow from the same prior draw (diffkit's DPM-Solver++(3M) on the log-SNR grid at
    ``reference_nfe`` on the VP process; every library starts from the same standard-normal draw scaled to its prior,
    which is one point of the same probability-flow ODE in variance-exploding coordinates)."""
    rows, floors, references = [], {}, {}
    for mix_name, mix in mixtures.items():
        targets = [mix.sample(n, torch.Generator().manual_seed(100 + s)) for s in range(seeds)]
        floor = [sliced_wasserstein(mix.sample(n, torch.Generator().manual_seed(200 + s)), targets[s]) for s in range(seeds)]
        floors[mix_name] = statistics.fmean(floor)
        noises = [torch.randn(n, mix.dim, generator=torch.Generator().manual_seed(7 + s)) for s in range(seeds)]
        print(f"\n{mix_name}: two-sample floor {floors[mix_name]:.4f} (n = {n}, mean of {seeds} seed(s))", flush=True)
        converged = None
        if reference_nfe:  # the flow solved to convergence from the same prior draws: what "no discretisation error" scores
            ref = next(m for m in methods if m.key == REFERENCE)
            converged, sws = [], []
            for s in range(seeds):
                counter = Counter()
                with torch.no_grad():
                    converged.append(ref.run(noises[s], ref.steps_for(reference_nfe), ref.make_model(mix, counter)).double())
                sws.append(sliced_wasserstein(converged[-1].float(), targets[s]))
            references[mix_name] = {"method": f"{ref.label} at NFE {counter.calls}", "sw2": statistics.fmean(sws), "sw2_seeds": sws}
            flow_ref = next((m for m in methods if (m.library, m.method, m.config, m.path) == ("diffkit", "flow-midpoint", "uniform", "linear")), None)
            if flow_ref is not None:  # the linear path's own converged flow, against the VP one: the floor of the coupled error for flow rows
                with torch.no_grad():
                    dist = [coupled_error(flow_ref.run(noises[s], flow_ref.steps_for(reference_nfe), flow_ref.make_model(mix, Counter())), converged[s]) for s in range(seeds)]
                references[mix_name]["linear_path_vs_vp_coupled"] = statistics.fmean(dist)
            print(f"  converged reference ({ref.label}, NFE {counter.calls}): SW2 {references[mix_name]['sw2']:.4f}"
                  + (f"; the linear path's converged flow is {references[mix_name]['linear_path_vs_vp_coupled']:.2e} from it" if flow_ref else ""), flush=True)
        for m in methods:
            for budget in nfes:
                steps = m.steps_for(budget)
                sws, coupled, nfe = [], [], None
                t0 = time.perf_counter()
                for s in range(seeds):
                    counter = Counter()
                    model = m.make_model(mix, counter)
                    try:
                        with torch.no_grad():
                            x = m.run(noises[s], steps, model)
                        sw = sliced_wasserstein(x.float(), targets[s])
                        c = coupled_error(x, converged[s]) if converged is not None else float("nan")
                    except Exception as exc:  # a peer configuration that refuses this step count
                        print(f"  {m.label:38s} NFE<={budget:3d}  failed: {type(exc).__name__}: {exc}", flush=True)
                        sw = c = float("nan")
                    sws.append(sw if math.isfinite(sw) else float("nan"))
                    coupled.append(c if math.isfinite(c) else float("nan"))
                    nfe = counter.calls
                row = {"mixture": mix_name, "library": m.library, "method": m.method, "config": m.config, "path": m.path, "budget": budget, "steps": steps,
                       "nfe": nfe, "sw2": statistics.fmean(sws), "sw2_seeds": sws, "sw2_std": statistics.pstdev(sws) if seeds > 1 else 0.0,
                       "coupled": statistics.fmean(coupled), "coupled_seeds": coupled, "floor": floors[mix_name], "seconds": time.perf_counter() - t0}
                if nfe is not None and nfe > budget:
                    row["note"] = f"used {nfe} evaluations for a budget of {budget}"
                rows.append(row)
                print(f"  {m.label:52s} NFE {nfe!s:>3s}/{budget:<3d} SW2 {row['sw2']:.4f} ± {row['sw2_std']:.4f}  ({row['sw2'] / floors[mix_name]:.2f}x floor)"
                      f"  coupled {row['coupled']:.2e}", flush=True)
    return rows, floors, references


# --- overhead --------------------------------------------------------------------------------
OVERHEAD_METHODS = {("diffkit", "ddim", "uniform"), ("diffkit", "euler", "karras"), ("diffkit", "heun", "karras"), ("diffkit", "dpmpp-2m", "logsnr"),
                    ("diffkit", "dpmpp-3m", "logsnr"), ("diffkit", "deis", "logsnr"), ("diffkit", "unipc", "logsnr"),
                    ("diffusers", "ddim", "default"), ("diffusers", "euler", "default"), ("diffusers", "heun", "default"),
                    ("diffusers", "dpmpp-2m", "default"), ("diffusers", "dpmpp-2m", "karras"), ("diffusers", "unipc", "default"), ("diffusers", "deis", "default"),
                    ("k-diffusion", "euler", "karras"), ("k-diffusion", "heun", "karras"), ("k-diffusion", "lms", "karras"),
                    ("k-diffusion", "dpm-2", "karras"), ("k-diffusion", "dpmpp-2m", "karras")}


def overhead(methods, shapes, budget, repeats) -> list[dict]:
    """Seconds per step of each sampler driven by a free model; the free model's own time is subtracted."""
    chosen = [m for m in methods if (m.library, m.method, m.config) in OVERHEAD_METHODS and m.path == "vp"]
    rows = []
    for shape in shapes:
        noise = torch.randn(shape, generator=torch.Generator().manual_seed(11))
        setups = []
        for m in chosen:
            free, bare = m.make_free(shape)
            counter = Counter()

            def counted(*args, free=free, counter=counter):
                counter.calls += 1
                return free(*args)

            if m.library == "diffkit":
                counted.diffusion = free.diffusion
            steps = m.steps_for(budget)
            with torch.no_grad():
                m.run(noise, steps, counted)  # warm-up, and the NFE
            setups.append((m, free, bare, steps, counter.calls))
        times = {m.label: [] for m in chosen}
        for _ in range(repeats):  # interleaved: every method sees the same machine load
            for m, free, bare, steps, _nfe in setups:
                with torch.no_grad():
                    t0 = time.perf_counter()
                    m.run(noise, steps, free)
                    times[m.label].append(time.perf_counter() - t0)
        for m, free, bare, steps, nfe in setups:
            per_call = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                for _ in range(1000):
                    bare()
                per_call.append((time.perf_counter() - t0) / 1000)
            model_s = statistics.median(per_call)
            total = statistics.median(times[m.label])
            per_step = (total - nfe * model_s) / steps
            rows.append({"library": m.library, "method": m.method, "config": m.config, "shape": list(shape), "steps": steps, "nfe": nfe,
                         "seconds_total": total, "model_seconds_per_call": model_s, "seconds_per_step": per_step,
                         "seconds_per_nfe": (total - nfe * model_s) / nfe, "repeats": repeats})
            print(f"overhead {tuple(shape)!s:12s} {m.label:38s} {per_step * 1e6:9.1f} us/step  ({nfe} NFE, {steps} steps; model {model_s * 1e6:.2f} us/call)", flush=True)
    return rows


# --- reporting -------------------------------------------------------------------------------
def best_per_library(rows, mixture, budget, path="vp", metric="sw2"):
    """Per library, its row with the least ``metric`` on ``mixture`` at ``budget`` on ``path``."""
    best = {}
    for r in rows:
        if r["mixture"] == mixture and r["budget"] == budget and r.get("path", "vp") == path and math.isfinite(r[metric]):
            if r["library"] not in best or r[metric] < best[r["library"]][metric]:
                best[r["library"]] = r
    return best


def verdicts(rows, over, mixtures, floors) -> list[dict]:
    """Targets: at NFE 5, 10 and 20, diffkit's best row against the best peer row on the VP process (paired over seeds:
    both ran from the same prior draws and were scored against the same target draws), by SW2 and by the coupled
    error; per-step overhead ratio."""
    out = []
    for mix in mixtures:
        for budget in (5, 10, 20):
            for metric in ("sw2", "coupled"):
                best = best_per_library(rows, mix, budget, metric=metric)
                peers = {k: v for k, v in best.items() if k != "diffkit"}
                if "diffkit" not in best or not peers:
                    continue
                bp = min(peers.values(), key=lambda r: r[metric])
                dk = best["diffkit"]
                diffs = [a - b for a, b in zip(dk[f"{metric}_seeds"], bp[f"{metric}_seeds"])]
                mean = statistics.fmean(diffs)
                se = statistics.stdev(diffs) / math.sqrt(len(diffs)) if len(diffs) > 1 else 0.0
                status = "ahead" if mean < -2 * se else ("behind" if mean > 2 * se else "tie")
                fmt = ".4f" if metric == "sw2" else ".2e"
                out.append({"target": f"{'SW2' if metric == 'sw2' else 'coupled error'} {mix} NFE {budget}", "diffkit": f"{dk['method']}/{dk['config']} {dk[metric]:{fmt}}",
                            "best_peer": f"{bp['library']}:{bp['method']}/{bp['config']} {bp[metric]:{fmt}}", "floor": floors[mix],
                            "paired_difference": mean, "paired_se": se, "met": mean <= 0,
                            "status": f"{status} (diffkit - peer = {mean:+{fmt}} ± {se:{fmt}} s.e. over {len(diffs)} seeds)"})
    for shape in sorted({tuple(r["shape"]) for r in over}):
        dk = next((r for r in over if r["library"] == "diffkit" and r["method"] == "dpmpp-2m" and tuple(r["shape"]) == shape), None)
        df = next((r for r in over if r["library"] == "diffusers" and r["method"] == "dpmpp-2m" and r["config"] == "default" and tuple(r["shape"]) == shape), None)
        if dk and df:
            ratio = dk["seconds_per_step"] / df["seconds_per_step"]
            out.append({"target": f"overhead {shape}: diffkit dpmpp-2m step <= 1/3 of diffusers' DPM-Solver++ step", "diffkit": f"{dk['seconds_per_step'] * 1e6:.1f} us",
                        "best_peer": f"{df['seconds_per_step'] * 1e6:.1f} us", "ratio": ratio, "met": ratio <= 1 / 3, "status": f"ratio {ratio:.3f}"})
    return out


def markdown(report) -> str:
    lines = [f"# diffkit beside diffusers and k-diffusion on the exact-score oracle ({report['date']})", "",
             f"Machine: {report['machine']}. torch {report['versions']['torch']}, diffusers {report['versions'].get('diffusers')}, "
             f"k-diffusion {report['versions'].get('k-diffusion')} ({report['kdiffusion_loading']}).", "",
             f"Forward process: DDPM linear betas 1e-4..0.02, 1000 steps, for every library. {report['n']} samples, {report['seeds']} seed(s); "
             "SW2 = sliced Wasserstein-2 to fresh target draws (mean over seeds); floor = SW2 between two independent target draws.", "",
             "## Targets", "", "| target | diffkit | best peer | met | status |", "|---|---|---|---|---|"]
    for v in report["verdicts"]:
        lines.append(f"| {v['target']} | {v['diffkit']} | {v['best_peer']} | {'yes' if v['met'] else 'no'} | {v['status']} |")
    rows = report["quality"]
    for mix, floor in report["floors"].items():
        budgets = sorted({r["budget"] for r in rows})
        ref = report.get("references", {}).get(mix)
        lines += ["", f"## {mix}", "", f"Two-sample floor {floor:.4f}" + (f"; converged reference ({ref['method']}) {ref['sw2']:.4f}" if ref else "") + ".", "",
                  "Best configuration per library (SW2, config, NFE used):", "",
                  "| library | " + " | ".join(f"NFE {b}" for b in budgets) + " |", "|---|" + "---|" * len(budgets)]
        for lib in ("diffkit", "diffusers", "k-diffusion"):
            cells = []
            for b in budgets:
                best = best_per_library(rows, mix, b).get(lib)
                cells.append("—" if best is None else f"{best['sw2']:.4f} {best['method']}/{best['config']} ({best['nfe']})")
            lines.append(f"| {lib} | " + " | ".join(cells) + " |")
        lines += ["", "Best configuration per library by the coupled error (distance to the converged flow from the same prior draws):", "",
                  "| library | " + " | ".join(f"NFE {b}" for b in budgets) + " |", "|---|" + "---|" * len(budgets)]
        for lib in ("diffkit", "diffusers", "k-diffusion"):
            cells = []
            for b in budgets:
                best = best_per_library(rows, mix, b, metric="coupled").get(lib)
                cells.append("—" if best is None else f"{best['coupled']:.2e} {best['method']}/{best['config']}")
            lines.append(f"| {lib} | " + " | ".join(cells) + " |")
        if any(r.get("path") == "linear" and r["mixture"] == mix for r in rows):
            note = ref.get("linear_path_vs_vp_coupled") if ref else None
            lines += ["", "Flow matching (linear path, exact velocity) beside diffusion (VP path), each with its best sampler (SW2 / coupled error"
                      + (f"; the linear path's converged flow sits {note:.2e} from the VP one, the floor of the coupled error for linear-path rows" if note is not None else "") + "):", "",
                      "| path | library | " + " | ".join(f"NFE {b}" for b in budgets) + " |", "|---|---|" + "---|" * len(budgets)]
            for path, lib in (("vp", "diffkit"), ("linear", "diffkit"), ("vp", "diffusers"), ("linear", "diffusers"), ("vp", "k-diffusion")):
                cells = []
                for b in budgets:
                    best = best_per_library(rows, mix, b, path=path).get(lib)
                    cells.append("—" if best is None else f"{best['sw2']:.4f} / {best['coupled']:.2e} {best['method']}/{best['config']}")
                lines.append(f"| {path} | {lib} | " + " | ".join(cells) + " |")
        lines += ["", "All rows (SW2 ± std over seeds, coupled error; NFE used):", "", "| library | method | config | path | " + " | ".join(f"NFE {b}" for b in budgets) + " |",
                  "|---|---|---|---|" + "---|" * len(budgets)]
        keys = []
        for r in rows:
            k = (r["library"], r["method"], r["config"], r.get("path", "vp"))
            if r["mixture"] == mix and k not in keys:
                keys.append(k)
        for k in keys:
            cells = []
            for b in budgets:
                r = next((r for r in rows if r["mixture"] == mix and (r["library"], r["method"], r["config"], r.get("path", "vp")) == k and r["budget"] == b), None)
                cells.append("—" if r is None else f"{r['sw2']:.4f} ± {r['sw2_std']:.4f}, {r['coupled']:.1e} ({r['nfe']})")
            lines.append(f"| {k[0]} | {k[1]} | {k[2]} | {k[3]} | " + " | ".join(cells) + " |")
    over = report["overhead"]
    if over:
        lines += ["", "## Per-step overhead (free model, one thread, medians of interleaved repeats, model time subtracted)", "",
                  "| library | method | config | " + " | ".join(f"{tuple(s)} us/step" for s in report["overhead_shapes"]) + " |",
                  "|---|---|---|" + "---|" * len(report["overhead_shapes"])]
        keys = []
        for r in over:
            k = (r["library"], r["method"], r["config"])
            if k not in keys:
                keys.append(k)
        for k in keys:
            cells = []
            for s in report["overhead_shapes"]:
                r = next((r for r in over if (r["library"], r["method"], r["config"]) == k and r["shape"] == list(s)), None)
                cells.append("—" if r is None else f"{r['seconds_per_step'] * 1e6:.1f}")
            lines.append(f"| {k[0]} | {k[1]} | {k[2]} | " + " | ".join(cells) + " |")
    if report["notes"]:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in report["notes"]]
    return "\n".join(lines) + "\n"


def plot(rows, floors, references, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    mixes = list(floors)
    fig, axes = plt.subplots(1, len(mixes), figsize=(7 * len(mixes), 5.5), squeeze=False)
    colours = {"diffkit": "tab:blue", "diffusers": "tab:orange", "k-diffusion": "tab:green"}
    markers = "os^Dvx*P"
    for ax, mix in zip(axes[0], mixes):
        for lib in ("diffkit", "diffusers", "k-diffusion"):
            methods = sorted({r["method"] for r in rows if r["library"] == lib and r["mixture"] == mix and r.get("path", "vp") == "vp"})
            for j, method in enumerate(methods):
                best = {}  # per NFE budget, the method's best config
                for r in rows:
                    if r["library"] == lib and r["method"] == method and r["mixture"] == mix and r.get("path", "vp") == "vp" and math.isfinite(r["sw2"]):
                        if r["budget"] not in best or r["sw2"] < best[r["budget"]]["sw2"]:
                            best[r["budget"]] = r
                pts = sorted((r["nfe"], r["sw2"]) for r in best.values())
                if pts:
                    ax.plot([p[0] for p in pts], [p[1] for p in pts], marker=markers[j % len(markers)], color=colours[lib],
                            alpha=0.85, label=f"{lib}: {method}", linestyle="-" if lib == "diffkit" else "--")
        ax.axhline(floors[mix], color="black", linestyle=":", label="two-sample floor")
        if mix in references:
            ax.axhline(references[mix]["sw2"], color="grey", linestyle="-.", label="converged flow, same prior draws")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("NFE (model evaluations)")
        ax.set_ylabel("sliced W2 to target")
        ax.set_title(f"{mix}: best schedule per method")
        ax.grid(True, which="both", alpha=0.3)
    axes[0][-1].legend(fontsize=7, ncol=2, loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=f"benchmarks/results/peers-{DATE}.json", help="JSON path; the PNG and .md go beside it")
    parser.add_argument("--n", type=int, default=10000, help="samples per run")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--nfe", type=int, nargs="+", default=[5, 10, 20, 50])
    parser.add_argument("--mixtures", nargs="+", default=["ring8-2d", "gmm-16d", *HARD_MIXTURES],
                        help=f"mixtures: ring8-2d, gmm-16d and the hard cases {', '.join(HARD_MIXTURES)} (diffkit.oracle_mixtures)")
    parser.add_argument("--no-flow", action="store_true", help="leave out the linear-path (flow matching) rows")
    parser.add_argument("--repeats", type=int, default=25, help="interleaved timing repeats")
    parser.add_argument("--quick", action="store_true", help="2,000 samples, one seed, NFE 5 and 10, the 2-D ring and narrow ring, 3 timing repeats")
    parser.add_argument("--no-overhead", action="store_true")
    parser.add_argument("--reference-nfe", type=int, default=500, help="NFE of the converged reference run per mixture (0: none)")
    parser.add_argument("--methods", nargs="+", default=None,
                        help="only these methods (e.g. unipc deis), in every library that has them; diffkit dpmpp-3m/logsnr, the converged reference, stays in the tables")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (at most 2 on the shared machine; 1 is faster under load)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.quick:
        args.n, args.seeds, args.nfe, args.repeats, args.reference_nfe = 2000, 1, [5, 10], 3, 100
        args.mixtures = ["ring8-2d", "narrow-ring-2d"]
    known = {"ring8-2d": lambda: ring(8), "gmm-16d": lambda: random_mixture(16), **HARD_MIXTURES}
    unknown = [m for m in args.mixtures if m not in known]
    if unknown:
        raise SystemExit(f"unknown mixture(s) {unknown}; use any of {sorted(known)}")
    mixtures = {m: known[m]() for m in args.mixtures}

    notes, versions = [], {"torch": torch.__version__, "python": platform.python_version()}
    proc = DDPMLinear()
    methods = diffkit_methods(proc) + ([] if args.no_flow else diffkit_flow_methods())
    diffusers, why = load_diffusers()
    if diffusers is None:
        notes.append(f"diffusers skipped: {why}")
    else:
        versions["diffusers"] = version("diffusers")
        methods += diffusers_methods(diffusers) + ([] if args.no_flow else diffusers_flow_methods(diffusers))
    kd, how = load_kdiffusion_sampling()
    if kd is None:
        notes.append(f"k-diffusion skipped: {how}")
    else:
        versions["k-diffusion"] = version("k-diffusion")
        for dep in ("scipy", "torchdiffeq", "torchsde", "tqdm"):
            versions[dep] = version(dep)
        methods += kdiffusion_methods(kd)
    if args.methods:
        methods = [m for m in methods if m.method in args.methods or m.key == REFERENCE]
    print("versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()), flush=True)

    rows, floors, references = quality(methods, mixtures, args.nfe, args.n, args.seeds, args.reference_nfe)
    shapes = [(64, 2), (20000, 32)] if not args.quick else [(64, 2)]
    over = [] if args.no_overhead else overhead(methods, shapes, 20, args.repeats)
    report = {"date": DATE, "measured_at": time.strftime("%Y-%m-%d %H:%M"), "machine": "2 shared CPU cores", "versions": versions,
              "kdiffusion_loading": how, "n": args.n, "seeds": args.seeds, "nfe_budgets": args.nfe,
              "process": "DDPM linear betas 1e-4..0.02, 1000 steps", "sigma_min": SIGMA_MIN, "sigma_max": SIGMA_MAX,
              "floors": floors, "references": references, "quality": rows, "overhead_shapes": [list(s) for s in shapes] if over else [], "overhead": over, "notes": notes}
    report["verdicts"] = verdicts(rows, over, mixtures, floors)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    out.with_suffix(".md").write_text(markdown(report))
    plot(rows, floors, references, out.with_suffix(".png"))
    print("\n" + markdown(report))
    print(f"wrote {out}, {out.with_suffix('.md')}, {out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
