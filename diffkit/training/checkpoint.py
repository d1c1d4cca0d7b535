"""Checkpoints: safetensors for tensors, JSON for everything else, written atomically, never pickle.

A run directory holds ``model.safetensors`` (``model.*`` and ``ema.*`` weights),
``trainer.safetensors`` (optimiser moments and random-generator states), ``config.json`` (the recipe,
the space, data statistics, the step, and SHA-256 checksums of both tensor files) and ``log.jsonl``.
Each file is written to a temporary name, flushed to disk and renamed; ``config.json`` goes last, so a
run killed mid-write leaves the previous checkpoint whole. Loading checks the format marker and the
checksums before reading a tensor, and refuses pickle files outright: nothing in a checkpoint runs.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

FORMAT = "diffkit-run"
FORMAT_VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint is missing, corrupt, truncated or not diffkit's. The message says which and what to do."""


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(str(path), os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=str(path.parent))
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_json(path: Path, obj) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


def atomic_save_tensors(path: Path, tensors: dict[str, torch.Tensor], metadata: dict | None = None) -> str:
    """Save tensors with safetensors through a temporary file; returns the file's SHA-256."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=str(path.parent))
    os.close(fd)
    try:
        save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, tmp, metadata=metadata)
        with open(tmp, "rb") as f:
            digest = hashlib.sha256(f.read()).hexdigest()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
        return digest
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _refuse_foreign(path: Path) -> None:
    """A safetensors file opens with its JSON header's length (8 bytes, little-endian) and then ``{``. That is
    checked first: the length's low byte may itself be ``0x80`` (pickle's first byte) or the two bytes ``PK``
    (a zip's), so the signatures of torch.save files are only looked for in files that are not safetensors."""
    with open(path, "rb") as f:
        head = f.read(16)
    header_len = int.from_bytes(head[:8], "little") if len(head) >= 8 else 0
    if len(head) >= 9 and head[8:9] == b"{" and 0 < header_len <= os.path.getsize(path) - 8:
        return
    if head[:1] == b"\x80" or head[:2] == b"PK":
        raise CheckpointError(
            f"{path} is a pickle/torch.save file, which can run code when loaded; diffkit refuses it. "
            f"Re-save the weights with safetensors (safetensors.torch.save_file) inside a diffkit run directory"
        )
    if len(head) < 8:
        raise CheckpointError(f"{path} is truncated ({len(head)} bytes); restore it or retrain")
    raise CheckpointError(f"{path} is not a safetensors file (bad header); it is corrupt or foreign, restore it or retrain")


def read_config(run_dir: Path) -> dict:
    run_dir = Path(run_dir)
    path = run_dir / "config.json"
    if not run_dir.exists():
        raise CheckpointError(f"{run_dir} does not exist; pass the directory written by 'diffkit train'")
    if not path.exists():
        raise CheckpointError(f"{run_dir} has no config.json, so it is not a diffkit run; pass the directory written by 'diffkit train'")
    try:
        config = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{path} is not valid JSON ({exc.msg if hasattr(exc, 'msg') else exc}); the checkpoint is corrupt, retrain or restore it") from None
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a diffkit checkpoint (no 'format: {FORMAT}' marker); pass a directory written by 'diffkit train'")
    if int(config.get("format_version", 0)) > FORMAT_VERSION:
        raise CheckpointError(f"{path} has format version {config.get('format_version')}, newer than this diffkit reads ({FORMAT_VERSION}); upgrade diffkit")
    return config


def load_tensors(run_dir: Path, name: str, config: dict) -> dict[str, torch.Tensor]:
    """Load ``name`` (e.g. ``model.safetensors``) after checking it against the checksum in ``config``."""
    path = Path(run_dir) / name
    if not path.exists():
        raise CheckpointError(f"{path} is missing; the checkpoint is incomplete, retrain or restore it")
    _refuse_foreign(path)
    expected = config.get("checksums", {}).get(name)
    if expected is None:
        raise CheckpointError(f"config.json records no checksum for {name}; the checkpoint is not diffkit's or was edited by hand")
    if sha256(path) != expected:
        raise CheckpointError(f"{path} does not match its recorded checksum: it is corrupt or truncated; restore it or retrain (or resume from an earlier copy)")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path} could not be read as safetensors ({exc}); it is corrupt, restore it or retrain") from None


def prefixed(prefix: str, tensors: dict) -> dict:
    return {f"{prefix}.{k}": v for k, v in tensors.items()}


def unprefixed(prefix: str, tensors: dict) -> dict:
    p = prefix + "."
    return {k[len(p):]: v for k, v in tensors.items() if k.startswith(p)}
