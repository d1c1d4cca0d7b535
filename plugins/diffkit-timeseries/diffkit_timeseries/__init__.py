"""diffkit-timeseries: the timeseries modality for diffkit (space, dataset, backbone, metric, recipes)."""
__version__ = "0.1.0"
