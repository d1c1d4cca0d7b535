"""diffkit: diffusion generative models across modalities.

The core knows nothing of pixels, sound or chemistry: data spaces turn elements into a
:class:`~diffkit.state.State` of named tensors, noise processes corrupt each field, a backbone
predicts, and samplers run the reverse process. Modalities arrive as plugins through entry points.
Importing this package imports no plugin, and not torch either: ``diffkit.State`` is looked up on
first use, so ``diffkit --help`` answers without loading torch.
"""
__version__ = "0.1.0"

__all__ = ["State", "__version__", "load"]


def __getattr__(name: str):
    if name == "State":
        from diffkit.state import State

        return State
    raise AttributeError(f"module 'diffkit' has no attribute {name!r}")


def load(target, device: str = "cpu"):
    """A trained model from a shipped model's name (``diffkit pretrained`` lists them) or a run directory;
    ``load("gmm").sample(100)`` gives samples in the modality's natural Python form."""
    from diffkit.pretrained import load_model

    return load_model(target, device=device)
