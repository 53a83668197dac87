"""Shared test fixtures: where the real datasets are, and tiny catalogs built in code."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

# Tests never reach a model hub: everything loads from disk or is built in code.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


def shared_dataset(name: str) -> Path:
    """Path of a real dataset under ../shared/data, or skip the test where it is absent."""
    path = SHARED_DATA / name
    if not path.is_dir():
        pytest.skip(f"real dataset {path} not present")
    return path


@pytest.fixture
def scientific_dir() -> Path:
    return shared_dataset("amazon18_scientific")


@pytest.fixture
def ml100k_dir() -> Path:
    return shared_dataset("ml-100k")


@pytest.fixture
def one_thread():
    """Tiny models run fastest on one thread, and the CI machine's cores are shared."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
