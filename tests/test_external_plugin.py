"""A plugin built outside this repository adds a sampler and a process family without editing diffkit.

The test writes a small distribution (``diffkit-toyfamily``: a ``setup.cfg`` with entry points) in a temporary
directory, builds and installs it with ``pip install --no-deps --no-build-isolation --target`` into a private
folder (this works whether the running interpreter is a venv or not), and runs ``diffkit`` in subprocesses with
that folder on ``PYTHONPATH``:

(a) its sampler, declared once with ``@diffkit.samplers.sampler``, appears in the rows of
    ``diffkit bench --tier quick --task gmm``;
(b) its process family (sign flips of {-1, +1} vectors: a two-state Markov chain with its own loss and its own
    reverse step) is trained by ``diffkit train`` and sampled by ``diffkit sample``, and the samples land on the
    data's two patterns.
"""
import json
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import diffkit

PLUGIN_FILES = {
    "pyproject.toml": """
        [build-system]
        requires = ["setuptools"]
        build-backend = "setuptools.build_meta"
        """,
    "setup.cfg": """
        [metadata]
        name = diffkit-toyfamily
        version = 0.1.0

        [options]
        packages = diffkit_toyfamily

        [options.entry_points]
        diffkit.samplers =
            toy-euler-ancestral = diffkit_toyfamily.sampler:euler_ancestral
        diffkit.processes =
            sign-flip = diffkit_toyfamily.signflip:sign_flip
        diffkit.datasets =
            toy-patterns = diffkit_toyfamily.signflip:patterns
        """,
    "diffkit_toyfamily/__init__.py": '''
        """A plugin outside diffkit: one sampler and one process family, each declared once."""
        ''',
    "diffkit_toyfamily/sampler.py": '''
        import math

        from diffkit.samplers import drive, lin, sampler


        @sampler("toy-euler-ancestral", schedule="karras")
        def euler_ancestral(denoiser, state, times, *, eta=1.0, generator=None, callback=None):
            """Euler-ancestral in y = x/alpha, s = sigma/alpha: a deterministic Euler step down to s_down, then fresh
            noise of scale s_up, with s_up^2 = eta^2 s_s^2 (s_t^2 - s_s^2) / s_t^2 and s_down^2 = s_s^2 - s_up^2."""

            def update(lv, name):
                a_t, s_t, a_s, s_s = lv.coefficients(name)
                ve_t, ve_s = s_t / a_t, s_s / a_s
                up = min(ve_s, eta * math.sqrt(max(ve_s**2 * (ve_t**2 - ve_s**2) / ve_t**2, 0.0)))
                r = math.sqrt(max(ve_s**2 - up**2, 0.0)) / ve_t
                x = lin((a_s * r / a_t, lv.x[name]), (a_s * (1.0 - r), lv.pred[name]))
                return x + (a_s * up) * lv.noise(name) if up > 0 else x

            return drive(euler_ancestral.spec, denoiser, state, times, update, generator=generator, callback=callback)
        ''',
    "diffkit_toyfamily/signflip.py": '''
        import math

        import torch
        import torch.nn.functional as F

        from diffkit.processes import FieldProcess
        from diffkit.processes.base import masked_mean
        from diffkit.spaces import EuclideanSpace


        class SignFlip(FieldProcess):
            """Vectors in {-1, +1}^d whose coordinates flip by a two-state Markov chain of rate ``rate``:
            P(x_t = x_0) = (1 + m_t) / 2 with m_t = exp(-2 rate t), uniform in the limit. The backbone's output is
            the log-odds of x_0 = +1 given x_t, per coordinate."""

            name = "sign-flip"
            t_min, t_max = 1e-3, 1.0

            def __init__(self, rate=3.0):
                self.rate = float(rate)

            def _m(self, t):
                return math.exp(-2.0 * self.rate * float(t))

            def diffuse(self, x0, t, generator=None, mask=None):
                m = torch.exp(-2.0 * self.rate * t.double()).reshape(-1, *([1] * (x0.dim() - 1)))
                flip = torch.rand(x0.shape, generator=generator, dtype=torch.float64) < (1 - m) / 2
                return torch.where(flip, -x0, x0), None

            def prior(self, like, generator=None, mask=None):
                return torch.where(torch.rand(like.shape, generator=generator) < 0.5, -1.0, 1.0).to(like.dtype)

            def read(self, raw, x_t, t, **_):
                return raw.float()  # log-odds: guidance combines them linearly

            def prediction(self, read):
                return torch.sigmoid(read)  # p(x_0 = +1 | x_t)

            def loss(self, raw, x0, x_t, noise, t, mask=None, **_):
                bce = F.binary_cross_entropy_with_logits(raw.float(), (x0 > 0).float(), reduction="none")
                return masked_mean(bce, mask, x0.dim() - 1)

            def step(self, x_t, prediction, t, s, generator=None, mask=None):
                """x_s ~ sum_x0 q(x_s | x_t, x_0) p(x_0 | x_t); s = None draws x_0."""
                if s is None:
                    p_plus = prediction
                else:
                    m_s, m_ts = self._m(s), self._m(t) / self._m(s)
                    like_plus, like_minus = (1 + m_ts * x_t) / 2, (1 - m_ts * x_t) / 2  # q(x_t | x_s = +1), q(x_t | x_s = -1)

                    def posterior_plus(sign):
                        prior_plus = (1 + m_s * sign) / 2  # q(x_s = +1 | x_0 = sign)
                        return like_plus * prior_plus / (like_plus * prior_plus + like_minus * (1 - prior_plus))

                    p_plus = prediction * posterior_plus(1.0) + (1 - prediction) * posterior_plus(-1.0)
                draw = torch.rand(x_t.shape, generator=generator)
                return torch.where(draw < p_plus, 1.0, -1.0).to(x_t.dtype)

            def config(self):
                return {"rate": self.rate}


        def sign_flip(field=None, **options):
            return SignFlip(**options)


        PATTERN = torch.tensor([1.0, 1.0, 1.0, 1.0, -1.0, -1.0, -1.0, -1.0])


        class Patterns(torch.utils.data.Dataset):
            """``PATTERN`` or its negation (equally often), each coordinate flipped with probability 0.03."""

            def __init__(self, n=2000, seed=0):
                g = torch.Generator().manual_seed(seed)
                sign = torch.where(torch.rand(n, 1, generator=g) < 0.5, -1.0, 1.0)
                flips = torch.where(torch.rand(n, 8, generator=g) < 0.03, -1.0, 1.0)
                self.data = sign * PATTERN * flips
                self.space = EuclideanSpace(8)

            def __len__(self):
                return len(self.data)

            def __getitem__(self, i):
                return self.data[i]


        def patterns(split="train", n=2000, seed=0):
            return Patterns(n, seed if split == "train" else seed + 1)
        ''',
}

