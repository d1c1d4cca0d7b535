"""The run directory: what ``diffkit train`` writes, how a checkpoint is written as a unit, and how it is read back.

A run directory (format version 2) holds::

    config.json                      the pointer: the current checkpoint's description (see below)
    checkpoints/step-00000040.3f9a/  one complete checkpoint, named by its step and a random token
        model.safetensors            ``model.*`` and ``ema.*`` weights
        trainer.safetensors          optimiser moments and random-generator states
        checkpoint.json              the config.json that points at this directory
    log.jsonl                        one JSON record per logged step or event

``config.json`` carries the format marker, the recipe, the space, data statistics, the step, the
optimiser's parameter groups, the name of the current checkpoint directory (``checkpoint``), the one kept
before it (``previous``) and the SHA-256 of each tensor file. A checkpoint is written as a unit:

1. its files are written into ``checkpoints/step-N.<token>.tmp/`` and each is flushed to disk;
2. that folder is renamed to ``checkpoints/step-N.<token>/`` (complete from now on);
3. ``config.json`` is replaced in one ``os.replace`` to point at it: this is the commit;
4. only then are older checkpoint folders removed, all but the one recorded as ``previous``.

A process killed at any moment therefore leaves ``config.json`` pointing at a complete checkpoint, the
old one or the new one, never a mixture. Unreferenced folders and ``*.tmp`` files are what a kill leaves
behind; :func:`clean_stale` removes them when training next starts. Loading checks the format marker and
the checksums before reading a tensor and refuses pickle files outright: nothing in a checkpoint runs.

A *flat* run keeps its tensor files beside ``config.json`` and has no ``checkpoint`` key: every run of format
version 1 (before checkpoint folders) and the shipped models of :mod:`diffkit.pretrained`. Flat runs are
read as before; resuming one writes checkpoint folders from then on.

Files and folders are created with the process's umask, like ``log.jsonl``.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import secrets
import shutil
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from safetensors.torch import save as save_bytes

FORMAT = "diffkit-run"
FORMAT_VERSION = 2
CHECKPOINTS = "checkpoints"
TENSOR_FILES = ("model.safetensors", "trainer.safetensors")


class CheckpointError(ValueError):
    """A checkpoint is missing, corrupt, truncated or not diffkit's. The message says which and what to do."""


# --- writing files durably ---------------------------------------------------------------------------------
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


def _temporary_name(path: Path) -> Path:
    return path.parent / f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"


