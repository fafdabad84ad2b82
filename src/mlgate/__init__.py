"""mlgate: a production gateway for ML inference."""

__version__ = "0.1.0"
