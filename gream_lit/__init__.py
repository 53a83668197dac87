"""gream_lit: GREAM generative reasoning recommendation on PyTorch Lightning."""

__version__ = "0.1.0"
