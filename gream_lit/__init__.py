"""gream_lit: GREAM generative reasoning recommendation on PyTorch Lightning."""

__version__ = "0.1.0"


def __getattr__(name: str):
    """``gream_lit.load_recommender`` without importing torch and transformers for every ``import gream_lit``."""
    if name == "load_recommender":
        from gream_lit.inference.bundle import load_recommender

        return load_recommender
    raise AttributeError(f"module 'gream_lit' has no attribute {name!r}")
