import os

import pytest
import torch

from diffkit.testing import private_cache

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(scope="session", autouse=True)
def image_cache(tmp_path_factory):
    """A private $DIFFKIT_CACHE for the plugin's tests (the digits classifier is trained and cached there)."""
    with private_cache(tmp_path_factory.mktemp("diffkit-cache")) as path:
        yield path


@pytest.fixture(scope="session")
def digits_splits(image_cache):
    from diffkit_image.data import digits

    return {split: digits(split) for split in ("train", "val", "test")}


@pytest.fixture(scope="session")
def classifier(image_cache):
    """The cached digits classifier and its report (trained once per test session, ~10 s on 2 cores)."""
    from diffkit_image.classifier import digits_classifier

    return digits_classifier()
