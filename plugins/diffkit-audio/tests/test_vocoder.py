"""The learned one-pass mel vocoder: its shapes, its loss, its training, and the log-mel first stage that carries it."""
import math

import pytest
import torch

from diffkit.representations import RepresentationError
from diffkit.testing import check_representation

from diffkit_audio.backbone import mel_spectrogram
from diffkit_audio.mel import LogMel, spectral_convergence
from diffkit_audio.metrics import mrstft_distance
from diffkit_audio.space import AudioSpace
from diffkit_audio.vocoder import IstftVocoder, MelVocoder, spectral_loss, train_vocoder, upsampling_strides


def tones(n: int, length: int = 1024, rate: int = 8000, seed: int = 0) -> torch.Tensor:
    """``n`` clips of one sine each (random pitch 200-1200 Hz, random amplitude and phase): ``n×1×length``."""
    g = torch.Generator().manual_seed(seed)
    f = 200 + 1000 * torch.rand(n, 1, 1, generator=g)
    a = 0.2 + 0.5 * torch.rand(n, 1, 1, generator=g)
    phase = 2 * math.pi * torch.rand(n, 1, 1, generator=g)
    return a * torch.sin(2 * math.pi * f * torch.arange(length) / rate + phase)


def test_strides_multiply_to_the_hop_and_odd_hops_are_refused():
    assert upsampling_strides(64) == [4, 4, 4] and upsampling_strides(128) == [4, 4, 4, 2] and upsampling_strides(96) == [4, 4, 2, 3]
    with pytest.raises(ValueError, match="prime factor above 3"):
        upsampling_strides(80)


def test_one_pass_gives_hop_samples_per_frame_within_minus_one_to_one():
    voc = MelVocoder(n_mels=20, hop=64, channels=32)
    wave = voc(torch.randn(3, 20, 16))
    assert wave.shape == (3, 1, 16 * 64) and wave.abs().max() <= 1


def test_spectral_loss_is_the_paired_mrstft_distance_and_zero_on_equal_clips():
    x, y = tones(4), tones(4, seed=1)
    assert float(spectral_loss(x, x)) == 0.0
    assert float(spectral_loss(y, x)) == pytest.approx(mrstft_distance(list(y), list(x), paired=True), rel=1e-4)


def test_training_lowers_the_loss_and_stops_at_its_step_count():
    torch.manual_seed(0)
    waves = tones(16)
    log_mel = lambda w: mel_spectrogram(w, 8000, 20, 64)  # noqa: E731
    voc = MelVocoder(n_mels=20, hop=64, channels=32)
    with torch.no_grad():
        before = float(spectral_loss(voc(log_mel(waves)), waves))
    report = train_vocoder(voc, waves, log_mel, steps=60, batch_size=8, lr=3e-3, seed=0)
    with torch.no_grad():
        after = float(spectral_loss(voc(log_mel(waves)), waves))
    assert report["steps"] == 60 and not report["stopped_by_time_budget"] and after < 0.8 * before


def test_a_learned_vocoder_is_fitted_saved_and_restored_with_the_first_stage():
    space = AudioSpace(channels=1, length=1024, sample_rate=8000)
    clips = list(tones(12))
    rep = LogMel(space, n_mels=20, hop=64, layout="sequence", vocoder="learned", learned_channels=16, learned_steps=3, learned_batch=4)
    report = rep.fit(clips)
    assert report["vocoder"]["steps"] == 3 and rep.space.shape == (20, 16)
    restored = LogMel(space, **rep.config())
    restored.load_state_dict(rep.state_dict())
    codes = rep.encode(clips[:2])
    assert torch.equal(torch.stack(rep.decode(codes)), torch.stack(restored.decode(codes)))
    figures = check_representation(rep, clips[:4], bound=2.0, error=spectral_convergence)  # shapes, determinism, a loose bound after 3 steps
    assert figures["code_shape"] == {"x": [20, 16]}
    with pytest.raises(RepresentationError, match="do not fit its options"):
        LogMel(space, n_mels=20, hop=64, vocoder="learned", learned_channels=32).load_state_dict(rep.state_dict())
    with pytest.raises(RepresentationError, match="do not fit its options"):
        LogMel(space, n_mels=20, hop=64).load_state_dict(rep.state_dict())  # Griffin-Lim takes no vocoder weights


def test_an_unknown_layout_is_refused():
    with pytest.raises(RepresentationError, match="layout must be"):
        LogMel(AudioSpace(channels=1, length=1024, sample_rate=8000), layout="columns")


