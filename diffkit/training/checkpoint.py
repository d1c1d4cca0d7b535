"""The run-directory format moved to :mod:`diffkit.rundir`; these names are kept for code that imports them here."""
from diffkit.rundir import (  # noqa: F401
    FORMAT, FORMAT_VERSION, CheckpointError, atomic_save_tensors, atomic_write_bytes, atomic_write_json, load_tensors, prefixed, read_config, sha256,
    unprefixed,
)