RECIPE = """
    name = "toy-signs"
    seed = 0
    [data]
    dataset = "toy-patterns"
    options = { n = 2000 }
    [diffusion.x]
    process = "sign-flip"
    rate = 3.0
    [model]
    backbone = "mlp"
    options = { hidden = 64, depth = 2 }
    [train]
    steps = 300
    batch_size = 128
    lr = 3e-3
    ema = 0.9
    checkpoint_every = 300
    log_every = 100
    [sample]
    sampler = "ddim"
    steps = 20
    n = 400
    [eval]
    metrics = []
    """


@pytest.fixture(scope="module")
def installed_plugin(tmp_path_factory):
    root = tmp_path_factory.mktemp("toyfamily")
    src, site = root / "src", root / "site"
    for rel, text in PLUGIN_FILES.items():
        path = src / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip())
    res = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--no-index", "--target", str(site), str(src)],
                         capture_output=True, text=True, timeout=300, cwd=root)
    assert res.returncode == 0, res.stdout + res.stderr
    assert list(site.glob("diffkit_toyfamily-0.1.0.dist-info/entry_points.txt")), sorted(p.name for p in site.iterdir())
    return root, site


def run_diffkit(site: Path, cwd: Path, *args) -> subprocess.CompletedProcess:
    repo = str(Path(diffkit.__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), repo]), "OMP_NUM_THREADS": "1", "DIFFKIT_CACHE": str(cwd / "cache")}
    res = subprocess.run([sys.executable, "-m", "diffkit", "--threads", "1", *args], capture_output=True, text=True, timeout=1200, cwd=cwd, env=env)
    assert res.returncode == 0, f"diffkit {' '.join(args)} failed:\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}"
    return res


