"""MNIST at 28×28, its judge, the autoencoder first stage, and the image-folder path on real PNG files."""
import numpy as np
import pytest
import torch

from diffkit.recipe import load_recipe
from diffkit.testing import ConformanceError, check_representation

from diffkit_image.autoencoder import ImageAutoencoder
from diffkit_image.data import ImageDataError, digits, image_folder, mnist, write_image_folder


def mean_abs_error(a, b) -> float:
    return float((torch.as_tensor(a) - torch.as_tensor(b)).abs().mean())


@pytest.fixture(scope="module")
def mnist_splits():
    return {s: mnist(s) for s in ("train", "val", "test")}


def test_mnist_splits_are_stratified_disjoint_and_on_256_levels(mnist_splits):
    sizes = {s: len(d) for s, d in mnist_splits.items()}
    assert sizes == {"train": 3500, "val": 500, "test": 1000}
    for d in mnist_splits.values():
        assert d.images.shape[1:] == (1, 28, 28) and d.space.levels == 256
        assert np.bincount(d.labels.numpy()).tolist() == [len(d) // 10] * 10
        assert torch.equal(torch.round(d.images * 255) / 255, d.images) and float(d.images.max()) == 1.0
    flat = {s: {tuple(x.flatten().tolist()[::7]) for x in d.images[:200]} for s, d in mnist_splits.items()}
    assert not (flat["train"] & flat["test"])  # no image of test's first 200 is in train's first 200
    assert torch.equal(mnist("test").images, mnist_splits["test"].images)  # deterministic
    with pytest.raises(ImageDataError, match="unknown split"):
        mnist("dev")


def test_mnist_recipes_load():
    pixel, latent = load_recipe("mnist"), load_recipe("mnist-latent")
    assert pixel["data"]["dataset"] == latent["data"]["dataset"] == "mnist"
    assert "representation" not in pixel and latent["representation"]["name"] == "autoencoder"
    assert "bits-per-dim" in pixel["eval"]["metrics"] and "bits-per-dim" not in latent["eval"]["metrics"]
    from diffkit.bench import tier_recipe

    quick, _ = tier_recipe(latent, "quick")
    assert quick["representation"]["options"]["steps"] == 30 and quick["representation"]["options"]["latent_channels"] == 4


def test_autoencoder_meets_its_round_trip_bound_after_fitting_and_not_before(digits_splits):
    space = digits_splits["train"].space
    options = dict(latent_channels=4, downsample=1, width=8, steps=300, batch_size=64, lr=3e-3)
    held_out = list(digits_splits["test"].images[:40])
    untrained = ImageAutoencoder(space, **options)
    with pytest.raises(ConformanceError, match=r"\[round-trip\]"):
        check_representation(untrained, held_out, bound=0.12, error=mean_abs_error)
    rep = ImageAutoencoder(space, **options)
    report = rep.fit(list(digits_splits["train"].images))
    assert report["train_mse"] < 0.05 and report["steps"] == 300
    figures = check_representation(rep, held_out, bound=0.12, error=mean_abs_error, registered_name="autoencoder")
    assert figures["code_shape"] == {"x": [4, 4, 4]}
    codes = torch.stack(rep.encode(list(digits_splits["train"].images)))
    assert codes.mean((0, 2, 3)).abs().max() < 1e-3 and (codes.std((0, 2, 3)) - 1).abs().max() < 1e-2  # codes of unit scale


def test_autoencoder_refuses_sizes_it_cannot_halve_and_foreign_weights(digits_splits):
    from diffkit.representations import RepresentationError

    with pytest.raises(RepresentationError, match="do not halve 4 times"):
        ImageAutoencoder(digits_splits["train"].space, downsample=4)
    small = ImageAutoencoder(digits_splits["train"].space, downsample=1, width=8)
    with pytest.raises(RepresentationError, match="weights do not fit its options"):
        ImageAutoencoder(digits_splits["train"].space, downsample=1, width=16).load_state_dict(small.state_dict())


@pytest.mark.slow
def test_the_28x28_judge_recognises_real_mnist(image_cache, mnist_splits):
    from diffkit_image.classifier import MNIST_CONFIG, classify, digits_classifier

    _, report = digits_classifier(MNIST_CONFIG)
    assert report["test_accuracy"] >= 0.95 and report["n_train"] == 3500
    _, probs = classify(list(mnist_splits["val"].images[:200]))  # 28×28 images go to the 28×28 judge
    assert float((probs.argmax(1) == mnist_splits["val"].labels[:200]).float().mean()) >= 0.93
    blank = classify([torch.zeros(1, 28, 28)] * 3)[1]
    assert torch.allclose(blank[0], blank[2])


def test_write_image_folder_is_read_back_exactly_by_image_folder(tmp_path, mnist_splits):
    test = mnist_splits["test"]
    subset = type(test)(test.images[::20], test.labels[::20], test.space, classes=test.classes)
    root = write_image_folder(subset, tmp_path / "mnist-test")
    assert sorted(p.name for p in root.iterdir()) == [str(c) for c in range(10)]
    read = [image_folder(s, root=str(root), size=28, channels=1, val_fraction=0.1, test_fraction=0.2) for s in ("train", "val", "test")]
    assert sum(len(d) for d in read) == len(subset)
    images = torch.cat([d.images for d in read])
    labels = torch.cat([d.labels for d in read])
    # every image read back equals one written, with its class
    written = {tuple((x * 255).round().int().flatten().tolist()): int(y) for x, y in zip(subset.images, subset.labels)}
    assert all(written[tuple((x * 255).round().int().flatten().tolist())] == int(y) for x, y in zip(images, labels))