class RecordingVocoder(MelVocoder):
    """A vocoder that keeps the frames it is given while training."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.inputs = []

    def forward(self, mel):
        if self.training:
            self.inputs.append(mel.detach().clone())
        return super().forward(mel)


def test_conditioning_augmentation_adds_per_clip_noise_of_at_most_the_level_times_each_bands_deviation():
    waves = tones(16)
    log_mel = lambda w: mel_spectrogram(w, 8000, 20, 64)  # noqa: E731
    clean = log_mel(waves)
    band_std = torch.linspace(0.5, 2.0, 20)
    voc = RecordingVocoder(n_mels=20, hop=64, channels=16)
    train_vocoder(voc, waves, log_mel, steps=4, batch_size=8, seed=0, noise=0.5, band_std=band_std)
    gen = torch.Generator().manual_seed(0)  # the batches the training drew: its generator's first draws per step
    levels = []
    for mel in voc.inputs:
        idx = torch.randint(len(waves), (8,), generator=gen)
        level = torch.rand(8, 1, 1, generator=gen)
        z = torch.randn(mel.shape, generator=gen)
        assert torch.allclose(mel, clean[idx] + 0.5 * level * band_std[:, None] * z, atol=1e-5)
        levels.append(level)
    levels = torch.cat(levels).flatten()
    assert levels.min() >= 0 and levels.max() <= 1 and levels.std() > 0.1  # a level per clip, spread over [0, 1]


def test_no_augmentation_by_default_and_bad_levels_are_refused():
    waves = tones(8)
    log_mel = lambda w: mel_spectrogram(w, 8000, 20, 64)  # noqa: E731
    voc = RecordingVocoder(n_mels=20, hop=64, channels=16)
    report = train_vocoder(voc, waves, log_mel, steps=2, batch_size=4, seed=0)
    assert report["noise"] == 0.0
    clean = log_mel(waves)
    assert all(any(torch.equal(row, c) for c in clean) for mel in voc.inputs for row in mel)
    for bad in (-0.1, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="augmentation noise level"):
            train_vocoder(voc, waves, log_mel, steps=1, noise=bad)


def test_the_first_stage_keeps_its_vocoders_augmentation_level_in_its_config():
    space = AudioSpace(channels=1, length=1024, sample_rate=8000)
    rep = LogMel(space, n_mels=20, hop=64, layout="sequence", vocoder="learned", learned_channels=16, learned_steps=2, learned_batch=4, learned_noise=0.8)
    report = rep.fit(list(tones(8)))
    assert report["vocoder"]["noise"] == 0.8 and rep.config()["learned_noise"] == 0.8
    assert LogMel(space, **rep.config()).options["learned_noise"] == 0.8
    assert "learned_noise" not in LogMel(space, n_mels=20, hop=64, vocoder="learned", learned_channels=16).config()  # older configs stay as they were
    with pytest.raises(RepresentationError, match="learned_noise"):
        LogMel(space, n_mels=20, hop=64, vocoder="learned", learned_channels=16, learned_noise=-1)


def test_the_istft_vocoder_gives_hop_samples_per_frame_and_learns_tones():
    torch.manual_seed(0)
    waves = tones(16)
    log_mel = lambda w: mel_spectrogram(w, 8000, 20, 64)  # noqa: E731
    voc = IstftVocoder(n_mels=20, hop=64, channels=32, layers=2)
    assert voc(torch.randn(3, 20, 16)).shape == (3, 1, 16 * 64)
    with torch.no_grad():
        before = float(spectral_loss(voc(log_mel(waves)), waves))
    report = train_vocoder(voc, waves, log_mel, steps=60, batch_size=8, lr=3e-3, seed=0)
    with torch.no_grad():
        after = float(spectral_loss(voc(log_mel(waves)), waves))
    assert report["steps"] == 60 and torch.isfinite(torch.tensor(after)) and after < 0.8 * before


def test_the_istft_vocoders_inverse_stft_puts_a_predicted_spectrum_back_into_samples():
    """With the head's phase and magnitude set to those of a clip's own STFT (through a hook on the head), the
    output is the clip: the network's last step is the exact inverse of the analysis the representation uses."""
    voc = IstftVocoder(n_mels=20, hop=64, channels=16, layers=1)
    wave = tones(1)[0, 0]
    spectrum = torch.stft(wave, 256, 64, window=torch.hann_window(256), center=True, return_complex=True)  # 129 × 17
    target = torch.cat([spectrum.abs().clamp_min(1e-8).log(), spectrum.angle()])[None].transpose(1, 2)  # 1 × 17 × 258
    voc.head.register_forward_hook(lambda module, inputs, output: target)
    out = voc(torch.zeros(1, 20, 16))
    assert torch.allclose(out[0, 0], wave, atol=1e-4)


