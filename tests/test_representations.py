"""Two-stage generation: the representation contract, its conformance check, caching, and a run end to end."""
import json

import pytest
import torch

from diffkit.recipe import build_run, load_recipe
from diffkit.representations import PCARepresentation, Representation, RepresentationError, build_representation, fit_representation
from diffkit.runs import generate, load_run, sample_run
from diffkit.spaces import EuclideanSpace
from diffkit.spaces.latent import LatentSpace
from diffkit.testing import ConformanceError, check_representation, check_space, private_cache
from diffkit.training.trainer import train


def _points(n=400, seed=0):
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(n, 3, generator=g)
    return list(a @ torch.tensor([[3.0, 0.5, 0.0], [0.0, 1.0, 0.2], [0.0, 0.0, 0.1]]) + torch.tensor([1.0, -2.0, 0.5]))


def test_pca_keeps_the_contract_and_its_stated_bound():
    rep = PCARepresentation(EuclideanSpace(3))
    rep.fit(_points())
    figures = check_representation(rep, _points(20, seed=1), bound=1e-4, registered_name="pca")
    assert figures["max_error"] < 1e-4 and figures["code_shape"] == {"x": [3]}
    codes = torch.stack(rep.encode(_points()))
    assert torch.allclose(codes.mean(0), torch.zeros(3), atol=1e-4) and torch.allclose(codes.std(0), torch.ones(3), atol=1e-2)  # whitened


def test_check_representation_fails_a_lossy_first_stage_and_a_random_one():
    lossy = PCARepresentation(EuclideanSpace(3), dim=1)  # drops two components: the round trip cannot hold 1e-3
    lossy.fit(_points())
    with pytest.raises(ConformanceError, match=r"\[round-trip\]"):
        check_representation(lossy, _points(20, seed=1), bound=1e-3)

    class Noisy(PCARepresentation):
        def encode(self, elements):
            return [c + 1e-3 * torch.randn(c.shape) for c in super().encode(elements)]

    noisy = Noisy(EuclideanSpace(3))
    noisy.fit(_points())
    with pytest.raises(ConformanceError, match=r"\[determinism\]"):
        check_representation(noisy, _points(20, seed=1), bound=1.0)


def test_latent_space_keeps_the_space_contract(tmp_path):
    space = LatentSpace([2, 3, 3])
    check_space(space, [torch.randn(2, 3, 3), torch.randn(2, 3, 3) * 5], registered_name="latent")
    assert space.read(space.write([torch.ones(2, 3, 3)], tmp_path)[0])[0][0].sum() == 18


def test_recipe_errors_name_the_fix():
    with pytest.raises(RepresentationError, match="no representation named 'nope'"):
        build_representation({"name": "nope"}, EuclideanSpace(2))
    with pytest.raises(RepresentationError, match="unknown key"):
        build_representation({"name": "pca", "opts": {}}, EuclideanSpace(2))
    with pytest.raises(RepresentationError, match="do not fit representation 'pca'"):
        build_representation({"name": "pca", "options": {"width": 3}}, EuclideanSpace(2))
    with pytest.raises(RepresentationError, match="1..2"):
        build_representation({"name": "pca", "options": {"dim": 5}}, EuclideanSpace(2))


def test_a_fitted_first_stage_is_cached_by_its_configuration(tmp_path):
    data = {"dataset": "toy", "options": {"n": 400}}
    with private_cache(tmp_path):
        first = PCARepresentation(EuclideanSpace(3))
        report = fit_representation(first, _points(), None, data=data)
        assert not report["cached"] and len(list((tmp_path / "representations").glob("pca-*.safetensors"))) == 1
        calls = []

        class Counting(PCARepresentation):
            def fit(self, elements, labels=None):
                calls.append(1)
                return super().fit(elements, labels)

        again = Counting(EuclideanSpace(3))
        assert fit_representation(again, _points(), None, data=data)["cached"] and not calls  # same config: read, not refitted
        assert torch.equal(again.mean, first.mean)
        fit_representation(Counting(EuclideanSpace(3)), _points(), None, data={**data, "options": {"n": 401}})
        assert calls == [1]  # other data: another key, fitted


def _two_stage_recipe():
    recipe = load_recipe("gmm-smoke")
    recipe["representation"] = {"name": "pca"}
    recipe["train"].update(steps=3, checkpoint_every=100, log_every=1)
    recipe["sample"].update(n=16, steps=4)
    return recipe


