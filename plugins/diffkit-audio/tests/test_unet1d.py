"""The 1-D UNet over frames: the conformance kit, its zero start, conditioning, and refusals."""
import pytest
import torch

from diffkit.processes import Diffusion, VPCosine
from diffkit.spaces.latent import LatentSpace
from diffkit.testing import check_backbone

from diffkit_audio.unet1d import UNet1d, build_unet1d

SMALL = {"width": 8, "mults": [1, 2], "blocks": 1, "attention": [1], "heads": 2, "time_dim": 16, "embed_dim": 32}


def test_the_conformance_kit_passes_on_mel_shaped_codes():
    space = LatentSpace((6, 16))
    g = torch.Generator().manual_seed(0)
    checked = check_backbone(build_unet1d, space, Diffusion({"x": VPCosine()}), examples=[torch.randn(6, 16, generator=g) for _ in range(4)],
                             num_classes=3, name="unet1d", options=SMALL)
    assert {"outputs", "batch-independence", "gradients", "checkpoint", "determinism"} <= set(checked)


def test_it_starts_at_zero_and_learns_to_depend_on_its_input_and_class():
    torch.manual_seed(0)
    m = UNet1d("x", 6, 8, (1, 2, 2), 1, (2,), 2, num_classes=3, time_dim=16, embed_dim=32)
    x, t = torch.randn(4, 6, 16), torch.rand(4)
    assert not torch.count_nonzero(m({"x": x}, t, torch.zeros(4, dtype=torch.long))["x"])  # the output convolution starts at zero
    opt = torch.optim.Adam(m.parameters(), lr=1e-2)
    labels = torch.tensor([0, 1, 2, 0])
    for _ in range(20):  # fit x -> x + class offset: the output must come to depend on both
        loss = (m({"x": x}, t, labels)["x"] - x - labels[:, None, None]).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        a, b = m({"x": x}, t, labels)["x"], m({"x": x}, t, torch.tensor([2, 2, 0, -1]))["x"]
        c = m({"x": x.flip(-1)}, t, labels)["x"]
    assert not torch.allclose(a, b) and not torch.allclose(a, c) and torch.isfinite(b).all()  # -1: the null label


def test_bad_options_and_lengths_are_refused():
    with pytest.raises(ValueError, match="attention levels \\[3\\]"):
        UNet1d("x", 6, 8, (1, 2), attention=(3,))
    with pytest.raises(ValueError, match="must be positive"):
        UNet1d("x", 6, 0)
    m = UNet1d("x", 6, 8, (1, 2, 2, 2), 1, ())
    with pytest.raises(ValueError, match="20 frames do not halve 3 times"):
        m({"x": torch.randn(1, 6, 20)}, torch.rand(1))
    with pytest.raises(ValueError, match="layout = \"sequence\""):
        build_unet1d(LatentSpace((1, 6, 16)), Diffusion({"x": VPCosine()}), **SMALL)