def test_an_istft_first_stage_is_fitted_saved_restored_and_not_confused_with_the_upsampling_one():
    space = AudioSpace(channels=1, length=1024, sample_rate=8000)
    clips = list(tones(12))
    rep = LogMel(space, n_mels=20, hop=64, layout="sequence", vocoder="learned", learned_kind="istft", learned_channels=16,
                 learned_layers=2, learned_steps=3, learned_batch=4)
    assert rep.fit(clips)["vocoder"]["steps"] == 3
    assert rep.config()["learned_kind"] == "istft" and rep.config()["learned_layers"] == 2
    restored = LogMel(space, **rep.config())
    restored.load_state_dict(rep.state_dict())
    codes = rep.encode(clips[:2])
    assert torch.equal(torch.stack(rep.decode(codes)), torch.stack(restored.decode(codes)))
    check_representation(rep, clips[:4], bound=2.0, error=spectral_convergence)
    assert "learned_kind" not in LogMel(space, n_mels=20, hop=64, vocoder="learned", learned_channels=16).config()  # older configs stay as they were
    with pytest.raises(RepresentationError, match="do not fit its options"):
        LogMel(space, n_mels=20, hop=64, vocoder="learned", learned_channels=16).load_state_dict(rep.state_dict())
    with pytest.raises(RepresentationError, match="learned_kind must be one of upsample, istft"):
        LogMel(space, n_mels=20, hop=64, vocoder="learned", learned_kind="hifigan")


def test_a_learned_vocoder_fits_apart_from_the_codes_as_fit_would_fit_it():
    """decoder_fits_apart: fit = fit_codes (band statistics, all that encode needs) then fit_decoder (the vocoder), so
    the core may fit the vocoder beside the diffusion; under one seed the two routes give the same first stage."""
    space = AudioSpace(channels=1, length=1024, sample_rate=8000)
    clips = list(tones(12))
    options = dict(n_mels=20, hop=64, layout="sequence", vocoder="learned", learned_kind="istft", learned_channels=16, learned_layers=2,
                   learned_steps=3, learned_batch=4)
    torch.manual_seed(5)
    whole = LogMel(space, **options)
    whole.fit(clips)
    torch.manual_seed(5)
    apart = LogMel(space, **options)  # the same initial vocoder
    apart.fit_codes(clips)
    assert torch.equal(apart.mean, whole.mean) and torch.equal(torch.stack(apart.encode(clips)), torch.stack(whole.encode(clips)))
    codes = apart.encode(clips)
    assert apart.fit_decoder(clips)["vocoder"]["steps"] == 3
    assert torch.equal(torch.stack(apart.encode(clips)), torch.stack(codes))  # fitting the decoder leaves the codes alone
    assert all(torch.equal(a, b) for a, b in zip(apart.state_dict().values(), whole.state_dict().values()))
    assert whole.decoder_fits_apart and not LogMel(space, n_mels=20, hop=64).decoder_fits_apart  # Griffin-Lim has nothing to fit


def test_inputs_with_share_one_are_what_the_vocoder_is_fed_and_bad_inputs_are_refused():
    """train_vocoder(inputs=, share=): a batch item is voiced from its row of ``inputs`` with probability ``share``
    (1: always, so the recorded frames are exactly those rows), against its own wave as the target."""
    waves = tones(8)
    log_mel = lambda w: mel_spectrogram(w, 8000, 20, 64)  # noqa: E731
    made = log_mel(waves) + 3.0  # stand-in for the diffusion's frames: far from any clip's own
    voc = RecordingVocoder(n_mels=20, hop=64, channels=16)
    report = train_vocoder(voc, waves, log_mel, steps=3, batch_size=4, seed=0, inputs=made, share=1.0)
    gen = torch.Generator().manual_seed(0)
    for mel in voc.inputs:
        idx = torch.randint(len(waves), (4,), generator=gen)
        torch.rand(4, 1, 1, generator=gen)  # the draw that decided, per item, to take the row
        assert torch.equal(mel, made[idx])
    assert report["share"] == 1.0
    voc = RecordingVocoder(n_mels=20, hop=64, channels=16)
    train_vocoder(voc, waves, log_mel, steps=3, batch_size=4, seed=0, inputs=made, share=0.0)
    gen = torch.Generator().manual_seed(0)
    for mel in voc.inputs:  # share 0: each item's own clean frames (no augmentation asked)
        assert torch.equal(mel, log_mel(waves)[torch.randint(len(waves), (4,), generator=gen)])
    with pytest.raises(ValueError, match="share must lie in"):
        train_vocoder(voc, waves, log_mel, steps=1, inputs=made, share=1.5)
    with pytest.raises(ValueError, match="one row of frames per wave"):
        train_vocoder(voc, waves, log_mel, steps=1, inputs=made[:3], share=0.5)