def test_build_run_diffuses_the_representation_and_generate_decodes(tmp_path):
    with private_cache(tmp_path):
        run = build_run(_two_stage_recipe())
    assert run.representation.name == "pca" and run.data_space.name == "euclidean"
    codes = torch.stack([x for x in run.encoded.codes])
    assert torch.allclose(codes.std(0), torch.ones(2), atol=0.05)  # the diffusion sees whitened codes, not the raw ring
    raw = torch.stack([i[0] if isinstance(i, tuple) else i for i in run.dataset])
    assert raw.std(0).min() > 1.3  # the data itself is not whitened (the ring has radius 2)
    items, _, _ = generate(run, 8, steps=2)
    back = torch.stack(run.representation.encode(items))
    assert torch.stack(items).shape == (8, 2) and torch.isfinite(back).all()


def test_two_stage_run_trains_saves_its_first_stage_and_samples_without_the_cache(tmp_path):
    with private_cache(tmp_path / "cache"):
        train(_two_stage_recipe(), tmp_path / "run", progress=False)
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["representation"]["name"] == "pca" and config["space"]["name"] == "euclidean" and "representation.safetensors" in config["checksums"]
    assert config["providers"]["representations/pca"] == "diffkit"
    with private_cache(tmp_path / "empty-cache"):  # sampling reads the weights saved beside the model, not the cache
        run = load_run(tmp_path / "run")
        summary = sample_run(tmp_path / "run", n=8, steps=2, progress=False)
    trained = PCARepresentation(EuclideanSpace(2))
    from safetensors.torch import load_file

    from diffkit.rundir import tensor_path

    trained.load_state_dict(load_file(str(tensor_path(tmp_path / "run", "representation.safetensors"))))
    assert torch.equal(run.representation.mean, trained.mean) and not torch.equal(trained.mean, torch.zeros(2))
    assert summary["n"] == 8 and any(f.endswith(".safetensors") or f.endswith(".png") for f in summary["files"])


def test_a_shipped_two_stage_model_carries_its_first_stage(tmp_path):
    """export cuts a run to what sampling reads: for a two-stage run that includes the first stage's weights."""
    from diffkit.pretrained import export, verify

    with private_cache(tmp_path / "cache"):
        train(_two_stage_recipe(), tmp_path / "run", progress=False)
    card = export(tmp_path / "run", tmp_path / "shipped" / "pca-two-stage", figures={"sampler": "ddim", "steps": 2, "n": 8, "seed": 0, "metrics": {}},
                  made_by="test", tolerance={"relative": 0.1})
    assert set(card["sha256"]) == {"config.json", "model.safetensors", "representation.safetensors"}
    verify(tmp_path / "shipped" / "pca-two-stage")
    with private_cache(tmp_path / "empty-cache"):
        summary = sample_run(tmp_path / "shipped" / "pca-two-stage", n=8, steps=2, progress=False, out=tmp_path / "samples")
    assert summary["n"] == 8


def test_a_run_whose_first_stage_weights_are_corrupt_is_refused(tmp_path):
    from diffkit.rundir import CheckpointError, tensor_path

    with private_cache(tmp_path / "cache"):
        train(_two_stage_recipe(), tmp_path / "run", progress=False)
    path = tensor_path(tmp_path / "run", "representation.safetensors")  # inside the current checkpoint's folder
    path.write_bytes(path.read_bytes()[:-4] + b"\0\0\0\0")
    with pytest.raises(CheckpointError, match="representation.safetensors does not match its recorded checksum"):
        load_run(tmp_path / "run")


def test_fixed_representation_base_refuses_weights():
    with pytest.raises(RepresentationError, match="fixed and takes no weights"):
        Representation().load_state_dict({"w": torch.zeros(1)})


