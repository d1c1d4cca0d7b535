"""Trained models shipped with diffkit-molecule (``diffkit.pretrained`` entry points); ``scripts/make_pretrained.py`` makes them."""
from diffkit.pretrained import packaged


def qm9_cpu():
    """The ``qm9-cpu`` recipe (QM9 without hydrogens, graph transformer, categorical-marginal diffusion), trained with seed 0."""
    return packaged(__name__, "qm9-cpu")


def qm9_cpu_flow():
    """The ``qm9-cpu-flow`` recipe (the same data and backbone, discrete flow matching from the data marginal on the
    cosine schedule, sampled by ``dfm-euler`` at 50 steps), trained with seed 0."""
    return packaged(__name__, "qm9-cpu-flow")
