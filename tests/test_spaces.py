import math

import pytest
import torch

from diffkit.spaces import AudioClip, AudioSequence, ContinuousCube, EuclideanSpace, MolecularGraph, SpaceError


# --- continuous cube ----------------------------------------------------------------------------
def test_cube_round_trip_and_levels():
    space = ContinuousCube((1, 4, 4))
    x = torch.randint(0, 256, (1, 4, 4)) / 255.0
    state = space.collate([x, x])
    assert state["x"].shape == (2, 1, 4, 4)
    assert state["x"].min() >= -1 and state["x"].max() <= 1
    back = space.decode(state)
    assert torch.allclose(back[0], x, atol=1e-6)


def test_cube_converts_uint8_explicitly():
    space = ContinuousCube((1, 2, 2))
    x = torch.tensor([[[0, 255], [128, 64]]], dtype=torch.uint8)
    assert torch.allclose(space.validate(x), x.float() / 255.0)


def test_cube_dequantisation_stays_in_its_bin(gen):
    space = ContinuousCube((1, 8, 8), levels=256)
    x = torch.randint(0, 256, (1, 8, 8)) / 255.0
    state = space.collate([x] * 16, train=True, generator=gen)
    u = (state["x"] + 1) / 2  # in [0, 1]
    k = torch.round(x * 255)
    assert ((u * 256 >= k - 1e-4) & (u * 256 < k + 1 + 1e-4)).all()
    assert state["x"].std(0).mean() > 0  # really noised
    # decoding a dequantised value returns the original level
    assert torch.allclose(space.decode(state)[0], torch.round(((u[0] * 256).floor()) / 255 * 255) / 255, atol=1 / 255 + 1e-6)


@pytest.mark.parametrize("bad,needle", [
    (torch.zeros(3, 4, 4), "shape"),
    (torch.full((1, 4, 4), 2.0), "rescale"),
    (torch.full((1, 4, 4), float("nan")), "NaN"),
    (torch.full((1, 4, 4), 300, dtype=torch.int32), "0..255"),
])
def test_cube_rejects_with_clear_message(bad, needle):
    with pytest.raises(SpaceError) as err:
        ContinuousCube((1, 4, 4)).validate(bad)
    assert needle in str(err.value)
    assert "\n" not in str(err.value)


# --- audio ----------------------------------------------------------------------------------------
def test_audio_accepts_mono_vector_and_rejects_wrong_rate():
    space = AudioSequence(1, 100, 8000)
    wave = torch.sin(torch.arange(100) / 5.0)
    assert space.validate(wave).shape == (1, 100)
    assert space.validate(AudioClip(wave, 8000)).shape == (1, 100)
    with pytest.raises(SpaceError, match="resample"):
        space.validate(AudioClip(wave, 16000))
    with pytest.raises(SpaceError, match="crop or pad"):
        space.validate(torch.zeros(1, 99))
    with pytest.raises(SpaceError, match="normalise"):
        space.validate(torch.full((1, 100), 1.5))
    with pytest.raises(SpaceError, match="int16"):
        space.validate(torch.zeros(1, 100, dtype=torch.int16))


def test_audio_natural_form_carries_the_rate():
    space = AudioSequence(1, 100, 8000)
    clips = space.natural(space.decode(space.collate([torch.zeros(1, 100), torch.full((1, 100), 0.5)])))
    assert [type(c) for c in clips] == [AudioClip, AudioClip] and all(c.sample_rate == 8000 for c in clips)
    assert torch.equal(clips[1].wave, torch.full((1, 100), 0.5))


def test_audio_wav_round_trip(tmp_path):
    from diffkit.spaces.audio import read_wav

    space = AudioSequence(2, 400, 8000)
    wave = torch.stack([torch.sin(torch.arange(400) / 7.0), 0.5 * torch.cos(torch.arange(400) / 3.0)]) * 0.9
    paths = space.write(space.decode(space.collate([wave])), tmp_path)
    clip = read_wav(paths[0])
    assert clip.sample_rate == 8000
    assert torch.allclose(clip.wave, wave, atol=1 / 16000)


