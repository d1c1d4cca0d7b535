"""The conformance kit: the core's own components pass it, and each check catches a component broken
against its contract, with a one-line message naming the check, the contract and the component."""
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from diffkit import registry
from diffkit.backbones import build_mlp
from diffkit.evaluation import EvalContext
from diffkit.oracle import gmm_dataset
from diffkit.processes import VE, CategoricalProcess, Diffusion, VPCosine, categorical_uniform, vp_cosine
from diffkit.spaces import AudioSequence, ContinuousCube, EuclideanSpace, FieldSpec, MolecularGraph, SpaceError
from diffkit.state import State
from diffkit.testing import (
    ConformanceError, check_backbone, check_dataset, check_metric, check_plugin, check_process, check_recipe, check_sampler, check_space,
    parametrize_checks, plugin_checks,
)


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models: one thread is fastest, and the CPU is shared
    yield
    torch.set_num_threads(before)


def graphs():
    g = torch.Generator().manual_seed(0)
    out = []
    for n in (3, 4, 2, 4):
        upper = torch.triu(torch.randint(0, 3, (n, n), generator=g), diagonal=1)
        out.append({"atoms": torch.randint(0, 3, (n,), generator=g), "bonds": upper + upper.T})
    return out


def core_spaces():
    g = torch.Generator().manual_seed(0)
    return [
        ("euclidean", EuclideanSpace(3), [torch.randn(3, generator=g) for _ in range(4)]),
        ("continuous-cube", ContinuousCube((1, 4, 4)), [torch.rand(1, 4, 4, generator=g) for _ in range(4)]),
        ("audio-sequence", AudioSequence(channels=1, length=32, sample_rate=8000), [torch.rand(1, 32, generator=g) * 2 - 1 for _ in range(4)]),
        ("molecular-graph", MolecularGraph(["C", "N", "O"], max_atoms=5), graphs()),
    ]


# --- the core passes --------------------------------------------------------------------------------------
@pytest.mark.parametrize("name,space,examples", core_spaces(), ids=[s[0] for s in core_spaces()])
def test_core_spaces_pass(name, space, examples):
    checked = check_space(space, examples, registered_name=name)
    assert {"round-trip", "bad-input", "config", "template", "decode-any"} <= set(checked)


@parametrize_checks("diffkit")
def test_core_components_pass(check):
    """Every process, sampler, recipe, dataset, metric and backbone the core registers (check_plugin('diffkit'))."""
    assert check()


@pytest.mark.parametrize("space", [ContinuousCube((1, 4, 4)), AudioSequence(channels=2, length=16)], ids=["cube", "audio"])
def test_mlp_backbone_passes_on_array_spaces(space):
    diffusion = Diffusion({space.fields[0].name: VPCosine()})
    assert "checkpoint" in check_backbone(build_mlp, space, diffusion, options={"hidden": 16, "depth": 1}, num_classes=3, name="mlp")


class TinyGraphNet(nn.Module):
    """Permutation-equivariant message passing on atoms and bonds (a test fixture, not a model)."""

    equivariance = "permutation"

    def __init__(self, atoms: int, bonds: int, hidden: int = 16, positional: bool = False, use_mask: bool = True):
        super().__init__()
        self.node = nn.Linear(atoms + 1, hidden)
        self.edge = nn.Linear(bonds + 1, hidden)
        self.atom_out = nn.Linear(2 * hidden, atoms)
        self.bond_out = nn.Linear(hidden, bonds)
        self.index = nn.Parameter(torch.randn(8, hidden)) if positional else None
        self.use_mask = use_mask

    def forward(self, state, t, cond=None):
        a, b = state["atoms"], state["bonds"]
        m = state["mask"][..., None] if self.use_mask else torch.ones_like(state["mask"][..., None])
        n = a.shape[1]
        h = torch.tanh(self.node(torch.cat([a, t[:, None, None].expand(-1, n, 1)], -1)))
        if self.index is not None:
            h = h + self.index[:n]
        h = h * m
        pooled = (h * m).sum(1, keepdim=True) / m.sum(1, keepdim=True).clamp_min(1)
        e = self.edge(torch.cat([b, t[:, None, None, None].expand(-1, n, n, 1)], -1)) + h[:, :, None] + h[:, None, :]
        e = 0.5 * (e + e.transpose(1, 2))
        return {"atoms": self.atom_out(torch.cat([h, pooled.expand_as(h)], -1)), "bonds": self.bond_out(e)}


