"""Training: the trainer loop. Checkpoints (safetensors + JSON, written as a unit, never pickle) are
described, written and read by :mod:`diffkit.rundir`."""
from diffkit.rundir import CheckpointError
from diffkit.training.trainer import Trainer, TrainingDiverged, train

__all__ = ["CheckpointError", "Trainer", "TrainingDiverged", "train"]
