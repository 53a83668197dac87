"""LoRA through peft, with the semantic-ID token rows trainable.

New token rows use peft's ``trainable_token_indices`` (TrainableTokens): only those rows get
gradients and optimizer state, the adapter file stores just them, and peft keeps tied input/output
embeddings tied. ``modules_to_save=["embed_tokens", "lm_head"]`` would instead copy and train the
whole 49k x 576 (SmolLM2) or 151k x 2560 (Qwen3-4B) matrices and untie them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import PreTrainedModel

TOKEN_ROWS = "trainable_tokens_delta"  # peft's parameter name of the trainable ID-token rows


@dataclass
class LoraOptions:
    """LoRA hyper-parameters.

    Args:
        r: rank of the update matrices.
        alpha: scaling numerator (update scaled by alpha / r).
        dropout: dropout on the LoRA input.
        target_modules: module names to adapt (all attention and MLP projections by default).
        train_new_tokens: train the semantic-ID token rows (needed when they are new).
    """

    r: int = 16
    alpha: int = 32
    dropout: float = 0.05
    target_modules: list[str] = field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    )
    train_new_tokens: bool = True


# checkpoint hyperparameters hold it: let torch.load(weights_only=True) rebuild it
torch.serialization.add_safe_globals([LoraOptions])


def apply_lora(model: PreTrainedModel, options: LoraOptions, token_ids: list[int]) -> PeftModel:
    """Wrap ``model`` in a LoRA PeftModel; ``token_ids`` rows of the input embedding stay trainable."""
    config = LoraConfig(
        r=options.r,
        lora_alpha=options.alpha,
        lora_dropout=options.dropout,
        target_modules=list(options.target_modules),
        trainable_token_indices=list(token_ids) if options.train_new_tokens and token_ids else None,
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, config)
