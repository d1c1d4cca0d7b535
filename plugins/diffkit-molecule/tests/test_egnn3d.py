"""The EGNN's symmetries: rotating, reflecting, translating and permuting the input transforms the output
accordingly (float64, to 1e-9), for de novo generation (every field diffused) and for conformers."""
import math

import pytest
import torch

from diffkit.processes import categorical_marginal, zero_com_gaussian
from diffkit.processes.composite import Diffusion

from diffkit_molecule.egnn import build_egnn, topological_distance
from diffkit_molecule.space3d import ConformerSpace, Molecule3DSpace


def _random_orthogonal(generator, reflect: bool) -> torch.Tensor:
    q, r = torch.linalg.qr(torch.randn(3, 3, generator=generator, dtype=torch.float64))
    q = q * torch.sign(torch.diagonal(r))
    if (torch.det(q) < 0) != reflect:
        q[:, 0] = -q[:, 0]
    return q


def _model(space):
    processes, layouts = {}, {}
    for f in space.fields:
        if not f.diffused:
            continue
        if f.kind == "categorical":
            processes[f.name] = categorical_marginal(f, frequencies=[1.0 / f.num_classes] * f.num_classes)
        else:
            processes[f.name] = zero_com_gaussian(f)
        layouts[f.name] = f.layout
    torch.manual_seed(0)
    model = build_egnn(space, Diffusion(processes, layouts), hidden=16, edge=8, layers=3, rbf=8).double().eval()
    # the coordinate heads start at zero; give them weights so that positions actually move
    with torch.no_grad():
        for layer in model.layers:
            layer.coord.weight.normal_(0, 0.3)
    return model


def _state(space, generator, sizes=(7, 5)):
    state = space.template(len(sizes), sizes=torch.tensor(sizes))
    B, n = state["mask"].shape
    mask = state["mask"]
    A, C, K = len(space.atom_types), len(space.charge_values), len(space.bond_types)
    state["atoms"] = torch.nn.functional.one_hot(torch.randint(0, A, (B, n), generator=generator), A).double() * mask[..., None]
    state["charges"] = torch.nn.functional.one_hot(torch.randint(0, C, (B, n), generator=generator), C).double() * mask[..., None]
    orders = torch.randint(0, K, (B, n, n), generator=generator)
    orders = torch.triu(orders, 1)
    orders = orders + orders.transpose(1, 2)
    state["bonds"] = torch.nn.functional.one_hot(orders, K).double()
    state["pos"] = torch.randn(B, n, 3, generator=generator, dtype=torch.float64) * 1.5 * mask[..., None]
    state["mask"] = mask.double()
    return state


@pytest.mark.parametrize("space_cls", [Molecule3DSpace, ConformerSpace])
@pytest.mark.parametrize("reflect", [False, True])
def test_rotation_reflection_translation(space_cls, reflect):
    g = torch.Generator().manual_seed(1)
    space = space_cls()
    model = _model(space)
    state = _state(space, g)
    t = torch.tensor([0.3, 0.7], dtype=torch.float64)
    out = model(state, t)
    Q = _random_orthogonal(g, reflect)
    shift = torch.randn(1, 1, 3, generator=g, dtype=torch.float64) * 5
    moved = dict(state)
    moved["pos"] = (state["pos"] @ Q.T + shift) * state["mask"][..., None]
    out2 = model(moved, t)
    assert out["pos"].abs().max() > 1e-3  # the positions really move, so the check below can fail
    torch.testing.assert_close(out2["pos"], out["pos"] @ Q.T, atol=1e-9, rtol=1e-9)
    for name in out:
        if name != "pos":
            torch.testing.assert_close(out2[name], out[name], atol=1e-9, rtol=1e-9)


@pytest.mark.parametrize("space_cls", [Molecule3DSpace, ConformerSpace])
def test_permutation(space_cls):
    g = torch.Generator().manual_seed(2)
    space = space_cls()
    model = _model(space)
    state = _state(space, g, sizes=(7, 7))
    t = torch.tensor([0.5, 0.2], dtype=torch.float64)
    out = model(state, t)
    perm = torch.randperm(7, generator=g)
    n = state["mask"].shape[1]
    full = torch.cat([perm, torch.arange(7, n)])  # padding (conformer space: up to max_atoms) stays last
    permuted = {k: (v[:, full][:, :, full] if k == "bonds" else v[:, full]) for k, v in state.items()}
    out2 = model(permuted, t)
    for name, value in out.items():
        expected = value[:, full][:, :, full] if name == "bonds" else value[:, full]
        torch.testing.assert_close(out2[name], expected, atol=1e-9, rtol=1e-9)


def test_outputs_and_padding():
    g = torch.Generator().manual_seed(3)
    space = Molecule3DSpace()
    model = _model(space)
    state = _state(space, g, sizes=(7, 4))
    t = torch.tensor([0.5, 0.5], dtype=torch.float64)
    out = model(state, t)
    assert set(out) == {"atoms", "charges", "bonds", "pos"}
    assert out["atoms"].shape[-1] == 5 and out["charges"].shape[-1] == 3 and out["bonds"].shape[-1] == 4
    torch.testing.assert_close(out["bonds"], out["bonds"].transpose(1, 2))
    # positions: zero centre of mass over the real atoms, zero on padding
    assert out["pos"][1, 4:].abs().max() == 0
    torch.testing.assert_close(out["pos"][1, :4].sum(0), torch.zeros(3, dtype=torch.float64), atol=1e-12, rtol=0)
    # whatever sits in padded slots does not reach real atoms
    junk = dict(state)
    junk["pos"] = state["pos"].clone()
    junk["pos"][1, 4:] = 100.0
    junk["atoms"] = state["atoms"].clone()
    junk["atoms"][1, 4:, 0] = 1.0
    out2 = model(junk, t)
    torch.testing.assert_close(out2["pos"][1, :4], out["pos"][1, :4], atol=1e-10, rtol=0)
    torch.testing.assert_close(out2["atoms"][1, :4], out["atoms"][1, :4], atol=1e-10, rtol=0)


def test_conformer_model_generates_positions_only():
    space = ConformerSpace()
    model = _model(space)
    assert set(model.outputs) == {"pos"}


def test_topological_distance():
    # a chain 0-1-2-3-4 and an isolated atom 5
    order = torch.zeros(1, 6, 6, dtype=torch.long)
    for i in range(4):
        order[0, i, i + 1] = order[0, i + 1, i] = 1
    feats = topological_distance(order, torch.ones(1, 6), hops=3)
    hop = feats[0].argmax(-1)
    assert hop[0, 1] == 0 and hop[0, 2] == 1 and hop[0, 3] == 2 and hop[0, 4] == 3 and hop[0, 5] == 3
    assert feats[0, 0, 0].sum() == 0  # an atom is no distance from itself: no class
    assert math.isclose(float(feats[0, 1, 0, 0]), 1.0)
