import math

import pytest
import torch

from diffkit.spaces import AudioClip, SpaceError
from diffkit_audio.space import AudioSpace, conform


def sine(freq, rate, seconds, amp=0.5):
    t = torch.arange(int(rate * seconds)) / rate
    return amp * torch.sin(2 * math.pi * freq * t)


def peak_hz(x, rate):
    spec = torch.fft.rfft(x.flatten()).abs()
    return float(spec.argmax()) * rate / x.numel()


def test_conform_resamples_explicitly():
    x = sine(440, 16000, 0.5)
    y = conform(x, 16000, 8000, 1, None)
    assert y.shape == (1, 4000)
    assert abs(peak_hz(y, 8000) - 440) < 3
    up = conform(sine(440, 8000, 0.5), 8000, 16000, 1, 8000)
    assert up.shape == (1, 8000) and abs(peak_hz(up, 16000) - 440) < 3


def test_conform_mixdown_crop_pad():
    stereo = torch.stack([torch.full((100,), 0.2), torch.full((100,), 0.6)])
    mono = conform(stereo, 8000, 8000, 1, 100)
    assert torch.allclose(mono, torch.full((1, 100), 0.4))
    with pytest.raises(SpaceError, match="mixdown=True"):
        conform(stereo, 8000, 8000, 1, 100, mixdown=False)
    assert conform(torch.ones(1, 10), 8000, 8000, 2, 10).shape == (2, 10)
    padded = conform(torch.ones(1, 10), 8000, 8000, 1, 16)
    assert padded.shape == (1, 16) and padded[0, 10:].abs().sum() == 0 and padded[0, :10].sum() == 10
    ramp = torch.arange(10.0)[None] / 10
    assert torch.equal(conform(ramp, 8000, 8000, 1, 4), ramp[:, :4])
    assert torch.equal(conform(ramp, 8000, 8000, 1, 4, align="center"), ramp[:, 3:7])


def test_space_refuses_other_rates_and_names_the_fix():
    space = AudioSpace(channels=1, length=800, sample_rate=8000)
    with pytest.raises(SpaceError, match="conform"):
        space.validate(AudioClip(torch.zeros(1, 800), 16000))
    assert space.validate(AudioClip(torch.zeros(1, 800), 8000)).shape == (1, 800)


def test_writer_writes_wav_and_png_and_reads_back(tmp_path):
    space = AudioSpace(channels=1, length=2048, sample_rate=8000)
    items = [sine(300 * (k + 1), 8000, 2048 / 8000)[None] for k in range(3)]
    paths = space.write(items, tmp_path, labels=[0, 1, 2])
    wavs = [p for p in paths if p.suffix == ".wav"]
    pngs = [p for p in paths if p.suffix == ".png"]
    assert [p.name for p in wavs] == ["sample_0000_class0.wav", "sample_0001_class1.wav", "sample_0002_class2.wav"]
    assert len(pngs) == 1 and pngs[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and pngs[0].stat().st_size > 5000
    back, failures = space.read(tmp_path)
    assert failures == [] and len(back) == 3
    assert space.read_labelled(tmp_path)[1] == [0, 1, 2]  # labels from the names write gave
    for a, b in zip(back, items):
        assert (a - b).abs().max() < 1.0 / 16000
    (tmp_path / "broken.wav").write_bytes(b"not audio")
    _, failures = space.read(tmp_path)
    assert [f["item"] for f in failures] == ["broken.wav"]


def test_mel_conditioning_field(digits_test):
    from diffkit.testing import check_space
    from diffkit_audio.backbone import build_diffwave, mel_spectrogram

    space = AudioSpace(channels=1, length=4096, sample_rate=8000, n_mels=40, hop=64)
    assert [(f.name, f.diffused) for f in space.fields] == [("wave", True), ("mel", False)]
    clips = [digits_test[i][0] for i in range(3)]
    state = space.collate(clips)
    assert state["mel"].shape == (3, 40, 64) and torch.equal(state["mel"], mel_spectrogram(state["wave"], 8000, 40, 64))
    assert space.template(2)["mel"].shape == (2, 40, 64) and AudioSpace(**space.config()).fields == space.fields
    assert "round-trip" in check_space(space, clips, registered_name="audio", write=False)
    assert build_diffwave(space, None, residual_channels=4, layers=2, cycle=2).n_mels == 40  # the backbone reads n_mels and hop from the space
    with pytest.raises(ValueError, match="set \\[data\\] space = \\{ n_mels = 20"):
        build_diffwave(space, None, n_mels=20)
    with pytest.raises(ValueError, match="computes no mel frames"):
        build_diffwave(AudioSpace(length=4096, sample_rate=8000), None, n_mels=40)
    with pytest.raises(SpaceError, match="multiple of hop"):
        AudioSpace(length=4000, sample_rate=8000, n_mels=40, hop=64)
