"""Activation recomputation for long training batches only.

A transformer's activation memory grows with the padded tokens of a batch, and a few long rows set the
peak: on Scientific's dense alignment rows (22 tokens on average, 256 at most) the peak resident memory
is paid by the rare 16 x 256-token batch. Recomputing activations in the backward pass (gradient
checkpointing) gives the same gradients at about a third more compute, so it pays on those batches
and nowhere else: ``LongBatchCheckpointing`` switches it on per batch above a token budget.
"""

from __future__ import annotations

import torch
from transformers.modeling_layers import GradientCheckpointingLayer


class LongBatchCheckpointing:
    """Per-batch switch of Hugging Face gradient checkpointing on a causal LM's decoder layers.

    Args:
        model: the ``PreTrainedModel`` (before or after peft wrapping: layers are found by type).
        max_tokens: batches with more padded tokens (rows x length) recompute their activations.
    """

    def __init__(self, model: torch.nn.Module, max_tokens: int) -> None:
        if max_tokens < 1:
            raise ValueError(f"checkpoint_tokens must be a positive token count, got {max_tokens}")
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        base.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        self.layers = [m for m in base.modules() if isinstance(m, GradientCheckpointingLayer)]
        if not self.layers:
            raise ValueError(f"{type(base).__name__} has no gradient-checkpointing layers")
        self.max_tokens = max_tokens
        self.set(False)

    def set(self, enabled: bool) -> None:
        for layer in self.layers:
            layer.gradient_checkpointing = enabled

    def for_batch(self, input_ids: torch.Tensor) -> bool:
        """Switch recomputation on iff this batch is over the budget; returns the choice."""
        enabled = input_ids.numel() > self.max_tokens
        self.set(enabled)
        return enabled
