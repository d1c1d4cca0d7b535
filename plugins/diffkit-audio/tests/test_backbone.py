import pytest
import torch

from diffkit_audio.backbone import DiffWave, build_diffwave, mel_spectrogram
from diffkit_audio.space import AudioSpace


def small(**kw):
    torch.manual_seed(0)
    opts = dict(residual_channels=8, layers=6, cycle=3, time_dim=16, embed_dim=32)
    opts.update(kw)
    return DiffWave(**opts).eval()


def test_shapes_and_zero_initial_output():
    m = small(channels=2)
    x = torch.randn(3, 2, 500)
    out = m({"wave": x}, torch.rand(3))
    assert set(out) == {"wave"} and out["wave"].shape == x.shape
    assert torch.count_nonzero(out["wave"]) == 0  # the output projection starts at zero (DiffWave's init)


def test_receptive_field_is_exact():
    m = small().double()  # float64: edge taps contribute ~1e-8, below float32 resolution of the output
    torch.nn.init.normal_(m.final.weight)  # make the output depend on the input
    assert m.dilations == [1, 2, 4, 1, 2, 4]
    half = sum(m.dilations)
    assert m.receptive_field == 1 + 2 * half == 29
    t = torch.tensor([0.3], dtype=torch.float64)
    p = 100
    seen = torch.zeros(200, dtype=torch.bool)
    g = torch.Generator().manual_seed(0)
    for _ in range(3):  # a ReLU can silence one path on one input; the union over inputs shows the full field
        x = torch.randn(1, 1, 200, generator=g, dtype=torch.float64)
        y = x.clone()
        y[0, 0, p] += 1.0
        with torch.no_grad():
            diff = (m({"wave": y}, t)["wave"] - m({"wave": x}, t)["wave"]).abs()[0, 0]
        seen |= diff > 0  # outputs outside the receptive field are bit-identical
    changed = seen.nonzero().flatten()
    assert int(changed.min()) == p - half and int(changed.max()) == p + half


def samples_reached(m, p: int, channel: int, channels: int = 2, length: int = 400) -> torch.Tensor:
    """Output samples (any channel) that change when input sample ``p`` of ``channel`` does, over three
    random ``channels × length`` inputs (a ReLU can silence a path on one input), at t = 0.3, in float64."""
    t = torch.tensor([0.3], dtype=torch.float64)
    seen = torch.zeros(length, dtype=torch.bool)
    for k in range(3):
        x = torch.randn(1, channels, length, generator=torch.Generator().manual_seed(k), dtype=torch.float64)
        y = x.clone()
        y[0, channel, p] += 1.0
        with torch.no_grad():
            seen |= (m({"wave": y}, t)["wave"] - m({"wave": x}, t)["wave"]).abs()[0].amax(0) > 0
    return seen.nonzero().flatten()


