"""Checkpoints of LoRA stages that hold what is trained, not a copy of the frozen base.

A Lightning checkpoint of a LoRA module would store the whole base model (540 MB for SmolLM2) next to
an adapter of a few MB. These helpers keep the trained parameters (adapter, ID-token rows) and their
optimizer state, and record a fingerprint of the base weights instead, so that resuming on other base
weights fails with a message rather than training on silently. Modules using them set
``strict_loading = False`` under LoRA: the frozen base comes from its path, not from the checkpoint.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch


def weights_fingerprint(folder: str) -> str | None:
    """sha256 over a local model folder's weight files (``None`` for a hub name or an alias)."""
    files = sorted(Path(folder).glob("*.safetensors")) + sorted(Path(folder).glob("*.bin"))
    if not files:
        return None
    digest = hashlib.sha256()
    for path in files:
        with path.open("rb") as f:
            while chunk := f.read(1 << 24):
                digest.update(chunk)
    return digest.hexdigest()[:16]


def keep_trained(checkpoint: dict, module: torch.nn.Module, fingerprint: str | None) -> None:
    """Drop frozen parameters from ``checkpoint['state_dict']`` and record the base's fingerprint."""
    trained = {name for name, p in module.named_parameters() if p.requires_grad}
    checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if k in trained}
    checkpoint["frozen_base"] = {"fingerprint": fingerprint}


def check_base(checkpoint: dict, fingerprint: str | None, source: str) -> None:
    """Refuse a slim checkpoint trained on other base weights than ``source`` (the path in use)."""
    base = checkpoint.get("frozen_base")
    if base and fingerprint and base["fingerprint"] and base["fingerprint"] != fingerprint:
        raise ValueError(
            f"checkpoint was trained on a base model with fingerprint {base['fingerprint']}, but {source} "
            f"has {fingerprint}; point the backbone at the weights the stage started from"
        )
