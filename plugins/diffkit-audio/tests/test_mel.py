"""The log-mel first stage: its contract and stated round-trip bound, the vocoder decoder, and the two-stage recipe."""
import json

import pytest
import torch

from diffkit.recipe import load_recipe
from diffkit.representations import RepresentationError
from diffkit.testing import ConformanceError, check_recipe, check_representation

from diffkit_audio.mel import LogMel, spectral_convergence

QUICK_DATA = {"n_per_class": 30, "eval_per_class": 10, "seed": 0}


@pytest.fixture(scope="module")
def quick_train(audio_cache):
    from diffkit_audio.data import spoken_digits

    return spoken_digits("train", **QUICK_DATA)


def _waves(dataset, k=None):
    return [dataset[i][0] for i in range(len(dataset) if k is None else k)]


def test_griffin_lim_round_trip_keeps_its_stated_bound(quick_train, digits_test):
    rep = LogMel(quick_train.space, n_mels=40, hop=64)
    rep.fit(_waves(quick_train))
    figures = check_representation(rep, _waves(digits_test, 12), bound=0.75, error=spectral_convergence, registered_name="log-mel")
    assert figures["code_shape"] == {"x": [1, 40, 64]} and figures["mean_error"] < 0.5
    codes = torch.stack(rep.encode(_waves(quick_train)))
    assert codes.mean((0, 1, 3)).abs().max() < 1e-3 and (codes.std((0, 1, 3)) - 1).abs().max() < 1e-2  # standardised per band


def test_a_wrong_standardisation_breaks_the_bound(quick_train, digits_test):
    rep = LogMel(quick_train.space)
    rep.fit(_waves(quick_train))
    wrong = LogMel(quick_train.space)
    wrong.load_state_dict({"band.mean": rep.mean, "band.std": rep.std * 3})  # decodes with other scales than it encoded with
    wrong.encode = rep.encode
    with pytest.raises(ConformanceError, match=r"\[round-trip\]"):
        check_representation(wrong, _waves(digits_test, 6), bound=0.75, error=spectral_convergence)


def test_options_that_do_not_fit_are_refused(quick_train):
    with pytest.raises(RepresentationError, match="not a whole number of hops"):
        LogMel(quick_train.space, hop=100)
    with pytest.raises(RepresentationError, match="do not fit its options"):
        LogMel(quick_train.space).load_state_dict({"band.mean": torch.zeros(20), "band.std": torch.ones(20)})


def test_a_trained_vocoder_decodes_the_frames_and_a_mismatched_one_is_refused(tmp_path, quick_train, digits_test):
    from diffkit.training.trainer import train

    vocoder = load_recipe("spoken-digits-vocoder-smoke")
    vocoder["train"].update(steps=2, checkpoint_every=2, log_every=1)
    train(vocoder, tmp_path / "vocoder", progress=False)
    rep = LogMel(quick_train.space, vocoder=str(tmp_path / "vocoder"), vocoder_steps=2)
    rep.fit(_waves(quick_train))
    waves = rep.decode(rep.encode(_waves(digits_test, 3)))
    assert len(waves) == 3 and waves[0].shape == (1, quick_train.space.length) and all(torch.isfinite(w).all() for w in waves)
    with pytest.raises(RepresentationError, match="n_mels"):
        LogMel(quick_train.space, n_mels=32, vocoder=str(tmp_path / "vocoder")).vocoder_run()


def test_two_stage_recipe_trains_samples_and_scores(tmp_path):
    recipe = load_recipe("spoken-digits-mel")
    assert recipe["representation"]["name"] == "log-mel" and recipe["model"]["backbone"] == "diffwave"
    recipe["data"]["options"] = dict(QUICK_DATA)
    recipe["model"]["options"] = recipe["bench"]["quick"]["model"]["options"]
    recipe["representation"]["options"].update(recipe["bench"]["quick"]["representation"]["options"], learned_steps=2)
    checked = check_recipe(recipe, steps=2, sample_n=4, sample_steps=2, out_dir=tmp_path / "run")
    assert checked == ["load", "train", "checkpoint", "sample", "evaluate"]
    assert sorted(p.name for p in (tmp_path / "run" / "samples").glob("*.wav"))  # decoded to WAV by the audio space
    tune = json.loads((tmp_path / "run" / "config.json").read_text())["representation"]["report"]["tune"]  # the recipe's tune, shrunk by the kit
    assert tune["minutes"] == recipe["bench"]["quick"]["representation"]["tune"]["minutes"] and tune["reconstructions"]["last"] == [1, 2]
