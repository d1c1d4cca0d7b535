"""Training: the trainer loop and checkpoints (safetensors + JSON, atomic, never pickle)."""
from diffkit.training.checkpoint import CheckpointError

__all__ = ["CheckpointError", "Trainer", "TrainingDiverged", "train"]


def __getattr__(name):  # the trainer imports the pipeline, which imports checkpoints: load it lazily
    if name in ("Trainer", "TrainingDiverged", "train"):
        from diffkit.training import trainer

        return getattr(trainer, name)
    raise AttributeError(name)
