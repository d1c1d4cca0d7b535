import os

import pytest
import torch

from diffkit.testing import private_cache

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(scope="session", autouse=True)
def audio_cache(tmp_path_factory):
    """A private $DIFFKIT_CACHE for the plugin's tests (synthesised digits and the classifier go there)."""
    with private_cache(tmp_path_factory.mktemp("diffkit-cache")) as path:
        yield path


@pytest.fixture(scope="session")
def digits_test(audio_cache):
    """The quick recipe's held-out split: 10 clips per digit."""
    from diffkit_audio.data import spoken_digits

    return spoken_digits("test", eval_per_class=10, seed=0)
