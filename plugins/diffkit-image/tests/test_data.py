import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from diffkit.testing import check_dataset
from diffkit_image.data import ImageDataError, ImageFolderWarning, digits, image_folder, load_digit_arrays


# --- scikit-learn digits ---------------------------------------------------------------------------------
def test_digits_split_sizes_are_disjoint_and_cover_the_data(digits_splits):
    sizes = {k: len(v) for k, v in digits_splits.items()}
    assert sizes == {"train": 1259, "val": 179, "test": 359} and sum(sizes.values()) == 1797
    images, labels = load_digit_arrays()
    # together the splits hold exactly the source images with their labels (as multisets of rows)
    rows = sorted(tuple((d.images[i, 0] * 16).round().int().flatten().tolist()) + (int(d.labels[i]),) for d in digits_splits.values() for i in range(len(d)))
    source = sorted(tuple(images[i].astype(int).flatten().tolist()) + (int(labels[i]),) for i in range(len(images)))
    assert rows == source
    assert digits_splits["train"].space.shape == (1, 8, 8) and digits_splits["train"].space.levels == 17


def test_digits_splits_are_stratified(digits_splits):
    total = np.bincount(load_digit_arrays()[1], minlength=10)
    for split, frac in (("test", 0.2), ("val", 0.1)):
        per_class = np.bincount(digits_splits[split].labels.numpy(), minlength=10)
        assert np.all(np.abs(per_class - frac * total) <= 1), (split, per_class, frac * total)
    train = np.bincount(digits_splits["train"].labels.numpy(), minlength=10)
    assert np.all(np.abs(train - 0.7 * total) <= 2)


def test_digits_are_deterministic_and_seeded(digits_splits):
    again = digits("test")
    assert torch.equal(again.images, digits_splits["test"].images) and torch.equal(again.labels, digits_splits["test"].labels)
    other = digits("test", seed=1)
    assert len(other) == len(again) and not torch.equal(other.images, again.images)
    assert torch.equal(other.labels.bincount(), again.labels.bincount())  # stratified under any seed


def test_digits_values_are_on_17_levels_and_items_are_labelled(digits_splits):
    d = digits_splits["train"]
    k = d.images * 16
    assert torch.equal(k, k.round()) and d.images.min() == 0 and d.images.max() == 1
    x, y = d[5]
    assert x.shape == (1, 8, 8) and isinstance(y, int) and 0 <= y <= 9
    assert torch.equal(d.space.validate(x), x)


def test_digits_upsampled_and_bad_options():
    d16 = digits("val", size=16)
    assert d16.images.shape[1:] == (1, 16, 16) and d16.space.levels == 256
    small = torch.nn.functional.avg_pool2d(d16.images, 2)  # back to 8×8: the native images, a little blurred by bilinear upsampling
    assert torch.corrcoef(torch.stack([small.flatten(), digits("val").images.flatten()]))[0, 1] > 0.95
    assert torch.equal(d16.labels, digits("val").labels)
    with pytest.raises(ImageDataError, match="size must be 8"):
        digits("train", size=12)
    with pytest.raises(ImageDataError, match="unknown split"):
        digits("training")
    with pytest.raises(ImageDataError, match="sum below 1"):
        digits("train", val_fraction=0.5, test_fraction=0.5)


# --- image folders ----------------------------------------------------------------------------------------
def save(path, array, mode=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(array, dtype=np.uint8), mode=mode).save(path)


@pytest.fixture
def folder(tmp_path):
    """cats/ (3 RGB PNGs, 16×16, uniform colours) and dogs/ (2 greyscale JPEGs 12×12 and one tall PNG 8×16)."""
    root = tmp_path / "pets"
    for i, colour in enumerate([(255, 0, 0), (0, 255, 0), (0, 0, 255)]):
        save(root / "cats" / f"c{i}.png", np.tile(np.array(colour, np.uint8), (16, 16, 1)))
    for i in range(2):
        save(root / "dogs" / f"d{i}.jpg", np.full((12, 12), 100 + 50 * i))
    tall = np.zeros((16, 8), np.uint8)
    tall[:4] = 255  # white top quarter: gone after the centre crop, kept by a squashing resize
    save(root / "dogs" / "tall.png", tall)
    return root


