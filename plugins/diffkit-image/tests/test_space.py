import numpy as np
import pytest
import torch
from PIL import Image

from diffkit.spaces import SpaceError
from diffkit.testing import check_space
from diffkit_image.space import ImageSpace, grid_array


def levels_image(shape, levels, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, levels, shape, generator=g).float() / (levels - 1)


def test_validate_rejects_wrong_shape_and_range_in_one_line():
    space = ImageSpace((1, 8, 8), levels=17)
    with pytest.raises(SpaceError, match=r"expected an image of shape \(1, 8, 8\).*got \(1, 8, 9\)") as wrong_shape:
        space.validate(torch.zeros(1, 8, 9))
    rgb = ImageSpace((3, 4, 6), levels=256)
    with pytest.raises(SpaceError, match=r"channels first"):
        rgb.validate(torch.zeros(4, 6, 3))
    with pytest.raises(SpaceError, match=r"\[0, 1\].*divide by 255") as out_of_range:
        space.validate(torch.full((1, 8, 8), 255.0))
    with pytest.raises(SpaceError, match=r"\[0, 1\]"):
        space.validate(torch.full((1, 8, 8), -0.5))
    with pytest.raises(SpaceError, match="NaN"):
        space.validate(torch.full((1, 8, 8), float("nan")))
    with pytest.raises(SpaceError, match=r"levels 0\.\.16"):
        space.validate(torch.full((1, 8, 8), 17, dtype=torch.int64))
    for exc in (wrong_shape, out_of_range):
        assert "\n" not in str(exc.value) and "; " in str(exc.value)  # one line: the problem; the fix
    # integers are level indices: 16 of 17 levels is white
    assert torch.equal(space.validate(torch.full((1, 8, 8), 16, dtype=torch.int64)), torch.ones(1, 8, 8))
    with pytest.raises(SpaceError, match="C = 1"):
        ImageSpace((2, 8, 8))


@pytest.mark.parametrize("shape,levels", [((1, 8, 8), 17), ((3, 5, 7), 256), ((1, 6, 6), 4)])
def test_write_then_read_png_is_exact_at_the_space_levels(tmp_path, shape, levels):
    space = ImageSpace(shape, levels=levels)
    images = [levels_image(shape, levels, seed=s) for s in range(5)]
    images[0][:] = 0.0
    images[1][:] = 1.0  # both ends of the scale
    paths = space.write(images, tmp_path)
    assert all(p.exists() for p in paths)
    back, failures = space.read(tmp_path)
    assert failures == [] and len(back) == len(images)
    for a, b in zip(back, images):
        assert a.shape == b.shape and torch.equal(a, b)


def test_read_reports_bad_files_by_name(tmp_path):
    space = ImageSpace((1, 8, 8), levels=17)
    space.write([levels_image((1, 8, 8), 17)], tmp_path, individual=True)
    folder = tmp_path / "images"
    (folder / "zz_broken.png").write_bytes(b"not a png")
    Image.fromarray(np.zeros((5, 5), np.uint8)).save(folder / "zz_small.png")
    items, failures = space.read(tmp_path)
    assert len(items) == 1
    assert [f["item"] for f in failures] == ["zz_broken.png", "zz_small.png"]
    assert "shape" in failures[1]["reason"]


def test_per_class_grids_are_written(tmp_path):
    space = ImageSpace((1, 8, 8), levels=17)
    labels = [0, 1, 1, 2, 2, 2]
    images = [torch.full((1, 8, 8), lab / 2.0) for lab in labels]
    paths = space.write(images, tmp_path, labels=labels, display_size=8)
    names = [p.name for p in paths]
    assert names[:4] == ["samples.png", "samples_class0.png", "samples_class1.png", "samples_class2.png"]
    assert sorted(p.name for p in (tmp_path / "images").iterdir()) == ["00000_c0.png", "00001_c1.png", "00002_c1.png", "00003_c2.png", "00004_c2.png", "00005_c2.png"]
    # class 2's grid: 3 images of value 1.0 in a 2×2 grid (white padding and one white blank cell)
    grid = np.asarray(Image.open(tmp_path / "samples_class2.png"))
    assert grid.shape == (2 * 9 + 1, 2 * 9 + 1)
    class1 = np.asarray(Image.open(tmp_path / "samples_class1.png"))
    assert class1.shape == (1 * 9 + 1, 2 * 9 + 1) and class1[1:9, 1:9].max() == 128 and class1[1:9, 1:9].min() == 128
    # the overview: one row per class, as wide as the largest class
    overview = np.asarray(Image.open(tmp_path / "samples.png"))
    assert overview.shape == (3 * 9 + 1, 3 * 9 + 1)
    assert overview[1:9, 1:9].max() == 0  # row 0 (class 0) starts with a black image
    with pytest.raises(SpaceError, match="labels"):
        space.write(images, tmp_path / "x", labels=[0, 1])
    back, back_labels, failures = space.read_labelled(tmp_path)  # diffkit eval reads the labels back from the names
    assert failures == [] and back_labels == labels and all(torch.equal(a, b) for a, b in zip(back, images))
    (tmp_path / "images" / "00006.png").write_bytes((tmp_path / "images" / "00000_c0.png").read_bytes())
    assert space.read_labelled(tmp_path)[1] is None  # one unlabelled file: no labels rather than misaligned ones


def test_grid_array_layout():
    imgs = [torch.full((3, 2, 2), v) for v in (0.0, 0.5, 1.0)]
    grid = grid_array(imgs, ncol=2, pad=1, pad_value=1.0)
    assert grid.shape == (2 * 3 + 1, 2 * 3 + 1, 3)
    assert (grid[1:3, 1:3] == 0).all() and (grid[1:3, 4:6] == 128).all() and (grid[4:6, 1:3] == 255).all()


def test_decode_inverts_dequantised_training_data():
    """Training sees level k as (k + U)/L; decoding must give k back for every draw, including the extremes."""
    space = ImageSpace((1, 8, 8), levels=17)
    images = [levels_image((1, 8, 8), 17, seed=s) for s in range(16)]
    state = space.collate(images, train=True, generator=torch.Generator().manual_seed(0))
    assert not torch.equal(state["x"], space.collate(images)["x"])  # dequantised
    decoded = space.decode(state)
    assert all(torch.equal(a, b) for a, b in zip(decoded, images))
    # and any sampler output decodes onto the levels
    wild = space.decode({"x": 3 * torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(1))})
    for x in wild:
        k = x * 16
        assert torch.equal(k, k.round()) and x.min() >= 0 and x.max() <= 1


def test_space_passes_the_conformance_kit_in_rgb():
    space = ImageSpace((3, 4, 4), levels=256)
    examples = [levels_image((3, 4, 4), 256, seed=s) for s in range(4)]
    checked = check_space(space, examples, registered_name="image")
    assert {"round-trip", "bad-input", "decode-any", "write"} <= set(checked)
    assert type(space)(**space.config()).config() == space.config()