def graph_setup():
    space = MolecularGraph(["C", "N", "O"], max_atoms=5)
    diffusion = Diffusion({f.name: categorical_uniform(f) for f in space.fields}, {f.name: f.layout for f in space.fields})
    return space, diffusion


def test_equivariant_graph_backbone_passes():
    space, diffusion = graph_setup()
    checked = check_backbone(lambda s, d, num_classes=0: TinyGraphNet(3, 4), space, diffusion, examples=graphs(), name="tiny-graph")
    assert {"equivariance", "mask", "checkpoint"} <= set(checked)


def test_gmm_dataset_passes():
    assert "space" in check_dataset(gmm_dataset, options={"n": 200}, name="gmm")


# --- broken components are caught ------------------------------------------------------------------------
def expect(contract: str, component: str, fn, *args, **kwargs):
    with pytest.raises(ConformanceError) as err:
        fn(*args, **kwargs)
    msg = str(err.value)
    assert f"[{contract}] failed for" in msg and repr(component) in msg, msg
    assert "\n" not in msg and err.value.contract == contract
    return msg


class ShiftedDecode(EuclideanSpace):
    name = "shifted"

    def decode(self, state):
        return [x + 0.5 for x in super().decode(state)]


class LeakyValidate(EuclideanSpace):
    name = "leaky"

    def validate(self, item):
        if not isinstance(item, torch.Tensor):
            raise TypeError("not a tensor")
        return super().validate(item)


class TwoLineError(EuclideanSpace):
    name = "two-line"

    def validate(self, item):
        if not isinstance(item, torch.Tensor):
            raise SpaceError("bad element\nsee the docs")
        return super().validate(item)


class ForgetfulConfig(EuclideanSpace):
    name = "forgetful"

    def __init__(self, dim=2, offset=0.0):
        super().__init__(dim)
        self.offset = offset

    def config(self):
        return {"dim": self.dim}  # drops offset

    def collate(self, items, **kw):
        return State(x=super().collate(items)["x"] + self.offset)

    def decode(self, state):
        return [x - self.offset for x in super().decode(state)]


class NoisyTrain(EuclideanSpace):
    name = "noisy"

    def collate(self, items, *, train=False, generator=None):
        state = super().collate(items)
        return State(x=state["x"] + torch.rand(state["x"].shape)) if train else state  # ignores the generator


class DoubleSpace(EuclideanSpace):
    name = "double"

    def collate(self, items, **kw):
        return State(x=super().collate(items)["x"].double())


class BadTemplate(EuclideanSpace):
    name = "bad-template"

    def template(self, batch_size, stats=None, generator=None):
        return State(x=torch.zeros(batch_size, self.dim + 1))


class UnclampedCube(ContinuousCube):
    name = "unclamped"

    def decode(self, state):
        return [self.low + (x + 1) / 2 * (self.high - self.low) for x in state[self.field_name].float()]


class LyingWrite(EuclideanSpace):
    name = "lying-write"

    def write(self, items, out, **kw):
        return [out / "nothing-here.bin"]


class BadFields(EuclideanSpace):
    name = "bad-fields"

    def __init__(self, dim=2):
        super().__init__(dim)
        self.fields = (FieldSpec("x", kind="spline"),)


class ClampingConstraint(EuclideanSpace):
    """Its constraint clamps every state into [-1, 1]: it changes data that propose no change."""
    name = "clamping-constraint"

    def constraints(self):
        return {"unit-box": "coordinates stay in [-1, 1]"}

    def constraint(self, name):
        return lambda before, after: State({**after, "x": after["x"].clamp(-1, 1)})


class InventingConstraint(EuclideanSpace):
    """Its constraint returns the midpoint of state and proposal: values that are neither."""
    name = "inventing-constraint"

    def constraints(self):
        return {"halfway": "moves only halfway"}

    def constraint(self, name):
        return lambda before, after: State({**after, "x": 0.5 * (before["x"] + after["x"])})