# --- molecular graphs -------------------------------------------------------------------------------
def _graph(n, bonds):
    b = torch.zeros(n, n, dtype=torch.long)
    for i, j, o in bonds:
        b[i, j] = b[j, i] = o
    return b


def test_graph_collate_pads_and_decodes():
    space = MolecularGraph(["C", "N", "O"], max_atoms=5)
    g1 = {"atoms": ["C", "C", "O"], "bonds": _graph(3, [(0, 1, 1), (1, 2, 2)])}
    g2 = {"atoms": [1, 0], "bonds": _graph(2, [(0, 1, 3)])}
    state = space.collate([g1, g2])
    assert state["atoms"].shape == (2, 3, 3) and state["bonds"].shape == (2, 3, 3, 4)
    assert state["mask"].tolist() == [[1, 1, 1], [1, 1, 0]]
    assert torch.allclose(state["bonds"].sum(-1), torch.ones(2, 3, 3))  # every pair one-hot
    out = space.decode(state)
    assert out[0]["atoms"].tolist() == [0, 0, 2] and torch.equal(out[0]["bonds"], g1["bonds"])
    assert out[1]["atoms"].tolist() == [1, 0] and torch.equal(out[1]["bonds"], g2["bonds"])


def test_graph_decode_symmetrises_bond_scores():
    space = MolecularGraph(["C"], max_atoms=2)
    state = space.collate([{"atoms": [0, 0], "bonds": _graph(2, [])}])
    scores = torch.zeros(1, 2, 2, 4)
    scores[0, 0, 1] = torch.tensor([0.0, 0.9, 0.0, 0.0])  # (0,1) says single strongly
    scores[0, 1, 0] = torch.tensor([0.4, 0.0, 0.0, 0.0])  # (1,0) says none weakly
    out = space.decode(state.replace(bonds=scores))
    assert out[0]["bonds"][0, 1] == out[0]["bonds"][1, 0] == 1


@pytest.mark.parametrize("item,needle", [
    ({"atoms": ["C", "S"], "bonds": torch.zeros(2, 2, dtype=torch.long)}, "['S']"),
    ({"atoms": [0, 0], "bonds": torch.tensor([[0, 1], [0, 0]])}, "symmetric"),
    ({"atoms": [0, 0], "bonds": torch.tensor([[1, 0], [0, 0]])}, "itself"),
    ({"atoms": [0] * 7, "bonds": torch.zeros(7, 7, dtype=torch.long)}, "max_atoms"),
    ({"atoms": [0, 0], "bonds": torch.tensor([[0, 5], [5, 0]])}, "bond orders"),
])
def test_graph_rejects(item, needle):
    with pytest.raises(SpaceError) as err:
        MolecularGraph(["C", "N"], max_atoms=6).validate(item)
    assert needle in str(err.value)


def test_graph_positions_are_centred_and_fit_counts():
    space = MolecularGraph(["C", "O"], max_atoms=4, positions=True)
    g = {"atoms": [0, 1], "bonds": _graph(2, [(0, 1, 2)]), "pos": torch.tensor([[1.0, 0, 0], [3.0, 0, 0]])}
    state = space.collate([g])
    assert torch.allclose(state["pos"][0].sum(0), torch.zeros(3))
    stats = space.fit([g, g])
    assert stats["sizes"][2] == 1.0
    assert stats["frequencies"]["atoms"] == [0.5, 0.5]
    assert stats["frequencies"]["bonds"] == [0.0, 0.0, 1.0, 0.0]
    tpl = space.template(5, stats, torch.Generator().manual_seed(0))
    assert tpl["mask"].sum(1).tolist() == [2.0] * 5


def test_euclidean_space():
    space = EuclideanSpace(2)
    with pytest.raises(SpaceError, match="shape"):
        space.validate(torch.zeros(3))
    assert space.collate([torch.zeros(2), torch.ones(2)])["x"].shape == (2, 2)
    assert math.isclose(float(space.decode(space.collate([torch.ones(2)]))[0].sum()), 2.0)