def test_the_plugin_is_not_part_of_diffkit():
    from diffkit.registry import names

    assert "toy-euler-ancestral" not in names("samplers") and "sign-flip" not in names("processes")


@pytest.mark.slow
def test_a_plugin_sampler_declared_once_is_benchmarked(installed_plugin):
    root, site = installed_plugin
    run_diffkit(site, root, "bench", "--tier", "quick", "--task", "gmm", "--out", "bench-out", "--quiet")
    report = json.loads((root / "bench-out" / "report.json").read_text())
    task = report["tasks"]["gmm"]
    assert list(task["methods"]) == ["diffusion", "flow-matching"]  # the quick bench on gmm shows both methods
    flow = [r for r in task["rows"] if r["method"] == "flow-matching"]
    assert {"flow-euler", "flow-midpoint"} <= {r["sampler"] for r in flow}
    # the plugin sampler updates Gaussian fields, so it joins the flow block too (a flow path is a Gaussian process)
    assert sorted(r["nfe"] for r in flow if r["sampler"] == "toy-euler-ancestral") == [10, 20]
    assert all(math.isfinite(r["metrics"]["sliced_wasserstein"]) for r in flow)
    rows = [r for r in task["rows"] if r["method"] == "diffusion"]
    mine = {r["nfe"]: r for r in rows if r["sampler"] == "toy-euler-ancestral"}
    ddim = {r["nfe"]: r for r in rows if r["sampler"] == "ddim"}
    assert sorted(mine) == [10, 20], [(r["sampler"], r["nfe"]) for r in rows]
    for nfe, row in mine.items():  # a working stochastic sampler: within a few times DDIM's distance at the same cost
        sw, ref = row["metrics"]["sliced_wasserstein"], ddim[nfe]["metrics"]["sliced_wasserstein"]
        assert sw < 3 * ref + 0.05, (nfe, sw, ref)


@pytest.mark.slow
def test_a_plugin_process_family_trains_and_samples_end_to_end(installed_plugin):
    root, site = installed_plugin
    (root / "toy.toml").write_text(textwrap.dedent(RECIPE))
    run_diffkit(site, root, "train", "toy.toml", "--out", "run", "--quiet")
    config = json.loads((root / "run" / "config.json").read_text())
    assert "sign-flip" in json.dumps(config)
    for sampler in ("ddim", "toy-euler-ancestral"):  # any sampler: the field steps with its own family's step
        run_diffkit(site, root, "sample", "run", "--sampler", sampler, "--n", "400", "--out", f"samples-{sampler}", "--quiet", "--no-metrics")
        x = load_file(str(root / f"samples-{sampler}" / "samples.safetensors"))["x"]
        assert x.shape == (400, 8) and bool(((x == 1) | (x == -1)).all())
        pattern = torch.tensor([1.0, 1.0, 1.0, 1.0, -1.0, -1.0, -1.0, -1.0])
        distance = torch.minimum((x != pattern).sum(1), (x != -pattern).sum(1))  # Hamming distance to the nearer pattern
        near = float((distance <= 1).float().mean())
        assert near > 0.8, f"{sampler}: only {near:.2f} of the samples lie within one flip of a pattern (uniform draws: 0.07)"