def test_a_first_stage_is_refitted_under_options_that_keep_its_codes_and_refused_under_others(tmp_path):
    """refit_first_stage: a new first stage for a trained diffusion stage (e.g. a better vocoder), written to a new
    run with the model's weights untouched; options that change the codes the diffusion learned are refused."""
    from diffkit.rundir import load_tensors, read_config
    from diffkit.runs import refit_first_stage

    with private_cache(tmp_path / "cache"):
        train(_two_stage_recipe(), tmp_path / "run", progress=False)
        report = refit_first_stage(tmp_path / "run", tmp_path / "refit", {"dim": 2})
        with pytest.raises(RepresentationError, match="change the first stage's codes"):
            refit_first_stage(tmp_path / "run", tmp_path / "refused", {"dim": 1})
        with pytest.raises(ValueError, match="writes a new run"):
            refit_first_stage(tmp_path / "run", tmp_path / "run", {"dim": 2})
    assert not (tmp_path / "refused").exists() and "key" in report
    old, new = read_config(tmp_path / "run"), read_config(tmp_path / "refit")
    assert new["recipe"]["representation"]["options"] == {"dim": 2} and new["representation"]["config"] == {"dim": 2}
    assert new["refitted_from"] == str(tmp_path / "run") and new["step"] == old["step"]
    before, after = load_tensors(tmp_path / "run", "model.safetensors", old), load_tensors(tmp_path / "refit", "model.safetensors", new)
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    with private_cache(tmp_path / "empty-cache"):
        summary = sample_run(tmp_path / "refit", n=8, steps=2, progress=False)
    assert summary["n"] == 8
    gmm = tmp_path / "one-stage"
    with private_cache(tmp_path / "cache"):
        recipe = _two_stage_recipe()
        del recipe["representation"]
        train(recipe, gmm, progress=False)
        with pytest.raises(RepresentationError, match="one-stage run"):
            refit_first_stage(gmm, tmp_path / "x", {"dim": 2})


class ApartPCA(PCARepresentation):
    """PCA whose decoder (the map back from codes) is fitted apart from its codes, as a vocoder is beside log-mel frames.
    Until ``fit_decoder`` has run, ``decode`` returns the mean only. ``gate``: a file the decoder's fit waits for, so a
    test controls when it finishes; ``fail``: the decoder's fit raises."""

    name = "apart-pca"
    decoder_fits_apart = True

    def __init__(self, space, dim=None, gate="", fail=False):
        super().__init__(space, dim)
        self.gate, self.fail = str(gate), bool(fail)
        self.back = torch.zeros(self.dim, space.dim)

    def fit(self, elements, labels=None):
        return {**self.fit_codes(elements, labels), **self.fit_decoder(elements, labels)}

    def fit_codes(self, elements, labels=None):
        return PCARepresentation.fit(self, elements, labels)

    def fit_decoder(self, elements, labels=None):
        import os
        import time
        from pathlib import Path

        deadline = time.monotonic() + 120
        while self.gate and not Path(self.gate).exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        if self.fail:
            raise RuntimeError("the decoder's fit failed on purpose")
        self.back = (self.components * self.scale).T.contiguous()
        return {"decoder_pid": os.getpid()}

    def decode(self, codes):
        z = torch.stack([self.space.validate(c) for c in codes])
        return list(self.mean + z @ self.back)

    def config(self):
        return {"dim": self.dim, "gate": self.gate, "fail": self.fail}

    def state_dict(self):
        return {**super().state_dict(), "back": self.back}

    def load_state_dict(self, tensors):
        super().load_state_dict(tensors)
        self.back = tensors["back"].float()


def _beside_recipe(**options):
    recipe = _two_stage_recipe()
    recipe["representation"] = {"name": "apart-pca", "options": options, "fit": "beside"}
    return recipe


@pytest.fixture
def apart_pca():
    from diffkit import registry

    registry.register("representations", "apart-pca", ApartPCA)
    yield ApartPCA
    registry.unregister("representations", "apart-pca")


def test_a_decoder_fitted_beside_the_diffusion_joins_the_run_at_its_end(tmp_path, apart_pca):
    """[representation] fit = "beside": the codes are fitted first, the decoder in a process of its own while the
    diffusion trains; a checkpoint written meanwhile refuses to decode; the last one holds both stages, and the
    cache then holds the whole fit, so the next run starts no process."""
    import os

    from diffkit.rundir import read_config
    from diffkit.training.trainer import Trainer

    gate = tmp_path / "gate"
    recipe = _beside_recipe(gate=str(gate))
    with private_cache(tmp_path / "cache"):
        trainer = Trainer(recipe, tmp_path / "run", progress=False)
        assert trainer.run.decoder_pending and trainer.run.extra["representation_report"]["decoder"] == "fitting beside the diffusion"
        codes = torch.stack(trainer.run.encoded.codes)
        assert torch.allclose(codes.std(0), torch.ones(2), atol=0.05)  # the codes were fitted before the diffusion starts
        trainer.save_checkpoint()  # the decoder is still waiting for its gate
        assert read_config(tmp_path / "run")["representation"]["report"]["decoder_pending"] is True
        with pytest.raises(RepresentationError, match="still being fitted beside the diffusion.*refit-first-stage"):
            generate(load_run(tmp_path / "run"), 4, steps=2)
        gate.touch()
        trainer.fit()
        report = read_config(tmp_path / "run")["representation"]["report"]
        assert report["fit"] == "beside" and "decoder_pending" not in report and report["decoder_pid"] != os.getpid()
        run = load_run(tmp_path / "run")
        x = torch.stack(_points()[:50])[:, :2]
        back = torch.stack(run.representation.decode(run.representation.encode(list(x))))
        assert torch.allclose(back, x, atol=1e-4)  # the decoder was fitted (the unfitted one returns the mean)
        items, _, _ = generate(run, 8, steps=2)
        assert torch.stack(items).shape == (8, 2)
        again = build_run(recipe)
        assert not again.decoder_pending and again.extra["representation_report"]["cached"]
        assert torch.equal(again.representation.back, run.representation.back)


