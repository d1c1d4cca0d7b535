"""Conditioning fields (``FieldSpec.diffused = False``): computed by the space, never noised, carried through
training and sampling to the backbone, and taken from the reference split at sampling time."""
import json

import pytest
import torch
from safetensors.torch import load_file

from diffkit import registry
from diffkit.oracle import gmm_dataset
from diffkit.recipe import RecipeError, build_run, load_dataset, load_recipe
from diffkit.runs import generate, reference_conditioning, sample_run
from diffkit.spaces import EuclideanSpace
from diffkit.spaces.base import FieldSpec
from diffkit.state import State
from diffkit.training.trainer import Trainer


class MirroredSpace(EuclideanSpace):
    """Vectors ``x``; with ``mirror`` the space also computes a conditioning field ``c = -x``."""

    name = "test-mirrored"

    def __init__(self, dim: int, mirror: bool = False):
        super().__init__(dim)
        self.mirror = bool(mirror)
        if self.mirror:
            self.fields = (FieldSpec("x"), FieldSpec("c", diffused=False))

    def collate(self, items, *, train=False, generator=None):
        state = super().collate(items)
        if self.mirror:
            state["c"] = -state["x"]
        return state

    def template(self, batch_size, stats=None, generator=None):
        state = super().template(batch_size)
        if self.mirror:
            state["c"] = torch.zeros_like(state["x"])
        return state

    def config(self):
        return {"dim": self.dim, "mirror": self.mirror}


class FromConditioning(torch.nn.Module):
    """Predicts ``x0 = -c + w x_t`` (``w`` starts at 0, so the prediction is the element ``c`` came from) and keeps the last ``c`` it saw."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(()))
        self.seen = None

    def forward(self, state, t, cond=None):
        self.seen = state["c"].detach().clone()
        return {"x": -state["c"] + self.w * state["x"]}


def mirrored_dataset(split="train", n=64, seed=0):
    ds = gmm_dataset("ring8", n=n, seed=seed, split=split)
    ds.space = MirroredSpace(2)
    return ds


@pytest.fixture
def components():
    registry.register("spaces", "test-mirrored", MirroredSpace)
    registry.register("datasets", "test-mirrored", mirrored_dataset)
    registry.register("backbones", "test-from-conditioning", lambda space, diffusion, num_classes=0: FromConditioning())
    yield
    registry.unregister("spaces", "test-mirrored")
    registry.unregister("datasets", "test-mirrored")
    registry.unregister("backbones", "test-from-conditioning")


def recipe(**data):
    return load_recipe({
        "name": "mirrored", "seed": 0,
        "data": {"dataset": "test-mirrored", "options": {"n": 64}, "space": {"mirror": True}, **data},
        "diffusion": {"x": {"process": "vp-cosine"}},
        "model": {"backbone": "test-from-conditioning", "parameterization": "x0"},
        "train": {"steps": 3, "batch_size": 16, "checkpoint_every": 3, "log_every": 1},
        "sample": {"sampler": "ddim", "steps": 5, "n": 10, "batch_size": 4},
        "eval": {"metrics": [], "reference": "test"},
    })


def test_recipe_space_options_rebuild_the_space_and_unknown_ones_are_refused(components):
    assert load_dataset(recipe(), "train").space.config() == {"dim": 2, "mirror": True}
    with pytest.raises(RecipeError, match=r"space option\(s\) \['mirrors'\] are not options of space 'test-mirrored'; its options are \['dim', 'mirror'\]") as err:
        load_dataset(recipe(space={"mirrors": True}), "train")
    assert "\n" not in str(err.value)


def test_conditioning_fields_get_no_process_and_naming_one_is_an_error(components):
    run = build_run(recipe())
    assert list(run.diffusion.processes) == ["x"]
    bad = recipe()
    bad["diffusion"]["c"] = {"process": "vp-cosine"}
    with pytest.raises(RecipeError, match=r"conditioning field\(s\) \['c'\].*remove \[diffusion.c\]"):
        build_run(bad)


def test_noise_and_prior_carry_conditioning_unchanged(components):
    run = build_run(recipe())
    x0 = run.space.collate([torch.tensor([1.0, 2.0]), torch.tensor([3.0, -4.0])])
    noisy, _ = run.diffusion.noise(x0, torch.tensor([0.5, 0.9]), torch.Generator().manual_seed(0))
    assert torch.equal(noisy["c"], x0["c"]) and not torch.equal(noisy["x"], x0["x"])
    template = run.space.template(2)
    template["c"] = torch.tensor([[5.0, 6.0], [7.0, 8.0]])
    prior = run.diffusion.prior(template, torch.Generator().manual_seed(0))
    assert torch.equal(prior["c"], template["c"]) and prior["x"].abs().sum() > 0


def test_generate_pairs_sample_i_with_reference_element_i(components):
    run = build_run(recipe())
    items, labels, _ = generate(run, 10, sampler="ddim", steps=5, batch_size=4)  # three batches: rows must stay aligned
    reference = mirrored_dataset("test").data[:10]
    assert labels is None and torch.allclose(torch.stack(items), reference, atol=1e-5)
    cond, _, elements = reference_conditioning(run, 10)
    assert torch.equal(cond["c"], -reference) and len(elements) == 10
    with pytest.raises(ValueError, match="conditioning must hold"):
        generate(run, 10, conditioning=State(c=cond["c"][:3]))
    with pytest.raises(RecipeError, match="n=65 exceeds its 64 elements"):
        reference_conditioning(run, 65)


def test_training_carries_conditioning_and_sample_writes_the_reference_beside(components, tmp_path):
    trainer = Trainer(recipe(), tmp_path / "run", progress=False)
    trainer.fit()
    train_rows = {tuple(r.tolist()) for r in -mirrored_dataset("train").data}
    assert trainer.backbone.seen.shape == (16, 2) and all(tuple(r.tolist()) in train_rows for r in trainer.backbone.seen)
    summary = sample_run(tmp_path / "run", n=6, progress=False)
    samples = load_file(str(tmp_path / "run" / "samples" / "samples.safetensors"))["x"]
    reference = load_file(str(tmp_path / "run" / "samples" / "reference" / "samples.safetensors"))["x"]
    assert torch.allclose(samples, reference, atol=1e-5) and torch.equal(reference, mirrored_dataset("test").data[:6])
    assert any("reference" in f for f in summary["files"])


def test_sample_loads_each_split_once(components, tmp_path):
    """Conditioning and metrics both read the reference split, novelty the training split: one load each."""
    Trainer(recipe(), tmp_path / "run", progress=False).fit()
    config_path = tmp_path / "run" / "config.json"
    config = json.loads(config_path.read_text())
    config["recipe"]["eval"]["metrics"] = ["sliced-wasserstein"]
    config_path.write_text(json.dumps(config))
    loads = []

    def counting(split="train", **options):
        loads.append(split)
        return mirrored_dataset(split, **options)

    registry.register("datasets", "test-mirrored", counting)
    summary = sample_run(tmp_path / "run", n=6, progress=False)
    assert summary["metrics"]["sliced_wasserstein"] >= 0
    assert sorted(loads) == ["test", "train"], loads
