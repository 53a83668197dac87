"""TIGER (Rajput et al., 2023): a small T5 trained from scratch to write the next item's semantic ID.

Input: a hashed user token and the history's ID tokens; output: the next item's ID tokens (teacher
forcing, cross-entropy). Ranking: our trie-constrained beam search, so every returned ID is an item
and scores are exact sequence log-probs. Defaults follow the TIGER paper's small model (4+4 layers,
d_model 128, 6 heads of 64, FFN 1024, dropout 0.1).
"""

from __future__ import annotations

import torch
from jsonargparse.typing import PositiveInt  # a range the preflight checks
from transformers import T5Config, T5ForConditionalGeneration

from gream_lit.baselines.ranking import FullRankingModule
from gream_lit.baselines.tiger_data import EOS, PAD
from gream_lit.data.catalog import DataError
from gream_lit.inference.constrained_beam import constrained_beam_search
from gream_lit.inference.prefix_tables import PrefixTables, build_prefix_tables


class Tiger(FullRankingModule):
    """Generative retrieval over semantic IDs with a randomly initialised T5.

    Args:
        d_model: model width.
        d_ff: feed-forward width.
        d_kv: width of one attention head.
        heads: attention heads.
        layers: encoder layers (and decoder layers).
        dropout: dropout rate.
        lr: AdamW learning rate (linear warm-up over ``warmup_steps``, then constant).
        weight_decay: AdamW weight decay.
        warmup_steps: optimizer steps of linear warm-up.
        num_beams: beams per user (>= ``top_k``).
        vocab_size: filled in from the datamodule; stored for ``load_from_checkpoint``.
        n_items: catalogue size; filled in from the datamodule.
        id_length: tokens per ID path; filled in from the datamodule.
        log_prefix: stage name in log keys.
        top_k: ranked-list length scored by the metrics.
    """

    def __init__(
        self,
        d_model: int = 128,
        d_ff: int = 1024,
        d_kv: int = 64,
        heads: int = 6,
        layers: int = 4,
        dropout: float = 0.1,
        lr: float = 1e-3,
        weight_decay: float = 0.01,
        warmup_steps: int = 200,
        num_beams: PositiveInt = 10,
        vocab_size: int | None = None,
        n_items: int | None = None,
        id_length: int | None = None,
        log_prefix: str = "tiger",
        top_k: int = 10,
    ) -> None:
        super().__init__(log_prefix, top_k)
        if num_beams < top_k:
            raise ValueError(f"num_beams={num_beams} must be >= top_k={top_k}")
        self.save_hyperparameters()
        self.model: T5ForConditionalGeneration | None = None
        self._tables: PrefixTables | None = None
        if vocab_size is not None and n_items is not None and id_length is not None:
            self._build(vocab_size, torch.full((n_items, id_length), -1, dtype=torch.long))

    def _build(self, vocab_size: int, item_token_ids: torch.Tensor) -> None:
        h = self.hparams
        config = T5Config(
            vocab_size=vocab_size,
            d_model=h.d_model,
            d_ff=h.d_ff,
            d_kv=h.d_kv,
            num_heads=h.heads,
            num_layers=h.layers,
            num_decoder_layers=h.layers,
            dropout_rate=h.dropout,
            feed_forward_proj="relu",
            pad_token_id=PAD,
            eos_token_id=EOS,
            decoder_start_token_id=PAD,
            tie_word_embeddings=True,
        )
        self.model = T5ForConditionalGeneration(config)
        # persistent, so a checkpoint carries the IDs it was trained with
        self.register_buffer("item_token_ids", item_token_ids.clone())

    def configure_model(self) -> None:
        if self.model is not None:
            return
        datamodule = self.trainer.datamodule
        catalog = self.attached_catalog()
        self.resolve_n_items(catalog)
        ids = datamodule.item_token_ids()
        self.hparams.vocab_size = datamodule.vocab.size
        self.hparams.id_length = ids.shape[1]
        self._build(datamodule.vocab.size, ids)

    def tables(self) -> PrefixTables:
        """Trie tables of the catalogue's IDs on the model's device (built on first use)."""
        device = self.item_token_ids.device
        if self._tables is None or self._tables.tokens[0].device != device:
            if (self.item_token_ids[:, 0] < 0).any():
                raise DataError("TIGER item IDs were never set: load a checkpoint or attach a TigerDataModule")
            self._tables = build_prefix_tables(self.item_token_ids.cpu(), EOS).to(device)
        return self._tables

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self._tables = None

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        out = self.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"])
        if not torch.isfinite(out.loss):
            raise FloatingPointError(f"TIGER loss is {out.loss.item()} at step {self.global_step}")
        self.log(f"{self.hparams.log_prefix}/train/loss", out.loss, prog_bar=True, batch_size=batch["labels"].shape[0])
        return out.loss

    def beams(self, batch: dict[str, torch.Tensor]):
        return constrained_beam_search(
            self.model,
            batch["input_ids"],
            batch["attention_mask"],
            self.tables(),
            self.hparams.num_beams,
            exclude=batch.get("seen"),
        )

    def rank(self, batch: dict[str, torch.Tensor], k: int) -> torch.Tensor:
        return self.beams(batch).items[:, :k]

    def predict_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> dict[str, torch.Tensor]:
        result = self.beams(batch)
        k = self.hparams.top_k
        return {"user": batch["user"], "items": result.items[:, :k], "scores": result.scores[:, :k]}

    def configure_optimizers(self):
        opt = torch.optim.AdamW(self.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)
        warmup = max(1, self.hparams.warmup_steps)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: min(1.0, (step + 1) / warmup))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
