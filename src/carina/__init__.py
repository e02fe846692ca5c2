"""Carina: open medical-imaging AI on PyTorch and MONAI."""

__version__ = "0.1.0"
