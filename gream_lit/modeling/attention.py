"""Attention backend choice for batches whose sequence length changes every step.

Length bucketing gives each batch its own padded length. PyTorch's cuDNN SDPA backend builds and caches
an execution graph per new shape, about 2 ms of host time per layer call: measured on an H200 with
SmolLM2's shape, a bucketed SFT step took 0.235 s with it and 0.109 s with the memory-efficient kernel
(a profile of the ``bench_sft.py`` steps; docs/benchmarks.md, "GPU"). The flash and memory-efficient kernels have no per-shape cost.
"""

from __future__ import annotations

import logging

import torch

log = logging.getLogger(__name__)


def avoid_cudnn_attention(device: torch.device, enabled: bool = True) -> None:
    """Turn PyTorch's cuDNN SDPA backend off on CUDA (process-wide) unless ``enabled`` is ``False``."""
    if not enabled or device.type != "cuda" or not torch.backends.cuda.cudnn_sdp_enabled():
        return
    torch.backends.cuda.enable_cudnn_sdp(False)
    log.info("cuDNN SDPA off: variable-length batches would rebuild its graph at every new length")
