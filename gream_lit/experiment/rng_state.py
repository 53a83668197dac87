"""Random-number streams saved in every checkpoint, so that a resumed run continues them.

Lightning restores weights, optimizer, scheduler, loop counters and callback states, but not the
streams that dropout, data shuffling and sampling draw from: a run resumed after a kill reseeds and
then draws other dropout masks and another shuffle than the uninterrupted run would have. This
callback stores the Python, NumPy and torch (CPU and every CUDA device) states in the checkpoint and
puts them back when the checkpoint is loaded, before the first training batch is drawn.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch
from lightning.pytorch.callbacks import Callback


def collect_rng_states() -> dict[str, Any]:
    """Every stream as plain Python and tensor values (loadable with ``weights_only=True``)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    states: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": [kind, keys.tolist(), pos, has_gauss, gauss],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict[str, Any]) -> None:
    """Put back what ``collect_rng_states`` returned."""
    version, internal, gauss_next = states["python"]
    random.setstate((version, tuple(internal), gauss_next))
    kind, keys, pos, has_gauss, gauss = states["numpy"]
    np.random.set_state((kind, np.array(keys, dtype=np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available() and len(states["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(states["cuda"])  # another device count: CUDA streams start fresh


class RngState(Callback):
    """Checkpoints the random-number streams and restores them on resume (see the module docstring)."""

    def state_dict(self) -> dict[str, Any]:
        return collect_rng_states()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if state_dict:
            set_rng_states(state_dict)