def test_a_learned_vocoder_is_tuned_on_given_codes_and_the_codes_stay_as_they_were():
    space = AudioSpace(channels=1, length=1024, sample_rate=8000)
    clips = list(tones(12))
    rep = LogMel(space, n_mels=20, hop=64, layout="sequence", vocoder="learned", learned_channels=16, learned_steps=3, learned_batch=4)
    rep.fit(clips)
    assert rep.decoder_tunes_on_codes and not LogMel(space, n_mels=20, hop=64).decoder_tunes_on_codes  # Griffin-Lim has nothing to tune
    codes = rep.encode(clips)
    before = {k: v.clone() for k, v in rep.state_dict().items()}
    report = rep.tune_decoder(clips, [c + 0.1 for c in codes], minutes=0.01, share=0.5, seed=0)
    after = rep.state_dict()
    assert report["vocoder_tune"]["steps"] >= 1 and report["vocoder_tune"]["share"] == 0.5 and report["vocoder_tune"]["lr"] == pytest.approx(rep.options["learned_lr"] / 4)
    assert torch.equal(before["band.mean"], after["band.mean"]) and torch.equal(before["band.std"], after["band.std"])
    assert any(not torch.equal(before[k], after[k]) for k in before if k.startswith("vocoder."))
    assert all(torch.equal(a, b) for a, b in zip(codes, rep.encode(clips)))
    with pytest.raises(RepresentationError, match="one code per clip"):
        rep.tune_decoder(clips, codes[:3], minutes=0.01)
    with pytest.raises(RepresentationError, match="no learned vocoder to tune"):
        LogMel(space, n_mels=20, hop=64).tune_decoder(clips, codes, minutes=0.01)


def test_bf16_training_runs_the_network_in_bfloat16_and_keeps_weights_head_and_inverse_stft_in_float32():
    """Under ``precision="bf16"`` the blocks compute in bfloat16 (a hook sees it), the head's input and output and the
    wave are float32, the weights stay float32, and the tones are learned as in float32."""
    torch.manual_seed(0)
    waves = tones(16)
    log_mel = lambda w: mel_spectrogram(w, 8000, 20, 64)  # noqa: E731
    voc = IstftVocoder(n_mels=20, hop=64, channels=32, layers=2)
    seen = {}
    voc.blocks[0].up.register_forward_hook(lambda m, i, o: seen.__setitem__("block", o.dtype))
    voc.head.register_forward_hook(lambda m, i, o: seen.update(head_in=i[0].dtype, head_out=o.dtype))
    with torch.no_grad():
        before = float(spectral_loss(voc(log_mel(waves)), waves))
    report = train_vocoder(voc, waves, log_mel, steps=60, batch_size=8, lr=3e-3, seed=0, precision="bf16")
    assert seen == {"block": torch.bfloat16, "head_in": torch.float32, "head_out": torch.float32}
    assert all(p.dtype == torch.float32 for p in voc.parameters()) and report["precision"] == "bf16"
    with torch.no_grad():
        after = float(spectral_loss(voc(log_mel(waves)), waves))
    assert after < 0.8 * before
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert voc(log_mel(waves[:2])).dtype == torch.float32
    assert "precision" not in train_vocoder(voc, waves, log_mel, steps=1, batch_size=4)  # float32 reports stay as they were
    with pytest.raises(ValueError, match="precision must be one of fp32, bf16"):
        train_vocoder(voc, waves, log_mel, steps=1, precision="fp16")


def test_the_first_stage_keeps_its_vocoders_precision_in_its_config():
    space = AudioSpace(channels=1, length=1024, sample_rate=8000)
    rep = LogMel(space, n_mels=20, hop=64, layout="sequence", vocoder="learned", learned_kind="istft", learned_channels=16, learned_layers=1,
                 learned_steps=2, learned_batch=4, learned_precision="bf16")
    assert rep.fit(list(tones(8)))["vocoder"]["precision"] == "bf16" and rep.config()["learned_precision"] == "bf16"
    assert LogMel(space, **rep.config()).options["learned_precision"] == "bf16"
    assert "learned_precision" not in LogMel(space, n_mels=20, hop=64, vocoder="learned", learned_channels=16).config()  # older configs stay as they were
    with pytest.raises(RepresentationError, match="learned_precision must be one of fp32, bf16"):
        LogMel(space, n_mels=20, hop=64, vocoder="learned", learned_channels=16, learned_precision="half")


def test_auto_precision_trains_in_bf16_only_where_the_cpu_has_bfloat16_units(monkeypatch):
    from diffkit import cpu

    waves = tones(8)
    log_mel = lambda w: mel_spectrogram(w, 8000, 20, 64)  # noqa: E731
    voc = IstftVocoder(n_mels=20, hop=64, channels=16, layers=1)
    for native, ran in ((True, "bf16"), (False, "fp32")):
        monkeypatch.setattr(cpu, "native_bf16", lambda device="cpu", native=native: native)
        assert train_vocoder(voc, waves, log_mel, steps=1, batch_size=4, precision="auto")["precision"] == ran