VECTORS = [torch.tensor([0.1, -0.2]), torch.tensor([1.0, 2.0]), torch.tensor([0.3, 0.3])]


@pytest.mark.parametrize("space,contract", [
    (ShiftedDecode(2), "round-trip"), (LeakyValidate(2), "bad-input"), (TwoLineError(2), "bad-input"), (ForgetfulConfig(2, 1.0), "config"),
    (NoisyTrain(2), "determinism"), (DoubleSpace(2), "collate"), (BadTemplate(2), "template"), (LyingWrite(2), "write"), (BadFields(2), "fields"),
    (ClampingConstraint(2), "constraints"), (InventingConstraint(2), "constraints"),
], ids=lambda v: v if isinstance(v, str) else v.name)
def test_broken_space_is_caught(space, contract):
    expect(contract, space.name, check_space, space, VECTORS)


def test_space_that_does_not_clamp_samples_is_caught():
    examples = [torch.rand(1, 2, 2, generator=torch.Generator().manual_seed(i)) for i in range(3)]
    expect("decode-any", "unclamped", check_space, UnclampedCube((1, 2, 2)), examples)


def test_space_registered_under_another_name_is_caught():
    expect("fields", "euclid", check_space, EuclideanSpace(2), VECTORS, registered_name="euclid")


# processes
class WrongPosterior(CategoricalProcess):
    name = "wrong-posterior"

    def posterior_probs(self, xt, x0, t, s):  # forgets the likelihood q(x_t | x_s)
        ab_s = self.alphabar(s)
        p = ab_s * self.pad(x0) + (1 - ab_s) * self.m.to(xt)
        return p / p.sum(-1, keepdim=True)


class WrongReverse(CategoricalProcess):
    name = "wrong-reverse"

    def reverse_probs(self, xt, x0_probs, t, s):
        return self.pad(x0_probs)


class NonComposing(CategoricalProcess):
    name = "non-composing"

    def transition_matrix(self, t, s=None):
        if s is None:
            return super().transition_matrix(t)
        beta = self.alphabar(t) - self.alphabar(s) + 1  # not alphabar_t / alphabar_s
        S = self.num_states
        return beta * torch.eye(S) + (1 - beta) * self.m[None, :].expand(S, S)


class UniformPriorAbsorbing(CategoricalProcess):
    name = "uniform-prior"

    def prior(self, like, generator=None):
        probs = torch.full((*like.shape[:-1], self.num_states), 1.0 / self.num_states)
        return self.sample_onehot(probs, generator)


class SoftStep(CategoricalProcess):
    name = "soft-step"

    def step(self, xt, x0_probs, t, s, generator=None):
        return self.pad(x0_probs)


class UnitPriorVE(VE):
    name = "unit-prior"

    def prior(self, like, generator=None, mask=None):
        return self.noise(like, generator, mask)  # N(0, 1) while sigma_T = 50


class SquaredAlpha(VPCosine):
    name = "squared-alpha"

    def q_sample(self, x0, t, noise):
        return self.alpha(t) ** 2 * x0 + self.sigma(t) * noise


class BadInverse(VPCosine):
    name = "bad-inverse"

    def t_from_log_snr(self, log_snr):
        return super().t_from_log_snr(log_snr) * 0.9


class OverconfidentPosterior(VPCosine):
    name = "overconfident"

    def posterior(self, xt, x0, t, s):
        mean, var = super().posterior(xt, x0, t, s)
        return mean, var * 0.5


class MaskBlind(VPCosine):
    name = "mask-blind"

    def noise(self, like, generator=None, mask=None):
        return torch.randn(like.shape, generator=generator, dtype=like.dtype)


class LateTimes(VPCosine):
    name = "late-times"

    def sample_t(self, n, generator=None):
        return super().sample_t(n, generator) + 1.0


class UnseededTimes(VPCosine):
    name = "unseeded"

    def sample_t(self, n, generator=None):
        return super().sample_t(n, None)


