"""tritone: GPT-SoVITS voice cloning served at production scale."""

__version__ = "0.1.0"
