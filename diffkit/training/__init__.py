"""Training: the trainer loop and checkpoints (safetensors + JSON, atomic, never pickle)."""
from diffkit.training.checkpoint import CheckpointError
from diffkit.training.trainer import Trainer, TrainingDiverged, train

__all__ = ["CheckpointError", "Trainer", "TrainingDiverged", "train"]