def test_image_folder_classes_from_subfolders(folder):
    d = image_folder("train", root=str(folder), size=8, channels=3, val_fraction=0, test_fraction=0)
    assert d.classes == ["cats", "dogs"] and len(d) == 6
    assert d.files == ["cats/c0.png", "cats/c1.png", "cats/c2.png", "dogs/d0.jpg", "dogs/d1.jpg", "dogs/tall.png"]
    assert d.labels.tolist() == [0, 0, 0, 1, 1, 1]
    assert d.images.shape == (6, 3, 8, 8) and d.space.shape == (3, 8, 8) and d.space.levels == 256
    assert torch.allclose(d.images[0], torch.tensor([1.0, 0, 0])[:, None, None].expand(3, 8, 8))  # red, resized 16 -> 8
    tall = d.images[5]
    assert tall.max() == 0, "the tall image is centre-cropped, not squashed: its white top quarter is cut away"
    assert torch.allclose(d.images[3], torch.full((3, 8, 8), 100 / 255), atol=3 / 255)  # greyscale JPEG -> RGB
    grey = image_folder("train", root=str(folder), size=8, channels=1, val_fraction=0, test_fraction=0)
    assert grey.images.shape == (6, 1, 8, 8) and torch.allclose(grey.images[0], torch.full((1, 8, 8), 0.299), atol=2 / 255)
    x, y = d[4]
    assert y == 1 and torch.equal(d.space.validate(x), x)


def test_image_folder_splits_partition_the_files(folder):
    splits = {s: image_folder(s, root=str(folder), size=8, channels=1, val_fraction=0.34, test_fraction=0.34, seed=3) for s in ("train", "val", "test")}
    files = [f for d in splits.values() for f in d.files]
    assert sorted(files) == sorted(set(files)) and len(files) == 6
    assert all(set(d.labels.tolist()) == {0, 1} for d in splits.values())  # stratified: each class in each split


def test_unreadable_file_is_skipped_and_named(folder):
    (folder / "dogs" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    with pytest.warns(ImageFolderWarning, match=r"skipped 1 unreadable file.*dogs/broken\.png"):
        d = image_folder("train", root=str(folder), size=8, val_fraction=0, test_fraction=0)
    assert len(d) == 6 and "dogs/broken.png" not in d.files
    assert [s["item"] for s in d.skipped] == ["dogs/broken.png"]


def test_a_folder_with_nothing_readable_is_an_error(tmp_path):
    root = tmp_path / "bad"
    for name in ("a/x.png", "a/y.jpg", "b/z.jpeg"):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(b"garbage")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ImageFolderWarning)
        with pytest.raises(ImageDataError, match=r"none of the 3 image file\(s\).*could be read.*replace them") as exc:
            image_folder("train", root=str(root), size=8, val_fraction=0, test_fraction=0)
    assert "\n" not in str(exc.value)
    (root / "empty").mkdir()
    with pytest.raises(ImageDataError, match="no .png/.jpg/.jpeg file"):
        image_folder("train", root=str(root / "empty"))
    with pytest.raises(ImageDataError, match="not a folder"):
        image_folder("train", root=str(root / "missing"))
    with pytest.raises(ImageDataError, match="no root folder"):
        image_folder("train")


def test_unlabelled_folder_and_the_dataset_contract(tmp_path, folder):
    flat = tmp_path / "flat"
    for i in range(4):
        save(flat / f"{i}.png", np.full((10, 14, 3), 40 * i))
    d = image_folder("train", root=str(flat), size=6, val_fraction=0, test_fraction=0)
    assert d.labels is None and d.classes == [] and d[0].shape == (3, 6, 6)
    checked = check_dataset(image_folder, options={"root": str(folder), "size": 8, "channels": 3, "val_fraction": 0.2, "test_fraction": 0.2},
                            name="image-folder")
    assert {"factory", "items", "determinism", "space"} <= set(checked)


def test_sixteen_bit_png_is_scaled_by_its_own_depth(tmp_path):
    """A 16-bit greyscale PNG whose mean is 0.494 of full scale loads with that mean (it saturated to ~1 before)."""
    root = tmp_path / "deep"
    root.mkdir()
    ramp = np.tile(np.linspace(0, 64750, 16), (16, 1)).astype(np.uint16)  # mean 32375 / 65535 = 0.494
    Image.fromarray(ramp).save(root / "ramp.png")
    with Image.open(root / "ramp.png") as img:
        assert img.mode.startswith("I"), img.mode  # really 16-bit on disk
    d = image_folder("train", root=str(root), size=16, channels=1, val_fraction=0, test_fraction=0)
    assert abs(float(d.images.mean()) - ramp.mean() / 65535) < 1e-3
    rgb = image_folder("train", root=str(root), size=8, channels=3, val_fraction=0, test_fraction=0)
    assert rgb.images.shape[1] == 3 and abs(float(rgb.images.mean()) - 0.494) < 0.01
