"""RQ-VAE quantiser as a LightningModule (TIGER / LC-Rec style), trained by ``python -m gream_lit fit``.

MLP encoder -> H residual codebooks of K codes (straight-through, commitment loss) -> MLP decoder.
Codebooks start from residual k-means of the initial latents, unused codes are restarted from live
residuals each epoch, and the last level can be balanced with Sinkhorn during training (LC-Rec).
Validation encodes every item and logs codebook usage, perplexity and the collision rate; at the end
of fit the module writes a collision-free index json (and its quality report) into the run folder.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from gream_lit.data.datamodule import CatalogDataModule
from gream_lit.data.resumable import ResumableDataLoader
from gream_lit.data.split import train_sequences
from gream_lit.indexing.build import finalize_index
from gream_lit.indexing.collaborative import cooccurrence_embeddings, fuse
from gream_lit.indexing.collisions import COLLISION_MODES, collision_rate
from gream_lit.indexing.embed import DEFAULT_ENCODER, build_encoder, embed_items, load_embeddings
from gream_lit.indexing.kmeans import residual_kmeans, sinkhorn_prices, sq_dists
from gream_lit.indexing.quality_report import index_report, level_stats, print_report, write_report

log = logging.getLogger(__name__)


class ItemEmbeddingDataModule(CatalogDataModule):
    """Item embeddings of a catalogue: shuffled batches to train on, all items in order to evaluate.

    Args:
        embeddings: a precomputed ``.npy`` (rows = items); if empty the item text is embedded (and cached).
        encoder, encoder_kind, fields, cache_dir: how to embed, see ``gream_lit.indexing.embed``.
        collaborative_weight: share of each item vector given to co-occurrence embeddings of the training
            sequences (``indexing.collaborative``; 0 = text alone, GREAM's index), so that items users
            consume together can share ID prefixes.
        collaborative_dim, collaborative_window: size of those embeddings and the co-occurrence window.
    """

    def __init__(
        self,
        data_dir: str = "",
        format: str = "lcrec",
        embeddings: str = "",
        encoder: str = DEFAULT_ENCODER,
        encoder_kind: str = "sentence-transformers",
        fields: Sequence[str] = ("title", "description"),
        cache_dir: str = ".cache/embeddings",
        batch_size: int = 1024,
        eval_batch_size: int = 4096,
        num_workers: int = 0,
        collaborative_weight: float = 0.0,
        collaborative_dim: int = 64,
        collaborative_window: int = 3,
        **kwargs,
    ) -> None:
        super().__init__(
            data_dir, format, batch_size=batch_size, eval_batch_size=eval_batch_size, num_workers=num_workers, **kwargs
        )
        if not 0.0 <= collaborative_weight <= 1.0:
            raise ValueError(f"collaborative_weight must lie in [0, 1], got {collaborative_weight}")
        self.collaborative = (collaborative_weight, collaborative_dim, collaborative_window)
        self.embeddings_path = embeddings
        self.encoder, self.encoder_kind, self.fields, self.cache_dir = encoder, encoder_kind, list(fields), cache_dir
        self.embeddings: torch.Tensor | None = None

    def build_datasets(self, stage: str | None) -> None:
        if self.embeddings is not None:
            return
        if self.embeddings_path:
            emb = load_embeddings(self.embeddings_path, self.catalog.n_items)
        else:
            encoder = build_encoder(self.encoder_kind, self.encoder)
            emb = embed_items(self.catalog, encoder, self.fields, cache_dir=self.cache_dir)
        weight, dim, window = self.collaborative
        if weight:
            behaviour = cooccurrence_embeddings(train_sequences(self.catalog), self.catalog.n_items, dim, window)
            emb = fuse(emb, behaviour, weight)
        self.embeddings = torch.from_numpy(np.ascontiguousarray(emb, dtype=np.float32))

    def _loader(self, shuffle: bool, batch_size: int) -> DataLoader:
        data = TensorDataset(self.embeddings, torch.arange(len(self.embeddings)))
        return ResumableDataLoader(data, batch_size=batch_size, shuffle=shuffle, num_workers=self.num_workers)

    def train_dataloader(self) -> DataLoader:
        return self._loader(True, self.batch_size)

    def val_dataloader(self) -> DataLoader:
        return self._loader(False, self.eval_batch_size)

    def test_dataloader(self) -> DataLoader:
        return self._loader(False, self.eval_batch_size)

    def predict_dataloader(self) -> DataLoader:
        return self._loader(False, self.eval_batch_size)


def mlp(dims: Sequence[int], dropout: float = 0.0) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(dims) - 2:
            layers += [nn.ReLU(), nn.Dropout(dropout)] if dropout else [nn.ReLU()]
    return nn.Sequential(*layers)


class RQVAE(L.LightningModule):
    """Residual-quantised autoencoder over item embeddings; its codes are the semantic IDs.

    Args:
        levels, codebook_size: H levels of K codes.
        latent_dim, hidden_dims: MLP encoder ``in -> hidden... -> latent`` (decoder mirrors it).
        in_dim: embedding size; if None it is read from the datamodule at setup.
        beta: commitment weight (loss = recon + sum_l ||sg(r_l) - e_l||^2 + beta ||r_l - sg(e_l)||^2).
        kmeans_init: initialise codebooks with residual k-means of the first latents.
        dead_code_restart: re-seed codes unused over an epoch with random live residuals (not after the
            last epoch, so the written index uses codewords the decoder was trained with).
        sinkhorn_last_level: balance the last level's assignment during training (LC-Rec).
        collision: how the final index makes IDs unique (``rank``, ``pad_all``, ``reassign``).
        index_name: file name of the index written into the run folder at the end of fit.
        output_path: write the index here instead (a pipeline stage publishes it as an artefact).
    """

    def __init__(
        self,
        levels: int = 4,
        codebook_size: int = 256,
        latent_dim: int = 32,
        hidden_dims: Sequence[int] = (512, 256, 128),
        in_dim: int | None = None,
        beta: float = 0.25,
        lr: float = 1e-3,
        weight_decay: float = 1e-4,
        dropout: float = 0.0,
        kmeans_init: bool = True,
        dead_code_restart: bool = True,
        sinkhorn_last_level: bool = False,
        collision: str = "rank",
        style: str = "gream",
        index_name: str = "index.json",
        output_path: str | None = None,
    ) -> None:
        super().__init__()
        if collision not in COLLISION_MODES:
            raise ValueError(f"unknown collision mode {collision!r}; expected one of {COLLISION_MODES}")
        self.save_hyperparameters()
        self.codebooks = nn.ParameterList(
            [nn.Parameter(torch.randn(codebook_size, latent_dim) * 0.1) for _ in range(levels)]
        )
        self.register_buffer("usage", torch.zeros(levels, codebook_size))
        self.encoder: nn.Module | None = None
        self.decoder: nn.Module | None = None
        self._last_residuals: list[torch.Tensor] = []
        self._eval_codes: list[torch.Tensor] = []
        self._eval_recon: list[torch.Tensor] = []
        if in_dim is not None:
            self._build(in_dim)

    def _build(self, in_dim: int) -> None:
        dims = [in_dim, *self.hparams.hidden_dims, self.hparams.latent_dim]
        self.encoder = mlp(dims, self.hparams.dropout)
        self.decoder = mlp(dims[::-1], self.hparams.dropout)
        self.hparams.in_dim = in_dim

    def setup(self, stage: str) -> None:
        if self.encoder is None:
            self._build(int(self.trainer.datamodule.embeddings.shape[1]))

    def quantize(self, z: torch.Tensor, balance_last: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Codes ``[B, H]``, quantised latent (straight-through) and the codebook+commitment loss."""
        residual, z_q, codes, loss = z, torch.zeros_like(z), [], z.new_zeros(())
        self._last_residuals = []
        for level, book in enumerate(self.codebooks):
            d = sq_dists(residual, book)
            if balance_last and level == len(self.codebooks) - 1 and len(z) >= book.shape[0]:
                d_sel = d.detach().double()
                idx = (d_sel - sinkhorn_prices(d_sel, iters=20)[None, :]).argmin(1)
            else:
                idx = d.argmin(1)
            e = book[idx]
            loss = loss + F.mse_loss(e, residual.detach()) + self.hparams.beta * F.mse_loss(residual, e.detach())
            self._last_residuals.append(residual.detach())
            z_q = z_q + e
            residual = residual - e.detach()
            codes.append(idx)
        return torch.stack(codes, 1), z + (z_q - z).detach(), loss

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        codes, z_q, q_loss = self.quantize(
            self.encoder(x), balance_last=self.training and self.hparams.sinkhorn_last_level
        )
        return codes, self.decoder(z_q), q_loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.AdamW(self.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)

    def on_fit_start(self) -> None:
        if self.hparams.kmeans_init and not self.trainer.ckpt_path:
            with torch.no_grad():
                emb = self.trainer.datamodule.embeddings.to(self.device)
                z = self.encoder(emb).cpu().numpy()
                rq = residual_kmeans(z, self.hparams.levels, self.hparams.codebook_size, balanced=False, max_iter=10)
                for book, cents in zip(self.codebooks, rq.centroids):
                    book.data.copy_(torch.from_numpy(cents))
            log.info("rqvae: codebooks initialised by residual k-means (collision rate %.4f)", collision_rate(rq.codes))

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        x, _ = batch
        codes, x_hat, q_loss = self(x)
        recon = F.mse_loss(x_hat, x)
        loss = recon + q_loss
        if not torch.isfinite(loss):
            raise FloatingPointError(f"rqvae: non-finite loss {float(loss)} at step {self.global_step}")
        for level in range(self.hparams.levels):
            self.usage[level].index_add_(0, codes[:, level], torch.ones(len(codes), device=self.device))
        self.log_dict(
            {"rqvae/train/loss": loss, "rqvae/train/recon": recon, "rqvae/train/quant": q_loss}, prog_bar=True
        )
        return loss

    def on_train_epoch_end(self) -> None:
        max_epochs = self._trainer.max_epochs if self._trainer is not None else None
        last_epoch = max_epochs is not None and self.current_epoch >= max_epochs - 1
        if self.hparams.dead_code_restart and self._last_residuals and not last_epoch:
            restarted = 0
            for level, book in enumerate(self.codebooks):
                dead = torch.nonzero(self.usage[level] == 0).flatten()
                if len(dead):
                    pool = self._last_residuals[level]
                    pick = torch.randint(len(pool), (len(dead),), device=pool.device)
                    book.data[dead] = pool[pick] + 1e-3 * torch.randn_like(pool[pick])
                    restarted += len(dead)
            self.log("rqvae/train/dead_codes_restarted", float(restarted))
        self.usage.zero_()

    def _eval_step(self, batch) -> None:
        x, _ = batch
        codes, x_hat, _ = self(x)
        self._eval_codes.append(codes.cpu())
        self._eval_recon.append(((x_hat - x) ** 2).mean(1).cpu())

    def _eval_epoch_end(self, split: str) -> None:
        codes = torch.cat(self._eval_codes).numpy()
        metrics = {f"rqvae/{split}/recon": float(torch.cat(self._eval_recon).mean())}
        metrics[f"rqvae/{split}/collision_rate"] = collision_rate(codes)
        for level in range(codes.shape[1]):
            stats = level_stats(codes[:, level], self.hparams.codebook_size)
            metrics[f"rqvae/{split}/usage_l{level + 1}"] = stats["usage"]
            metrics[f"rqvae/{split}/perplexity_l{level + 1}"] = stats["perplexity"]
        self.log_dict(metrics)
        self._eval_codes, self._eval_recon = [], []

    def validation_step(self, batch, batch_idx: int) -> None:
        self._eval_step(batch)

    def on_validation_epoch_end(self) -> None:
        self._eval_epoch_end("val")

    def test_step(self, batch, batch_idx: int) -> None:
        self._eval_step(batch)

    def on_test_epoch_end(self) -> None:
        self._eval_epoch_end("test")

    @torch.no_grad()
    def encode_items(self, emb: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """Codes of every item and the last level's item-to-codeword costs (for ``reassign``)."""
        codes, _, _ = self.quantize(self.encoder(emb.to(self.device)))
        last = sq_dists(self._last_residuals[-1], self.codebooks[-1])
        return codes.cpu().numpy(), last.cpu().numpy()

    def on_fit_end(self) -> None:
        if self.trainer.sanity_checking or not self.trainer.is_global_zero:
            return
        dm = self.trainer.datamodule
        was_training = self.training
        self.eval()
        codes, last_cost = self.encode_items(dm.embeddings)
        self.train(was_training)
        hp = self.hparams
        index = finalize_index(
            codes,
            [hp.codebook_size] * hp.levels,
            hp.collision,
            last_cost,
            hp.style,
            {"quantiser": "rqvae", "dataset": dm.catalog.name, "encoder": dm.encoder},
        )
        out = Path(self.trainer.log_dir or self.trainer.default_root_dir)
        path = Path(hp.output_path) if hp.output_path else out / f"{dm.catalog.name}.{hp.index_name}"
        path.parent.mkdir(parents=True, exist_ok=True)
        index.to_json(path)
        report = index_report(index, dm.catalog, dm.embeddings.numpy(), codes_before=codes)
        print_report(report, title=f"rqvae index -> {path}")
        write_report(report, out / "index_report", tag="rqvae/index")