def _write_file_synced(path: Path, data: bytes) -> None:
    """Write ``data`` to a new file (mode 0666 less the umask) and flush it to disk."""
    fd = os.open(str(path), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Replace ``path`` by ``data`` in one step: a reader sees the old bytes or the new ones, never a mixture."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temporary_name(path)
    try:
        _write_file_synced(tmp, data)
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _json_bytes(obj) -> bytes:
    return (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode()


def atomic_write_json(path: Path, obj) -> None:
    atomic_write_bytes(path, _json_bytes(obj))


def _save_tensors_synced(path: Path, tensors: dict[str, torch.Tensor], metadata: dict | None = None) -> str:
    """Write tensors with safetensors to a new file (mode 0666 less the umask), flush it to disk; returns its SHA-256."""
    data = save_bytes({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, metadata=metadata)
    _write_file_synced(Path(path), data)
    return hashlib.sha256(data).hexdigest()


def atomic_save_tensors(path: Path, tensors: dict[str, torch.Tensor], metadata: dict | None = None) -> str:
    """Save tensors with safetensors through a temporary file; returns the file's SHA-256."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temporary_name(path)
    try:
        digest = _save_tensors_synced(tmp, tensors, metadata)
        os.replace(tmp, path)
        _fsync_dir(path.parent)
        return digest
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# --- writing a checkpoint as a unit --------------------------------------------------------------------------
def nonfinite_tensors(tensors: dict[str, torch.Tensor]) -> list[str]:
    """Names of floating-point tensors holding a NaN or an infinity."""
    return [k for k, v in tensors.items() if v.dtype.is_floating_point and not bool(torch.isfinite(v).all())]


def _step_of(name: str | None) -> int:
    try:
        return int(str(name).split("/")[-1].split("-", 1)[1].split(".", 1)[0])
    except (IndexError, ValueError):
        return -1


def write_checkpoint(run_dir: str | Path, config: dict, files: dict[str, dict[str, torch.Tensor]]) -> dict:
    """Write one checkpoint of ``run_dir`` as a unit and make it the current one; returns the config written.

    ``config`` describes the run (recipe, space, stats, step, ...); ``files`` maps a file name such as
    ``model.safetensors`` to its tensors. Non-finite floating-point weights are refused (``CheckpointError``)
    before anything is written. The checkpoint that was current stays as ``previous`` when its step is
    smaller; every other older checkpoint folder is removed once the new one is committed."""
    run_dir = Path(run_dir)
    step = int(config["step"])
    for name, tensors in files.items():
        bad = nonfinite_tensors(tensors)
        if bad:
            raise CheckpointError(f"refusing to write {name} at step {step}: tensor(s) {bad[:3]} hold NaN or infinite values")
    root = run_dir / CHECKPOINTS
    root.mkdir(parents=True, exist_ok=True)
    try:
        old = read_config(run_dir)
    except CheckpointError:
        old = None
    current = old.get("checkpoint") if old else None
    if current and _step_of(current) < step:
        previous = current
    elif old:
        previous = old.get("previous")
    else:
        previous = None
    name = f"step-{step:08d}.{secrets.token_hex(3)}"
    building = root / f"{name}.tmp"
    building.mkdir()
    try:
        checksums = {fname: _save_tensors_synced(building / fname, tensors, {"format": FORMAT}) for fname, tensors in files.items()}
        full = {**config, "format": FORMAT, "format_version": FORMAT_VERSION, "checkpoint": f"{CHECKPOINTS}/{name}",
                "previous": previous, "checksums": checksums}
        _write_file_synced(building / "checkpoint.json", _json_bytes(full))
        _fsync_dir(building)
        os.rename(building, root / name)
        _fsync_dir(root)
    except BaseException:
        shutil.rmtree(building, ignore_errors=True)
        raise
    atomic_write_json(run_dir / "config.json", full)  # the commit
    _remove_unreferenced(run_dir, keep={full["checkpoint"], previous})
    if old is not None and not old.get("checkpoint"):  # the flat layout's files are superseded now
        for fname in TENSOR_FILES:
            (run_dir / fname).unlink(missing_ok=True)
    return full


def _remove_unreferenced(run_dir: Path, keep: set) -> None:
    root = run_dir / CHECKPOINTS
    if not root.is_dir():
        return
    for child in root.iterdir():
        if f"{CHECKPOINTS}/{child.name}" not in keep:
            shutil.rmtree(child, ignore_errors=True) if child.is_dir() else child.unlink(missing_ok=True)


def clean_stale(run_dir: str | Path) -> list[str]:
    """Remove what an interrupted write leaves in ``run_dir``: ``*.tmp`` files and checkpoint folders that
    ``config.json`` does not name (current or previous). Returns the names removed. Call it only when no
    other process writes to the run."""
    run_dir = Path(run_dir)
    removed = []
    for p in run_dir.glob(".*.tmp"):
        p.unlink(missing_ok=True)
        removed.append(p.name)
    try:
        config = read_config(run_dir)
    except CheckpointError:
        return removed
    keep = {config.get("checkpoint"), config.get("previous")}
    root = run_dir / CHECKPOINTS
    if root.is_dir():
        for child in root.iterdir():
            if f"{CHECKPOINTS}/{child.name}" not in keep:
                removed.append(f"{CHECKPOINTS}/{child.name}")
        _remove_unreferenced(run_dir, keep)
    return removed


def roll_back(run_dir: str | Path) -> dict | None:
    """Make the ``previous`` checkpoint current again (its config.json is the one kept in its folder) and
    remove the one that was current. Returns the config now current, or None when no previous one is kept."""
    run_dir = Path(run_dir)
    config = read_config(run_dir)
    previous = config.get("previous")
    if not previous or not (run_dir / previous / "checkpoint.json").exists():
        return None
    try:
        restored = json.loads((run_dir / previous / "checkpoint.json").read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return None
    restored["previous"] = None
    atomic_write_json(run_dir / "config.json", restored)
    _remove_unreferenced(run_dir, keep={restored["checkpoint"]})
    return restored


# --- reading it back ------------------------------------------------------------------------------------------
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


def read_config(run_dir: str | Path) -> dict:
    """The run's ``config.json``, checked: the format marker, an integer format version this diffkit reads,
    a ``recipe`` table, a ``step`` and a ``checksums`` table."""
    run_dir = Path(run_dir)
    path = run_dir / "config.json"
    if not run_dir.exists():
        raise CheckpointError(f"{run_dir} does not exist; pass the directory written by 'diffkit train'")
    if not run_dir.is_dir():
        raise CheckpointError(f"{run_dir} is a file, not a run directory; pass the directory written by 'diffkit train'")
    if not path.exists():
        raise CheckpointError(f"{run_dir} has no config.json, so it is not a diffkit run; pass the directory written by 'diffkit train'")
    try:
        config = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{path} is not valid JSON ({exc.msg if hasattr(exc, 'msg') else exc}); the checkpoint is corrupt, retrain or restore it") from None
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a diffkit checkpoint (no 'format: {FORMAT}' marker); pass a directory written by 'diffkit train'")
    version = config.get("format_version", 1)
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise CheckpointError(f"{path} has format_version {version!r}, not a positive integer; the file was edited or is corrupt, restore it or retrain")
    if version > FORMAT_VERSION:
        raise CheckpointError(f"{path} has format version {version}, newer than this diffkit reads ({FORMAT_VERSION}); upgrade diffkit")
    if not isinstance(config.get("recipe"), dict):
        raise CheckpointError(f"{path} has no 'recipe' table, so the model cannot be rebuilt; restore config.json from the run or retrain")
    if not isinstance(config.get("checksums"), dict):
        raise CheckpointError(f"{path} has 'checksums' as {type(config.get('checksums')).__name__}, not a table of file name to SHA-256; restore config.json or retrain")
    if not isinstance(config.get("step", 0), int):
        raise CheckpointError(f"{path} has a non-integer 'step' ({config.get('step')!r}); restore config.json or retrain")
    if "checkpoint" in config:
        where = config["checkpoint"]
        if not isinstance(where, str) or not where.startswith(f"{CHECKPOINTS}/") or ".." in where or "/" in where[len(CHECKPOINTS) + 1:]:
            raise CheckpointError(f"{path} names no checkpoint folder under {CHECKPOINTS}/ ('checkpoint': {where!r}); restore config.json or retrain")
    return config


def checkpoint_dir(run_dir: str | Path, config: dict) -> Path:
    """The folder holding the current checkpoint's tensor files (the run directory itself in format version 1)."""
    where = config.get("checkpoint")
    return Path(run_dir) / where if where else Path(run_dir)


def tensor_path(run_dir: str | Path, name: str = "model.safetensors") -> Path:
    """The path of the current checkpoint's file ``name`` (e.g. ``model.safetensors``)."""
    return checkpoint_dir(run_dir, read_config(run_dir)) / name


def load_tensors(run_dir: str | Path, name: str, config: dict) -> dict[str, torch.Tensor]:
    """Load ``name`` (e.g. ``model.safetensors``) of the current checkpoint after checking it against the
    checksum in ``config``."""
    path = checkpoint_dir(run_dir, config) / name
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


def check_shapes(expected: dict[str, torch.Tensor], found: dict[str, torch.Tensor], *, source: str, recipe: str, trained: str | None = None) -> None:
    """Refuse weights that do not fit a model before torch tries: names the first missing, unexpected or
    mis-shaped tensor and the recipe(s) involved. ``trained`` is the recipe the weights were trained with when
    it differs from the one they are loaded into (a resume); without it the weights belong to ``recipe`` by
    their run's config.json and came from elsewhere."""
    if trained is not None and trained != recipe:
        where, fix = f"{source} (trained with recipe {trained!r}) does not fit recipe {recipe!r}'s model", "load it with the recipe it was trained with"
    else:
        where, fix = (f"{source} does not fit the model of recipe {recipe!r} its config.json records",
                      "the weights come from another recipe or the installed plugin changed; restore the run's own files or retrain")
        if trained is not None:
            fix = "resume with the recipe the run was trained with or choose another --out"
    missing = [k for k in expected if k not in found]
    if missing:
        raise CheckpointError(f"{where}: it lacks tensor {missing[0]!r}" + (f" and {len(missing) - 1} more" if len(missing) > 1 else "") + f"; {fix}")
    unexpected = [k for k in found if k not in expected]
    if unexpected:
        raise CheckpointError(f"{where}: it has an unknown tensor {unexpected[0]!r}; {fix}")
    for k, v in expected.items():
        if tuple(found[k].shape) != tuple(v.shape):
            raise CheckpointError(f"{where}: tensor {k!r} has shape {tuple(found[k].shape)}, the model needs {tuple(v.shape)}; {fix}")


def prefixed(prefix: str, tensors: dict) -> dict:
    return {f"{prefix}.{k}": v for k, v in tensors.items()}


def unprefixed(prefix: str, tensors: dict) -> dict:
    p = prefix + "."
    return {k[len(p):]: v for k, v in tensors.items() if k.startswith(p)}


# --- the log ------------------------------------------------------------------------------------------------
def append_log(run_dir: str | Path, record: dict) -> None:
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(run_dir / "log.jsonl", "a") as f:
        f.write(json.dumps(record) + "\n")


def read_log(run_dir: str | Path) -> list[dict]:
    """Every record of ``log.jsonl`` (a line cut short by a kill is skipped)."""
    path = Path(run_dir) / "log.jsonl"
    if not path.exists():
        return []
    out = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict):
            out.append(record)
    return out


def truncate_log(run_dir: str | Path, step: int) -> int:
    """Keep the log's records up to ``step`` (the checkpoint a resumed run starts from), so steps trained
    after it and lost in a kill are not logged twice. Returns the number of records dropped."""
    path = Path(run_dir) / "log.jsonl"
    if not path.exists():
        return 0
    lines = path.read_text(errors="replace").splitlines()
    kept = []
    for line in lines:
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and isinstance(record.get("step"), (int, float)) and math.isfinite(record["step"]) and record["step"] <= step:
            kept.append(line)
    if len(kept) != len(lines):
        atomic_write_bytes(path, "".join(x + "\n" for x in kept).encode())
    return len(lines) - len(kept)
