"""Test environment helpers for plugin authors."""
from __future__ import annotations

import contextlib
import os
from pathlib import Path


@contextlib.contextmanager
def private_cache(path: str | Path):
    """Point ``$DIFFKIT_CACHE`` (where datasets, classifiers and reference statistics are cached) at
    ``path`` for the duration, then restore it, so tests neither read nor write the user's cache::

        @pytest.fixture(scope="session", autouse=True)
        def cache(tmp_path_factory):
            with private_cache(tmp_path_factory.mktemp("diffkit-cache")) as path:
                yield path
    """
    old = os.environ.get("DIFFKIT_CACHE")
    os.environ["DIFFKIT_CACHE"] = str(path)
    try:
        yield Path(path)
    finally:
        if old is None:
            os.environ.pop("DIFFKIT_CACHE", None)
        else:
            os.environ["DIFFKIT_CACHE"] = old


def needs_shipped(name: str, distribution: str = "its distribution"):
    """A pytest mark that skips a test unless the shipped model ``name`` is installed (a wheel built without
    its weights, or an install of the code alone, still passes the rest of the suite)::

        @needs_shipped("spoken-digits-mel", "diffkit-audio")
        def test_sample(): ...
    """
    import pytest

    from diffkit import pretrained

    return pytest.mark.skipif(name not in pretrained.names(), reason=f"{distribution}'s shipped {name} model is not installed")