def test_a_failed_decoder_beside_the_diffusion_is_reported_and_the_diffusion_kept(tmp_path, apart_pca):
    from diffkit.rundir import read_config

    with private_cache(tmp_path / "cache"):
        with pytest.raises(RepresentationError, match="fitted beside the diffusion, failed .*refit-first-stage"):
            train(_beside_recipe(fail=True), tmp_path / "run", progress=False)
        config = read_config(tmp_path / "run")
        assert config["step"] == 3 and config["representation"]["report"]["decoder_pending"] is True
        with pytest.raises(RepresentationError, match="still being fitted"):
            generate(load_run(tmp_path / "run"), 4, steps=2)


def test_fit_beside_is_refused_where_the_first_stage_cannot_split(tmp_path):
    recipe = _two_stage_recipe()
    with private_cache(tmp_path):
        recipe["representation"]["fit"] = "beside"
        with pytest.raises(RepresentationError, match="decoder fits apart from its codes; representation 'pca' does not"):
            build_run(recipe)
        recipe["representation"]["fit"] = "sideways"
        with pytest.raises(RepresentationError, match="fit must be one of before, beside"):
            build_run(recipe)


class TunablePCA(PCARepresentation):
    """PCA with a learned linear decoder, ``decode(z) = mean + z @ back``, which ``tune_decoder`` refits by least
    squares on pairs (a code, its element), taking the diffusion's reconstruction as the code for a ``share`` of them.
    ``spoil``: the tuning also moves the mean, so ``encode`` changes (tune_first_stage must refuse that)."""

    name = "tunable-pca"
    decoder_tunes_on_codes = True

    def __init__(self, space, dim=None, spoil=False):
        super().__init__(space, dim)
        self.spoil = bool(spoil)
        self.back = torch.zeros(self.dim, space.dim)

    def fit(self, elements, labels=None):
        report = PCARepresentation.fit(self, elements, labels)
        self.back = (self.components * self.scale).T.contiguous()
        return report

    def tune_decoder(self, elements, codes, labels=None, *, minutes, share=0.8, seed=0):
        g = torch.Generator().manual_seed(seed)
        take = torch.rand(len(codes), generator=g) < share
        own = torch.stack(self.encode(elements))
        z = torch.where(take[:, None], torch.stack(codes), own)
        self.back = torch.linalg.lstsq(z, torch.stack(elements) - self.mean).solution
        if self.spoil:
            self.mean = self.mean + 1.0
        return {"rows_from_diffusion": int(take.sum()), "minutes": minutes}

    def decode(self, codes):
        z = torch.stack([self.space.validate(c) for c in codes])
        return list(self.mean + z @ self.back)

    def config(self):
        return {"dim": self.dim, "spoil": self.spoil}

    def state_dict(self):
        return {**super().state_dict(), "back": self.back}

    def load_state_dict(self, tensors):
        super().load_state_dict({k: v for k, v in tensors.items() if k != "back"})
        self.back = tensors["back"].float()


@pytest.fixture
def tunable_pca():
    from diffkit import registry

    registry.register("representations", "tunable-pca", TunablePCA)
    yield TunablePCA
    registry.unregister("representations", "tunable-pca")


def _tunable_run(tmp_path, **options):
    recipe = _two_stage_recipe()
    recipe["representation"] = {"name": "tunable-pca", "options": options}
    with private_cache(tmp_path / "cache"):
        train(recipe, tmp_path / "run", progress=False)
    return tmp_path / "run"