def test_patches_fold_samples_into_channels():
    """patch = P: the stack runs at T/P positions; a change at sample p reaches exactly the patches within
    the stack's field (in patches) of p's patch, i.e. samples [(p//P - half) P, (p//P + half + 1) P)."""
    P = 4
    m = small(patch=P, channels=2).double()
    torch.nn.init.normal_(m.final.weight)
    half = sum(m.dilations)
    assert m.receptive_field == (1 + 2 * half) * P
    t = torch.tensor([0.3], dtype=torch.float64)
    x = torch.randn(1, 2, 400, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    assert m({"wave": x}, t)["wave"].shape == x.shape
    p = 201
    changed = samples_reached(m, p, channel=1)
    assert int(changed.min()) == (p // P - half) * P and int(changed.max()) == (p // P + half + 1) * P - 1
    with pytest.raises(ValueError, match="multiple of patch"):
        m({"wave": torch.randn(1, 2, 402, dtype=torch.float64)}, t)


@pytest.mark.parametrize("p", [200, 201, 203])
def test_overlapping_patches_reach_exactly_their_windows(p):
    """patch_kernel = K > P: positions n read samples [nP - h, nP + P + h) and write the same range
    (h = (K - P) / 2), so a change at sample p reaches the samples written by the positions within the
    stack's field of those that read p, and nothing else."""
    P, K = 4, 8
    h = (K - P) // 2
    m = small(patch=P, patch_kernel=K, channels=2).double()
    torch.nn.init.normal_(m.final.weight)
    half = sum(m.dilations)
    assert m.receptive_field == (1 + 2 * half) * P + 2 * (K - P)
    t = torch.tensor([0.3], dtype=torch.float64)
    readers = [n for n in range(100) if n * P - h <= p < n * P + P + h]
    assert len(readers) == K // P
    first, last = (readers[0] - half) * P - h, (readers[-1] + half) * P + P + h - 1
    x = torch.randn(1, 2, 400, dtype=torch.float64)
    with torch.no_grad():
        assert m({"wave": x}, t)["wave"].shape == x.shape
    changed = samples_reached(m, p, channel=0)
    assert int(changed.min()) == first and int(changed.max()) == last
    assert last - first + 1 == m.receptive_field
    assert torch.count_nonzero(small(patch=P, patch_kernel=K)({"wave": x.float()[:, :1]}, t.float())["wave"]) == 0  # zero start
    with pytest.raises(ValueError, match="patch_kernel"):
        small(patch=4, patch_kernel=7)


def test_patches_with_mel_conditioning():
    m = small(patch=8, n_mels=20, hop=64)
    torch.nn.init.normal_(m.final.weight)
    wave = torch.rand(2, 1, 1024) * 2 - 1
    mel = mel_spectrogram(wave, 8000, n_mels=20, hop=64)
    x, t = torch.randn(2, 1, 1024), torch.rand(2)
    with torch.no_grad():
        a = m({"wave": x, "mel": mel}, t)["wave"]
        b = m({"wave": x, "mel": mel.flip(-1)}, t)["wave"]
    assert a.shape == x.shape and (a - b).abs().max() > 1e-5
    with pytest.raises(ValueError, match="multiple of patch"):
        small(patch=48, n_mels=20, hop=64)


def test_class_conditioning_and_null_label():
    m = small(num_classes=10)
    torch.nn.init.normal_(m.final.weight)
    x, t = torch.randn(2, 1, 256), torch.rand(2)
    with torch.no_grad():
        a = m({"wave": x}, t, torch.tensor([3, 3]))["wave"]
        b = m({"wave": x}, t, torch.tensor([7, 7]))["wave"]
        null = m({"wave": x}, t, torch.tensor([-1, -1]))["wave"]
        none = m({"wave": x}, t, None)["wave"]
    assert (a - b).abs().max() > 1e-4
    assert torch.equal(null, none)


def test_time_embedding_changes_output():
    m = small()
    torch.nn.init.normal_(m.final.weight)
    x = torch.randn(1, 1, 128)
    with torch.no_grad():
        assert (m({"wave": x}, torch.tensor([0.1]))["wave"] - m({"wave": x}, torch.tensor([0.9]))["wave"]).abs().max() > 1e-4


def test_mel_conditioning_as_vocoder():
    m = small(n_mels=20, hop=64)
    torch.nn.init.normal_(m.final.weight)
    wave = torch.rand(2, 1, 1024) * 2 - 1
    mel = mel_spectrogram(wave, 8000, n_mels=20, hop=64)
    assert mel.shape == (2, 20, 16)
    x, t = torch.randn(2, 1, 1024), torch.rand(2)
    with torch.no_grad():
        a = m({"wave": x, "mel": mel}, t)["wave"]
        b = m({"wave": x, "mel": mel.flip(-1)}, t)["wave"]
    assert a.shape == x.shape and (a - b).abs().max() > 1e-5
    with pytest.raises(KeyError, match="state\\['mel'\\]"):
        m({"wave": x}, t)


def test_factory_reads_the_space():
    space = AudioSpace(channels=1, length=300, sample_rate=8000)
    m = build_diffwave(space, None, num_classes=10, residual_channels=8, layers=4, cycle=2)
    assert m.inp.in_channels == 1 and m.classes.num_classes == 10 and len(m.layers) == 4
    with pytest.raises(ValueError, match="hop"):
        DiffWave(n_mels=10, hop=17 * 2)
