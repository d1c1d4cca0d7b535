"""diffkit-molecule: molecular graphs for diffkit (QM9, SMILES files, a graph transformer, molecule metrics).

Components are registered through entry points (see setup.cfg); importing this package imports nothing heavy.
"""
__version__ = "0.1.0"
