"""Keep glibc's heap from holding freed activation memory.

glibc serves an allocation above ``M_MMAP_THRESHOLD`` with its own ``mmap`` and returns it on free,
but by default it raises that threshold to the size of every mmapped block it frees (up to 32 MiB).
Training steps allocate and free activations of a few MiB each, so after the first long batch they all
come from the heap, whose freed pages stay resident and fragment: on SmolLM2 + LoRA, two 16 x 254-token
steps left 17 GB resident where the live tensors peaked at 9 GB (``benchmarks/bench_train_memory.py``).
Fixing the threshold (``mallopt``) stops the drift; blocks above it are mapped and unmapped per use.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os

log = logging.getLogger(__name__)
M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter number
ENV = "GREAM_MMAP_THRESHOLD"
DEFAULT_THRESHOLD = 4 << 20


def fix_mmap_threshold(threshold: int | None = None) -> bool:
    """Fix glibc's mmap threshold (bytes; ``GREAM_MMAP_THRESHOLD``, ``0`` = leave glibc's default).

    Returns whether it was set: not on other C libraries, nor when the user tuned glibc through its own
    ``MALLOC_MMAP_THRESHOLD_`` variable.
    """
    if threshold is None:
        raw = os.environ.get(ENV, str(DEFAULT_THRESHOLD))
        try:
            threshold = int(raw)
        except ValueError as err:
            raise ValueError(f"{ENV}={raw!r}: expected a byte count (0 = glibc's default)") from err
    if threshold <= 0 or "MALLOC_MMAP_THRESHOLD_" in os.environ:
        return False
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError, TypeError):
        return False
    if not mallopt(M_MMAP_THRESHOLD, threshold):
        log.warning(
            "mallopt(M_MMAP_THRESHOLD, %d) refused; heap memory may stay resident after long batches", threshold
        )
        return False
    return True


def apply_configured_threshold(threshold: int | None) -> bool:
    """Apply a config file's ``mmap_threshold`` (bytes) unless ``GREAM_MMAP_THRESHOLD`` is set: the
    variable wins, so one run can be measured both ways without editing the file."""
    if threshold is None or ENV in os.environ:
        return False
    return fix_mmap_threshold(int(threshold))
