"""``symmetric-gaussian``: symmetric, unit-variance bond noise; plain Gaussian elsewhere."""
import torch

from diffkit.spaces.base import FieldSpec
from diffkit.state import pair_mask
from diffkit.testing.processes import check_process
from diffkit_molecule.processes import SymmetricGaussian, symmetric_gaussian

PAIR = FieldSpec("bonds", kind="continuous", layout="pair", num_classes=4, symmetric=True)


def test_symmetric_noise_has_unit_variance_and_zero_diagonal():
    proc = symmetric_gaussian(PAIR)
    assert isinstance(proc, SymmetricGaussian)
    mask = torch.ones(64, 9)
    mask[:, 7:] = 0
    z = proc.noise(torch.zeros(64, 9, 9, 4), torch.Generator().manual_seed(0), pair_mask(mask))
    assert torch.equal(z, z.transpose(1, 2))
    assert torch.diagonal(z, dim1=1, dim2=2).abs().sum() == 0
    assert z[:, 7:].abs().sum() == 0 and z[:, :, 7:].abs().sum() == 0
    off = z[pair_mask(mask)]
    assert abs(off.std().item() - 1.0) < 0.03 and abs(off.mean().item()) < 0.03


def test_projection_symmetrises_predictions():
    proc = symmetric_gaussian(PAIR)
    x = torch.randn(2, 5, 5, 4)
    y = proc.project(x, pair_mask(torch.ones(2, 5)))
    assert torch.allclose(y, y.transpose(1, 2)) and torch.allclose(proc.project(y, pair_mask(torch.ones(2, 5))), y)


def test_plain_fields_get_the_base_process_and_pass_the_core_checks():
    proc = symmetric_gaussian(FieldSpec("atoms", layout="node"), base="vp-linear")
    assert proc.name == "vp-linear"
    assert "posterior" in check_process(symmetric_gaussian, FieldSpec("x"), n=4000)
