"""diffkit-image: the image modality plugin for diffkit.

Registers the ``image`` space (PNG grids), the ``unet`` backbone, the ``digits`` and ``image-folder``
datasets, the ``digits-frechet`` and ``digits-accuracy`` metrics and the ``digits`` / ``digits-flow`` / ``digits-smoke``
recipes (see ``setup.cfg``). Importing this package imports nothing heavy.
"""
__version__ = "0.1.0"
