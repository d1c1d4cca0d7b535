import os

import pytest
import torch

from diffkit.testing import private_cache

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

QM9_ROWS = 1500  # tests process only the first rows of QM9 (a few seconds)


@pytest.fixture(scope="session", autouse=True)
def molecule_cache(tmp_path_factory):
    """A private $DIFFKIT_CACHE for the plugin's tests (processing and FCD statistics go there)."""
    with private_cache(tmp_path_factory.mktemp("diffkit-cache")) as path:
        yield path


@pytest.fixture(scope="session")
def qm9_small(molecule_cache):
    from diffkit_molecule.data import qm9

    return {split: qm9(split, source_limit=QM9_ROWS) for split in ("train", "val", "test")}