def test_diffusion_reconstructions_keep_each_elements_order_and_come_from_the_levels_asked(tmp_path, tunable_pca):
    """From the sampler's last level (t near 0) a reconstruction is its own element's code, whatever the model; from its
    first level (nearly pure noise) it is not. Every element gets one, in order, and the report names the start times."""
    from diffkit.evaluation import split_items
    from diffkit.runs import diffusion_reconstructions

    run = load_run(_tunable_run(tmp_path))
    elements, labels = split_items(run.split("train"))
    elements = elements[:60]
    codes = torch.stack(run.representation.encode(elements))
    near, report = diffusion_reconstructions(run, elements, labels, steps=10, last=(1, 1), seed=0)
    far, _ = diffusion_reconstructions(run, elements, labels, steps=10, last=(10, 10), seed=0)
    assert len(near) == len(far) == 60 and report["n"] == 60 and report["last"] == [1, 1] and len(report["start_times"]) == 1
    near_gap, far_gap = (torch.stack(near) - codes).norm(dim=1), (torch.stack(far) - codes).norm(dim=1)
    assert near_gap.max() < 0.1 and far_gap.mean() > 0.5
    again, _ = diffusion_reconstructions(run, elements, labels, steps=10, last=(2, 4), seed=3)
    same, _ = diffusion_reconstructions(run, elements, labels, steps=10, last=(2, 4), seed=3)
    assert all(torch.equal(a, b) for a, b in zip(again, same))  # a seed fixes them
    with pytest.raises(ValueError, match="1 <= first <= second <= steps"):
        diffusion_reconstructions(run, elements, labels, steps=10, last=(4, 11))


def test_diffusion_reconstructions_keep_the_recipes_sampling_constraint(tmp_path, tunable_pca, monkeypatch):
    """A recipe's ``[sample] constraint`` is kept by the reconstructions as by sampling: under a constraint that undoes
    every proposed move, each reconstruction is the noised code the sampler started from; without it, it is not."""
    from diffkit.evaluation import split_items
    from diffkit.runs import diffusion_reconstructions

    run = load_run(_tunable_run(tmp_path))
    elements, labels = split_items(run.split("train"))
    elements = elements[:40]
    starts = []

    def undo_every_move(x_t, x_s):
        starts.append(x_t)
        return x_t

    monkeypatch.setattr(run.space, "constraints", lambda: {"frozen": "nothing moves"}, raising=False)
    monkeypatch.setattr(run.space, "constraint", lambda name: undo_every_move, raising=False)
    free, _ = diffusion_reconstructions(run, elements, labels, steps=10, last=(6, 6), seed=0)
    assert not starts
    run.recipe["sample"]["constraint"] = "frozen"
    frozen, _ = diffusion_reconstructions(run, elements, labels, steps=10, last=(6, 6), seed=0)
    assert len(starts) == 6  # one call per level, one batch
    start = torch.stack(run.space.decode(starts[0]))
    assert torch.allclose(torch.stack(frozen), start) and not torch.allclose(torch.stack(free), start, atol=1e-3)


def test_a_decoder_is_tuned_on_the_diffusions_codes_and_the_diffusion_kept(tmp_path, tunable_pca):
    """tune_first_stage writes a new run: the model's weights as they were, the decoder refitted on reconstructions
    (so its weights changed), codes unchanged, the tuning's report recorded; it samples without the cache."""
    from diffkit.rundir import load_tensors, read_config
    from diffkit.runs import tune_first_stage

    source = _tunable_run(tmp_path)
    with private_cache(tmp_path / "cache"):
        report = tune_first_stage(source, tmp_path / "tuned", minutes=0.5, share=0.75, last=(2, 3), steps=4)
    assert report["rows_from_diffusion"] > 0 and report["reconstructions"]["last"] == [2, 3] and report["share"] == 0.75
    old, new = read_config(source), read_config(tmp_path / "tuned")
    assert new["tuned_from"] == str(source) and new["representation"]["report"]["tune"]["minutes"] == 0.5
    assert new["recipe"] == old["recipe"] and new["step"] == old["step"]
    before, after = load_tensors(source, "model.safetensors", old), load_tensors(tmp_path / "tuned", "model.safetensors", new)
    assert all(torch.equal(before[k], after[k]) for k in before)
    rep_before = load_tensors(source, "representation.safetensors", old)
    rep_after = load_tensors(tmp_path / "tuned", "representation.safetensors", new)
    assert torch.equal(rep_before["mean"], rep_after["mean"]) and not torch.allclose(rep_before["back"], rep_after["back"])
    with private_cache(tmp_path / "empty-cache"):
        assert sample_run(tmp_path / "tuned", n=8, steps=2, progress=False)["n"] == 8


