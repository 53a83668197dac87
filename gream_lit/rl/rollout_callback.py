"""Rollouts as a Lightning callback: the RL module trains on whatever group of responses fills its batch.

``RolloutCallback`` samples ``n`` responses per prompt before each training step and puts them in the
batch under ``"rollout"``; ``SRPOModule.training_step`` only scores them and updates the policy. The
generation is pluggable: by default the module's own ``RolloutEngine`` (HF ``generate``), or any
object with the same ``generate(model, messages, sampling) -> Rollout`` method, e.g. a client of a vLLM
or sglang server, or fixed rollouts in a test. ``SRPOModule`` adds a default ``RolloutCallback`` itself
unless the trainer already has one. The seconds the generation took go in the batch under
``"rollout_seconds"`` (the module's rollout tokens per second).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Protocol

import lightning as L
import torch

from gream_lit.inference.sampling import Rollout, SamplingConfig

ROLLOUT_KEY = "rollout"
ROLLOUT_SECONDS_KEY = "rollout_seconds"


class GenerationEngine(Protocol):
    """What a rollout source provides: ``sampling.n`` responses per prompt, grouped by prompt."""

    def generate(self, model: torch.nn.Module, messages: Sequence, sampling: SamplingConfig) -> Rollout: ...


class RolloutCallback(L.Callback):
    """Fills each training batch with the policy's rollouts for its prompts.

    Args:
        engine: the generation engine; ``None`` uses the RL module's ``engine`` (``RolloutEngine``).
    """

    def __init__(self, engine: GenerationEngine | None = None) -> None:
        self.engine = engine

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: dict, batch_idx: int):
        engine = self.engine or pl_module.engine
        start = time.perf_counter()
        batch[ROLLOUT_KEY] = engine.generate(pl_module.policy, batch["messages"], pl_module.sampling["train"])
        batch[ROLLOUT_SECONDS_KEY] = time.perf_counter() - start
