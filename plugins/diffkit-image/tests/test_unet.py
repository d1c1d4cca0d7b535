import pytest
import torch

from diffkit.processes import Diffusion, VPCosine
from diffkit.testing import check_backbone
from diffkit_image.space import ImageSpace
from diffkit_image.unet import SelfAttention, UNet, UNetConfigError, build_unet, group_count


def small(**kw):
    torch.manual_seed(0)
    opts = dict(num_classes=10, base_channels=8, channel_mult=(1, 2), blocks_per_level=1, attention_resolutions=(4,), attention_heads=2, groups=4)
    opts.update(kw)
    return UNet("x", kw.pop("shape", (1, 8, 8)), **opts).eval()


def waken(model):
    """Give the zero-initialised output layers random weights, so the output depends on the input."""
    g = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, torch.nn.Conv2d) and not m.weight.any():
            m.weight.data = 0.1 * torch.randn(m.weight.shape, generator=g)
    return model


def test_output_shape_and_zero_initial_output():
    for shape, mult in (((1, 8, 8), (1, 2)), ((3, 16, 16), (1, 2, 2))):
        m = UNet("x", shape, num_classes=0, base_channels=8, channel_mult=mult, blocks_per_level=2, attention_resolutions=(4,), attention_heads=2, groups=4).eval()
        x = torch.randn(3, *shape)
        out = m({"x": x}, torch.rand(3))
        assert set(out) == {"x"} and out["x"].shape == x.shape and out["x"].dtype == torch.float32
        assert torch.count_nonzero(out["x"]) == 0  # the output convolution starts at zero
    assert not torch.count_nonzero(small().out[-1].weight)


def test_class_conditioning_changes_the_output_and_null_label_works():
    m = waken(small())
    x, t = torch.randn(4, 1, 8, 8), torch.rand(4)
    with torch.no_grad():
        a = m({"x": x}, t, torch.tensor([3, 3, 3, 3]))["x"]
        b = m({"x": x}, t, torch.tensor([7, 7, 7, 7]))["x"]
        null = m({"x": x}, t, torch.full((4,), -1))["x"]
        none = m({"x": x}, t, None)["x"]
        mixed = m({"x": x}, t, torch.tensor([3, -1, 7, 3]))["x"]
    assert (a - b).abs().max() > 1e-3 and (a - null).abs().max() > 1e-3
    assert torch.equal(null, none)  # no labels = the null label -1 (classifier-free guidance's unconditional branch)
    assert torch.allclose(mixed[0], a[0], atol=1e-6) and torch.allclose(mixed[1], null[1], atol=1e-6) and torch.allclose(mixed[2], b[2], atol=1e-6)


def test_time_embedding_changes_the_output():
    m = waken(small(num_classes=0))
    x = torch.randn(2, 1, 8, 8)
    with torch.no_grad():
        early, late = m({"x": x}, torch.full((2,), 0.1))["x"], m({"x": x}, torch.full((2,), 0.9))["x"]
    assert (early - late).abs().max() > 1e-3


def test_attention_runs_at_the_chosen_resolutions():
    def sides(model):
        seen = []
        hooks = [mod.register_forward_hook(lambda mod, inp, out: seen.append(inp[0].shape[-1])) for mod in model.modules() if isinstance(mod, SelfAttention)]
        with torch.no_grad():
            model({"x": torch.randn(1, 1, 8, 8)}, torch.rand(1))
        for h in hooks:
            h.remove()
        return seen

    # blocks_per_level=1: one attention per down block and two per up level at each chosen side, plus the middle one at 4
    assert sorted(sides(small(attention_resolutions=()))) == [4]
    assert sorted(sides(small(attention_resolutions=(4,)))) == [4] * 4
    assert sorted(sides(small(attention_resolutions=(8,)))) == [4] + [8] * 3


def test_sizes_and_channels_come_from_the_options():
    m = build_unet(ImageSpace((1, 8, 8), levels=17), None, num_classes=10, base_channels=12, channel_mult=[1, 3], blocks_per_level=1, attention_heads=3, groups=4)
    assert m.inp.out_channels == 12 and m.classes.num_classes == 10
    widths = {mod.conv1.out_channels for mod in m.modules() if hasattr(mod, "conv1")}
    assert widths == {12, 36}
    assert group_count(12, 8) == 6 and group_count(7, 32) == 7 and group_count(36, 32) == 18


def test_bad_options_name_the_fix():
    with pytest.raises(UNetConfigError, match="cannot be halved.*fewer levels"):
        UNet("x", (1, 8, 8), channel_mult=(1, 2, 2, 2, 2))
    with pytest.raises(UNetConfigError, match="attention_heads"):
        UNet("x", (1, 8, 8), base_channels=10, channel_mult=(1,), attention_heads=4)
    with pytest.raises(UNetConfigError, match="rebuild"):
        small()({"x": torch.zeros(1, 1, 16, 16)}, torch.rand(1))


def test_unet_keeps_the_backbone_contract_in_rgb():
    space = ImageSpace((3, 8, 8), levels=256)
    diffusion = Diffusion({"x": VPCosine()})
    g = torch.Generator().manual_seed(0)
    examples = [torch.rand(3, 8, 8, generator=g) for _ in range(4)]
    checked = check_backbone(build_unet, space, diffusion, examples=examples, num_classes=3, name="unet",
                             options={"base_channels": 8, "channel_mult": [1, 2], "blocks_per_level": 1, "attention_heads": 2, "groups": 4})
    assert {"outputs", "batch-independence", "gradients", "checkpoint", "determinism"} <= set(checked)