def test_tuning_is_refused_where_it_cannot_apply_or_would_change_the_codes(tmp_path, tunable_pca):
    from diffkit.runs import tune_first_stage

    source = _tunable_run(tmp_path / "a")
    with pytest.raises(ValueError, match="writes a new run"):
        tune_first_stage(source, source, minutes=1)
    with pytest.raises(ValueError, match="share must lie in"):
        tune_first_stage(source, tmp_path / "x", minutes=1, share=0)
    with pytest.raises(ValueError, match="minutes must be a positive number"):
        tune_first_stage(source, tmp_path / "x", minutes=0)
    spoiled = _tunable_run(tmp_path / "b", spoil=True)
    with pytest.raises(RepresentationError, match="changed the codes"):
        tune_first_stage(spoiled, tmp_path / "y", minutes=1, steps=10)
    with private_cache(tmp_path / "cache"):
        train(_two_stage_recipe(), tmp_path / "pca", progress=False)  # plain PCA: a fixed decoder
    with pytest.raises(RepresentationError, match="no learned decoder to tune"):
        tune_first_stage(tmp_path / "pca", tmp_path / "z", minutes=1)
    recipe = _two_stage_recipe()
    del recipe["representation"]
    train(recipe, tmp_path / "one", progress=False)
    with pytest.raises(RepresentationError, match="one-stage run"):
        tune_first_stage(tmp_path / "one", tmp_path / "w", minutes=1)
    assert not any((tmp_path / d).exists() for d in "xyzw")


def test_a_recipe_tunes_its_decoder_after_the_diffusion_and_its_last_checkpoint_holds_it(tmp_path, tunable_pca):
    """[representation] tune = {...}: training ends by tuning the decoder on its own diffusion's reconstructions;
    the last checkpoint holds the tuned decoder and the report, the cache keeps the decoder as fitted."""
    from diffkit.representations import build_representation, fit_representation
    from diffkit.rundir import load_tensors, read_config

    recipe = _two_stage_recipe()
    recipe["representation"] = {"name": "tunable-pca", "tune": {"minutes": 0.1, "share": 1.0, "last": [1, 2], "steps": 4}}
    with private_cache(tmp_path / "cache"):
        train(recipe, tmp_path / "run", progress=False)
        config = read_config(tmp_path / "run")
        tune = config["representation"]["report"]["tune"]
        assert tune["share"] == 1.0 and tune["reconstructions"]["last"] == [1, 2] and tune["rows_from_diffusion"] > 0
        run = load_run(tmp_path / "run")
        fitted = build_representation({"name": "tunable-pca"}, run.data_space)
        elements = [x for x, *_ in (i if isinstance(i, tuple) else (i,) for i in run.split("train"))]
        assert fit_representation(fitted, elements, None, data=recipe["data"], seed=recipe["seed"])["cached"]  # the cache: as fitted
    tuned = load_tensors(tmp_path / "run", "representation.safetensors", config)
    assert torch.equal(tuned["mean"], fitted.mean) and not torch.allclose(tuned["back"], fitted.back)
    events = [json.loads(line).get("event") for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert "first stage's decoder tuned" in events


def test_a_tune_table_is_checked_before_anything_is_fitted(tmp_path, tunable_pca):
    for table, match in [({"share": 0.5}, "at least minutes"), ({"minutes": 1, "levels": 3}, "unknown key"), ("5", "at least minutes"),
                         ({"minutes": 0}, "minutes must be a number > 0"), ({"minutes": 1, "share": 1.5}, "share must be a number in"),
                         ({"minutes": 1, "last": [5, 3]}, "last must be two whole numbers"), ({"minutes": 1, "steps": 4}, "steps must be a whole number >= last")]:
        recipe = _two_stage_recipe()
        recipe["representation"] = {"name": "tunable-pca", "tune": table}
        with private_cache(tmp_path / "cache"), pytest.raises(RepresentationError, match=match):
            build_run(recipe)
    recipe = _two_stage_recipe()
    recipe["representation"]["tune"] = {"minutes": 1}  # plain PCA: a fixed decoder
    with private_cache(tmp_path / "cache"), pytest.raises(RepresentationError, match="cannot, so remove the table"):
        build_run(recipe)
