"""Data spaces: what an element is, how it becomes a State, and how samples become data again."""
from diffkit.spaces.audio import AudioClip, AudioSequence
from diffkit.spaces.base import FieldSpec, Space, SpaceError
from diffkit.spaces.cube import ContinuousCube
from diffkit.spaces.euclidean import EuclideanSpace
from diffkit.spaces.graph import BOND_TYPES, MolecularGraph

__all__ = ["AudioClip", "AudioSequence", "BOND_TYPES", "ContinuousCube", "EuclideanSpace", "FieldSpec", "MolecularGraph", "Space", "SpaceError"]
