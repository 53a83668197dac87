"""RQ-VAE pieces: residual code choice and dead-code restart, on hand-set codebooks."""

from __future__ import annotations

import pytest
import torch

from gream_lit.indexing.rqvae import RQVAE


def _model() -> RQVAE:
    model = RQVAE(levels=2, codebook_size=2, latent_dim=2, hidden_dims=[4], in_dim=3)
    model.codebooks[0].data = torch.tensor([[0.0, 0.0], [10.0, 0.0]])
    model.codebooks[1].data = torch.tensor([[1.0, 0.0], [-1.0, 0.0]])
    return model


def test_quantize_picks_nearest_codeword_of_each_residual() -> None:
    model = _model()
    z = torch.tensor([[9.2, 0.0], [0.8, 0.1], [-0.9, 0.0]])
    codes, z_q, loss = model.quantize(z)
    assert codes.tolist() == [[1, 1], [0, 0], [0, 1]]  # residuals -0.8, 0.8, -0.9
    torch.testing.assert_close(z_q, torch.tensor([[9.0, 0.0], [1.0, 0.0], [-1.0, 0.0]]))  # sum of codewords
    # (1 + beta) * (level-1 MSE 2.1/6 + level-2 MSE 0.1/6), by hand
    assert loss.item() == pytest.approx(1.25 * (2.1 + 0.1) / 6)


def test_dead_codes_restart_from_live_residuals() -> None:
    model = _model()
    model.quantize(torch.tensor([[0.5, 0.0], [0.4, 0.0]]))  # level 1 uses only code 0
    model.usage[0, 0] = 2
    model.usage[1, 0] = 2
    model.log = lambda *a, **k: None
    before = model.codebooks[0].data.clone()
    model.on_train_epoch_end()
    assert torch.equal(model.codebooks[0].data[0], before[0])
    assert model.codebooks[0].data[1].sub(torch.tensor([0.45, 0.0])).abs().max() < 0.1  # moved near the data
    assert model.usage.sum() == 0