@pytest.mark.parametrize("process,contract", [
    (WrongPosterior(4), "posterior"), (WrongReverse(4, "absorbing"), "posterior"), (NonComposing(4), "transition"),
    (UniformPriorAbsorbing(4, "absorbing"), "prior"), (SoftStep(4), "step"), (UnitPriorVE(), "prior"), (SquaredAlpha(), "marginal"),
    (BadInverse(), "schedule"), (OverconfidentPosterior(), "posterior"), (MaskBlind(), "mask"), (LateTimes(), "attributes"), (UnseededTimes(), "determinism"),
], ids=lambda v: v if isinstance(v, str) else v.name)
def test_broken_process_is_caught(process, contract):
    expect(contract, process.name, check_process, process, n=5000)


def test_process_factory_is_called_with_the_field():
    assert "posterior" in check_process(categorical_uniform, FieldSpec("c", kind="categorical", num_classes=3), name="categorical-uniform", n=5000)
    assert "prior" in check_process(vp_cosine, name="vp-cosine", n=5000)


# backbones
def euclid_setup():
    space = EuclideanSpace(3)
    return space, Diffusion({"x": VPCosine()})


class BatchMixer(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(3, 3)

    def forward(self, state, t, cond=None):
        x = state["x"]
        return {"x": self.lin(x - x.mean(0, keepdim=True))}


class RandomBuffer(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(3, 3)
        self.register_buffer("shift", torch.randn(3), persistent=False)

    def forward(self, state, t, cond=None):
        return {"x": self.lin(state["x"]) + self.shift}


class Jittery(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(3, 3)

    def forward(self, state, t, cond=None):
        return {"x": self.lin(state["x"]) + 0.01 * torch.randn(state["x"].shape)}


class Frozen(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(3, 3)

    def forward(self, state, t, cond=None):
        return {"x": self.lin(state["x"]).detach()}


class WrongShape(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(3, 2)

    def forward(self, state, t, cond=None):
        return {"x": self.lin(state["x"])}


@pytest.mark.parametrize("cls,contract", [(BatchMixer, "batch-independence"), (RandomBuffer, "checkpoint"), (Jittery, "determinism"), (Frozen, "gradients"), (WrongShape, "outputs")],
                         ids=lambda v: v if isinstance(v, str) else v.__name__)
def test_broken_backbone_is_caught(cls, contract):
    space, diffusion = euclid_setup()
    expect(contract, cls.__name__, check_backbone, lambda s, d, num_classes=0: cls(), space, diffusion, name=cls.__name__)


def test_backbone_declaring_equivariance_it_lacks_is_caught():
    space, diffusion = graph_setup()
    msg = expect("equivariance", "positional-net", check_backbone, lambda s, d, num_classes=0: TinyGraphNet(3, 4, positional=True), space, diffusion,
                 examples=graphs(), name="positional-net")
    assert "permutation" in msg


def test_backbone_reading_padding_is_caught():
    space, diffusion = graph_setup()
    expect("mask", "mask-blind-net", check_backbone, lambda s, d, num_classes=0: TinyGraphNet(3, 4, use_mask=False), space, diffusion,
           examples=graphs(), name="mask-blind-net")


def test_factory_returning_a_function_is_caught():
    space, diffusion = euclid_setup()
    expect("build", "not-a-module", check_backbone, lambda s, d, num_classes=0: (lambda state, t, cond=None: state), space, diffusion, name="not-a-module")


# datasets, metrics, samplers, recipes
class Drifting(torch.utils.data.Dataset):
    calls = 0

    def __init__(self):
        Drifting.calls += 1
        self.space = EuclideanSpace(2)
        self.data = torch.randn(10, 2) + Drifting.calls  # not deterministic

    def __len__(self):
        return 10

    def __getitem__(self, i):
        return self.data[i]


def test_broken_datasets_are_caught():
    expect("determinism", "drifting", check_dataset, lambda split="train": Drifting(), name="drifting")

    class NoSpace(torch.utils.data.Dataset):
        def __len__(self):
            return 3

        def __getitem__(self, i):
            return torch.zeros(2)

    expect("factory", "no-space", check_dataset, lambda split="train": NoSpace(), name="no-space")

    class HalfLabelled(Drifting):
        def __init__(self):
            self.space, self.data = EuclideanSpace(2), torch.zeros(10, 2)

        def __getitem__(self, i):
            return (self.data[i], 1) if i % 2 else self.data[i]

    expect("items", "half-labelled", check_dataset, lambda split="train": HalfLabelled(), name="half-labelled")


def test_broken_metrics_are_caught():
    ctx = EvalContext(generated=list(torch.randn(20, 2)), reference=list(torch.randn(20, 2) + 1))
    expect("output", "nan-metric", check_metric, lambda ctx: {"score": math.nan}, ctx, name="nan-metric")
    expect("determinism", "random-metric", check_metric, lambda ctx: {"score": float(torch.rand(()))}, ctx, name="random-metric")
    expect("identity", "inverted-distance", check_metric, lambda ctx: {"distance": 1.0 / (1e-3 + float((torch.stack(ctx.generated) - torch.stack(ctx.reference)).abs().mean()))},
           ctx, name="inverted-distance")


def test_broken_samplers_are_caught():
    from diffkit.samplers import sampler

    expect("declaration", "undeclared", check_sampler, lambda denoiser, state, times, generator=None, callback=None: state, name="undeclared")
    @sampler("do-nothing")
    def do_nothing(denoiser, state, times, generator=None, callback=None):  # asks the denoiser at every level, then ignores it
        for t in times:
            denoiser(state, float(t))
        return state

    expect("quality", "do-nothing", check_sampler, do_nothing, name="do-nothing")

    @sampler("unseeded-sampler", nfe=lambda steps, **_: 0 * steps + 1)
    def jitter(denoiser, state, times, generator=None, callback=None):
        denoiser(state, float(times[-1]))
        return State(x=state["x"] + torch.randn(state["x"].shape))

    expect("determinism", "unseeded-sampler", check_sampler, jitter, name="unseeded-sampler")

    @sampler("cheap-heun", schedule="karras")  # runs Heun, declares one evaluation per level
    def cheap_heun(denoiser, state, times, generator=None, callback=None):
        from diffkit.samplers import heun

        return heun(denoiser, state, times, generator=generator, callback=callback)

    msg = expect("nfe", "cheap-heun", check_sampler, cheap_heun, name="cheap-heun")
    assert "59 times" in msg and "nfe(30) = 30" in msg
    expect("declaration", "other-name", check_sampler, cheap_heun, name="other-name")


def test_builtin_sampler_declarations_pass():
    for name in ("euler", "heun", "dpmpp-2m"):
        assert check_sampler(name, name=name) == ["declaration", "output", "nfe", "determinism", "quality"]


def small_gmm_recipe(**model):
    return {"name": "gmm-tiny", "data": {"dataset": "gmm", "options": {"n": 200}}, "diffusion": {"x": {"process": "vp-cosine"}},
            "model": {"backbone": "mlp", "parameterization": "v", "options": {"hidden": 16, "depth": 1}, **model}, "eval": {"metrics": ["sliced-wasserstein"]}}


def test_recipe_passes_and_broken_recipes_are_caught():
    assert check_recipe(small_gmm_recipe(), name="gmm-tiny") == ["load", "train", "checkpoint", "sample", "evaluate"]

    class NaNNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(2, 2)

        def forward(self, state, t, cond=None):
            return {"x": self.lin(state["x"]) * math.nan}

    registry.register("backbones", "nan-net", lambda space, diffusion, num_classes=0: NaNNet())
    registry.register("metrics", "failing-metric", lambda ctx: 1 / 0)
    try:
        expect("train", "gmm-nan", check_recipe, {**small_gmm_recipe(backbone="nan-net"), "name": "gmm-nan"}, name="gmm-nan")
        broken_eval = {**small_gmm_recipe(), "eval": {"metrics": ["failing-metric"]}}
        expect("evaluate", "gmm-bad-metric", check_recipe, broken_eval, name="gmm-bad-metric")
        expect("load", "no-model", check_recipe, {"name": "no-model", "data": {"dataset": "gmm"}, "diffusion": {}}, name="no-model")
    finally:
        registry.unregister("backbones", "nan-net")
        registry.unregister("metrics", "failing-metric")


def test_unknown_distribution_is_reported():
    pairs = plugin_checks("diffkit-does-not-exist")
    assert [cid for cid, _ in pairs] == ["plugin:diffkit-does-not-exist"]
    expect("entry-points", "diffkit-does-not-exist", check_plugin, "diffkit-does-not-exist")
