"""The categorical oracle: its p(x_0 | x_t) against Bayes' rule over the whole table, and the categorical
sampler on it.

Stated criterion for samplers: total variation between 6,000 samples' empirical distribution and the
exact table over all K^L = 81 sequences is within 1.5x the floor (the total variation 6,000 exact draws
reach, 0.024) at 100 levels of the ancestral sampler; two levels (nearly the product of per-position
marginals) must miss by more than 5x. Measured on this oracle: 2 levels 0.66, 10 levels 0.075-0.099,
50 levels 0.028-0.030.
"""
import pytest
import torch
import torch.nn.functional as F

from diffkit.denoiser import Denoiser, guided
from diffkit.oracle_categorical import (AnalyticCategoricalBackbone, CategoricalMixture, all_sequences, random_categorical_mixture, sequence_index,
                                        total_variation, total_variation_floor, two_modes)
from diffkit.processes import CategoricalProcess, Diffusion
from diffkit.samplers import SAMPLERS, make_times
from diffkit.state import State

N = 20000
N_SAMPLER = 6000


def _processes(mix):
    K = mix.num_classes
    freqs = (mix.weights[:, None] * mix.probs.mean(1)).sum(0)  # the data's class frequencies, for the marginal limit
    return {"uniform": CategoricalProcess(K, "uniform"), "absorbing": CategoricalProcess(K, "absorbing"),
            "marginal": CategoricalProcess(K, (freqs / freqs.sum()).tolist())}


def _bayes(mix, process, xt, t, component=None):
    """p(x_0,i | x_t) by brute force: p(x_0) prod_i q(x_t,i | x_0,i) over every sequence x_0, then per-position marginals."""
    seqs = all_sequences(mix.length, mix.num_classes)  # M×L
    prior = mix.pmf(component)  # M
    q = process.marginal_probs(F.one_hot(seqs, mix.num_classes).double(), t)  # M×L×S: q(x_t,i = j | x_0,i)
    lik = torch.einsum("mls,bls->bml", q, xt.double()).prod(-1)  # B×M
    post = prior[None] * lik
    post = post / post.sum(-1, keepdim=True)
    return torch.einsum("bm,mlk->blk", post, F.one_hot(seqs, mix.num_classes).double())


@pytest.mark.parametrize("limit", ["uniform", "absorbing", "marginal"])
def test_posterior_is_bayes_rule_over_the_whole_table(limit):
    mix = random_categorical_mixture(length=3, num_classes=3, num_components=3, seed=1)
    proc = _processes(mix)[limit]
    g = torch.Generator().manual_seed(0)
    x0 = mix.one_hot(mix.sample(64, g))
    for t in (0.15, 0.6, 0.97):
        xt = proc.q_sample(x0, t, g)
        assert torch.allclose(mix.posterior(xt, proc, t), _bayes(mix, proc, xt, t), atol=1e-10), t
        assert torch.allclose(mix.posterior(xt, proc, t, component=2), _bayes(mix, proc, xt, t, component=2), atol=1e-10), t
    # one time per example, and per-example component labels (-1: the mixture)
    ts = torch.linspace(0.1, 0.9, 64, dtype=torch.float64)
    xt = torch.stack([proc.q_sample(x0[i:i + 1], float(ts[i]), g)[0] for i in range(64)])
    labels = torch.arange(64) % 4 - 1
    got = mix.posterior(xt, proc, ts, labels)
    for i in (0, 1, 17, 63):
        comp = None if labels[i] < 0 else int(labels[i])
        assert torch.allclose(got[i], _bayes(mix, proc, xt[i:i + 1], float(ts[i]), comp)[0], atol=1e-10)


def test_samples_pmf_and_sequence_numbering_agree():
    mix = random_categorical_mixture(length=3, num_classes=4, seed=2)
    pmf = mix.pmf()
    assert abs(float(pmf.sum()) - 1) < 1e-12
    seqs = all_sequences(3, 4)
    assert torch.equal(sequence_index(seqs, 4), torch.arange(64))
    assert torch.equal(sequence_index(F.one_hot(seqs, 4), 4), torch.arange(64))
    x = mix.sample(N, torch.Generator().manual_seed(3))
    floor = total_variation_floor(pmf, N)
    assert total_variation(x, pmf, 4) < 1.5 * floor
    other = random_categorical_mixture(length=3, num_classes=4, seed=5).pmf()  # a different table must be far
    assert total_variation(x, other, 4) > 5 * floor


def test_bad_tables_are_refused():
    with pytest.raises(ValueError, match="probability vector"):
        CategoricalMixture(torch.tensor([[[0.5, 0.6]]]))
    with pytest.raises(ValueError, match="positive"):
        CategoricalMixture(torch.full((2, 2, 2), 0.5), weights=[1.0, 0.0])
    mix = two_modes()
    proc = CategoricalProcess(3, "uniform")
    with pytest.raises(ValueError, match="component labels"):
        mix.posterior(proc.prior(torch.zeros(2, 4, 3)), proc, 0.5, torch.tensor([0, 5]))


def _sample(mix, proc, levels, seed=0, cond=None, guidance=None):
    diff = Diffusion({"x": proc})
    fn = guided(Denoiser(AnalyticCategoricalBackbone(mix, proc), diff), cond, guidance)
    g = torch.Generator().manual_seed(seed)
    x_T = diff.prior(State(x=torch.zeros(N_SAMPLER, mix.length, mix.num_classes)), g)
    return SAMPLERS["ancestral"](fn, x_T, make_times(diff, levels, "uniform"), generator=g)["x"]


@pytest.mark.parametrize("limit", ["uniform", "absorbing"])
def test_ancestral_sampler_reaches_the_table_within_the_floor(limit):
    mix = two_modes(length=4, num_classes=3)
    proc = _processes(mix)[limit]
    pmf = mix.pmf()
    floor = total_variation_floor(pmf, N_SAMPLER)
    fine = total_variation(_sample(mix, proc, 100)[..., :3], pmf, 3)
    crude = total_variation(_sample(mix, proc, 2)[..., :3], pmf, 3)
    assert fine < 1.5 * floor, (fine, floor)
    assert crude > 5 * floor, (crude, floor)
