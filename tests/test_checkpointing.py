"""Per-batch activation recomputation: same loss and gradients, switched only above the token budget."""

import pytest
import torch

from gream_lit.modeling.checkpointing import LongBatchCheckpointing
from gream_lit.modeling.lora import LoraOptions, apply_lora
from gream_lit.modeling.tiny import tiny_causal_lm


def _grads(model: torch.nn.Module, ids: torch.Tensor) -> tuple[float, dict[str, torch.Tensor]]:
    model.zero_grad()
    loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    return loss.item(), {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}


def _lora_model() -> torch.nn.Module:
    model = apply_lora(tiny_causal_lm(vocab_size=50, num_layers=3), LoraOptions(r=4, alpha=8, dropout=0.0), [40, 41])
    return model.train()


def test_switch_follows_the_token_budget():
    model = _lora_model()
    switch = LongBatchCheckpointing(model, max_tokens=20)
    assert len(switch.layers) == 3
    assert not switch.for_batch(torch.zeros(4, 5, dtype=torch.long))
    assert not any(layer.gradient_checkpointing for layer in switch.layers)
    assert switch.for_batch(torch.zeros(4, 6, dtype=torch.long))
    assert all(layer.gradient_checkpointing for layer in switch.layers)


def test_recomputed_batches_have_the_same_loss_and_gradients():
    ids = torch.randint(0, 50, (4, 12), generator=torch.Generator().manual_seed(0))
    model = _lora_model()
    loss_plain, grads_plain = _grads(model, ids)
    switch = LongBatchCheckpointing(model, max_tokens=8)
    assert switch.for_batch(ids)
    loss_ckpt, grads_ckpt = _grads(model, ids)
    assert loss_ckpt == pytest.approx(loss_plain, rel=1e-6)
    assert grads_plain.keys() == grads_ckpt.keys() and len(grads_plain) > 6
    for name, grad in grads_plain.items():
        torch.testing.assert_close(grads_ckpt[name], grad, rtol=1e-5, atol=1e-6, msg=name)


def test_budget_must_be_positive():
    with pytest.raises(ValueError, match="checkpoint_tokens"):
        LongBatchCheckpointing(_lora_model(), max_tokens=0)
