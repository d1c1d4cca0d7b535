"""The graph transformer: the core's backbone contract, permutation equivariance, input widths."""
import pytest
import torch

from diffkit.processes import Diffusion, categorical_absorbing, categorical_marginal, vp_cosine
from diffkit.state import State
from diffkit.testing.backbones import check_backbone
from diffkit_molecule.backbone import build_graph_transformer
from diffkit_molecule.processes import symmetric_gaussian
from diffkit_molecule.space import MoleculeSpace, OneHotMoleculeSpace

SMILES = ["CCO", "c1ccoc1", "N#CC(F)C=O", "C", "CC1(C)CN1", "OC1CC1"]
SMALL = {"hidden_x": 32, "hidden_e": 16, "hidden_y": 16, "heads": 4, "layers": 2}


def categorical_diffusion(space, limit="marginal"):
    stats = space.fit([space.from_smiles(s) for s in SMILES])
    procs = {}
    for f in space.fields:
        if limit == "marginal":
            procs[f.name] = categorical_marginal(f, frequencies=stats["frequencies"][f.name])
        else:
            procs[f.name] = categorical_absorbing(f)
    return Diffusion(procs, {f.name: f.layout for f in space.fields})


def onehot_diffusion(space):
    atoms, bonds = space.field("atoms"), space.field("bonds")
    return Diffusion({"atoms": vp_cosine(atoms), "bonds": symmetric_gaussian(bonds)}, {"atoms": "node", "bonds": "pair"})


@pytest.mark.parametrize("kind", ["marginal", "absorbing", "onehot"])
def test_backbone_contract(kind):
    space = OneHotMoleculeSpace() if kind == "onehot" else MoleculeSpace()
    diffusion = onehot_diffusion(space) if kind == "onehot" else categorical_diffusion(space, kind)
    examples = [space.from_smiles(s) for s in SMILES]
    checked = check_backbone(build_graph_transformer, space, diffusion, examples=examples, options=SMALL, batch=4)
    assert "equivariance" in checked and "mask" in checked


def test_class_conditional_backbone_accepts_null_label():
    space = MoleculeSpace()
    diffusion = categorical_diffusion(space)
    checked = check_backbone(build_graph_transformer, space, diffusion, examples=[space.from_smiles(s) for s in SMILES], options=SMALL, num_classes=3)
    assert "outputs" in checked


def test_permutation_equivariance_explicit():
    torch.manual_seed(0)
    space = MoleculeSpace()
    diffusion = categorical_diffusion(space)
    model = build_graph_transformer(space, diffusion, **SMALL).eval()
    x0 = space.collate([space.from_smiles(s) for s in ["N#CC(F)C=O", "CC1(C)CN1"]])
    xt, _ = diffusion.noise(x0, torch.full((2,), 0.5, dtype=torch.float64), torch.Generator().manual_seed(1))
    perm = torch.tensor([4, 2, 0, 5, 1, 3])
    permuted = State(atoms=xt["atoms"][:, perm], bonds=xt["bonds"][:, perm][:, :, perm], mask=xt["mask"][:, perm])
    t = torch.full((2,), 0.5)
    with torch.no_grad():
        out, out_p = model(xt, t), model(permuted, t)
    m = xt["mask"][:, perm].bool()
    assert torch.allclose(out_p["atoms"][m], out["atoms"][:, perm][m], atol=1e-5)
    pm = m[:, :, None] & m[:, None, :]
    assert torch.allclose(out_p["bonds"][pm], out["bonds"][:, perm][:, :, perm][pm], atol=1e-5)
    assert torch.allclose(out["bonds"], out["bonds"].transpose(1, 2))          # symmetric bond logits
    # a non-trivial output: not every node gets the same logits
    assert out["atoms"][0, :6].std(0).max() > 1e-4


def test_input_width_follows_the_process_states():
    space = MoleculeSpace()
    model = build_graph_transformer(space, categorical_diffusion(space, "absorbing"), **SMALL)
    assert (model.atom_in, model.bond_in, model.atom_out, model.bond_out) == (5, 5, 4, 4)


def test_refuses_a_space_without_graph_fields():
    from diffkit.spaces import EuclideanSpace

    space = EuclideanSpace(2)
    with pytest.raises(ValueError, match="needs a space with 'atoms' and 'bonds'"):
        build_graph_transformer(space, Diffusion({"x": vp_cosine()}))


def test_component_sizes_on_known_graphs():
    from diffkit_molecule.backbone import component_sizes

    A = torch.zeros(2, 6, 6)
    for i, j in [(0, 1), (1, 2), (3, 4)]:           # graph 0: a path 0-1-2, an edge 3-4, node 5 alone
        A[0, i, j] = A[0, j, i] = 1
    for i in range(3):                                # graph 1: a path over its 4 real nodes; nodes 4, 5 padding
        A[1, i, i + 1] = A[1, i + 1, i] = 1
    mask = torch.tensor([[1.0] * 6, [1.0] * 4 + [0.0] * 2])
    sizes = component_sizes(A, mask)
    assert sizes.tolist() == [[3, 3, 3, 2, 2, 1], [4, 4, 4, 4, 0, 0]]
    # a long path needs every squaring: 0-1-...-8 is one component of 9
    P = torch.zeros(1, 9, 9)
    for i in range(8):
        P[0, i, i + 1] = P[0, i + 1, i] = 1
    assert component_sizes(P, torch.ones(1, 9)).tolist() == [[9.0] * 9]


def test_component_features_tell_disconnected_from_connected():
    space = MoleculeSpace()
    diffusion = categorical_diffusion(space)
    model = build_graph_transformer(space, diffusion, components=True, **SMALL)
    x0 = space.collate([space.from_smiles(s) for s in ["CCO", "C.CO"]])   # same atoms and walk counts up to 2 hops apart
    bonds = torch.nn.functional.one_hot(x0["bonds"].long(), 4).float() if x0["bonds"].dim() == 3 else x0["bonds"].float()
    node, graph = model.structure(bonds, x0["mask"].float())
    assert graph[0, -2].item() == 0.0 and graph[1, -2].item() == pytest.approx(1 / 4)   # (components - 1) / 4
    assert graph[0, -1].item() == 1.0 and graph[1, -1].item() == pytest.approx(2 / 3)   # largest component's share
    checked = check_backbone(build_graph_transformer, space, diffusion, examples=[space.from_smiles(s) for s in SMILES],
                             options={**SMALL, "components": True}, batch=4)
    assert "equivariance" in checked


def test_components_need_structural_features():
    space = MoleculeSpace()
    with pytest.raises(ValueError, match="set structural=True"):
        build_graph_transformer(space, categorical_diffusion(space), structural=False, components=True, **SMALL)
