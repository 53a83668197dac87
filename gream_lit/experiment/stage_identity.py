"""Every checkpoint a stage writes carries the stage's identity, so a resume refuses a foreign one.

A stage folder gets a random ``STAGE_ID`` when it starts; ``StageIdentity`` puts it into each
checkpoint. Resuming from a ``last.ckpt`` whose identity differs (a checkpoint copied in from another
run or stage, even one with the same shapes) is an error naming the file. A copied run directory
(``cp -a``) keeps both, so it resumes as before.
"""

from __future__ import annotations

import pickle
import uuid
from pathlib import Path
from typing import Any

import lightning as L
import torch

from gream_lit.experiment.composition import PipelineError

FILE_NAME = "STAGE_ID"
KEY = "gream_stage_id"


class StageIdentity(L.Callback):
    """Writes the stage's identity into every checkpoint."""

    def __init__(self, identity: str) -> None:
        self.identity = identity

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        checkpoint[KEY] = self.identity


def stage_identity(stage_dir: Path, resume: str | None) -> str:
    """The stage's identity; a resume checkpoint must carry it. A stage folder written before identities
    existed gets one now (its checkpoints, which carry none, are accepted)."""
    path = stage_dir / FILE_NAME
    if path.is_file():
        identity = path.read_text().strip()
        if resume is not None:
            try:
                found = torch.load(resume, map_location="cpu", mmap=True, weights_only=True).get(KEY)
            except pickle.UnpicklingError:  # holds objects torch will not load safely: Lightning decides
                return identity
            if found != identity:
                raise PipelineError(
                    f"{resume}: this checkpoint was not written by stage folder {stage_dir} (it carries "
                    f"{'no stage identity' if found is None else 'another stage identity'}); remove it to start "
                    "the stage over, or put back the stage's own checkpoint"
                )
        return identity
    identity = uuid.uuid4().hex
    path.write_text(identity + "\n")
    return identity
