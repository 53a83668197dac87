"""SASRec (Kang & McAuley, 2018) trained with full-softmax cross-entropy over every item.

Full softmax instead of the paper's one-negative BCE: it is the stronger, now-standard objective and
costs little at catalogue sizes of a few thousand to tens of thousands of items. Output scores reuse
the input item embeddings (weight tying, as in the paper).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from gream_lit.baselines.ranking import FullRankingModule, top_items
from gream_lit.baselines.seqrec_data import IGNORE, PAD


def attention_block_mask(history: torch.Tensor) -> torch.Tensor:
    """``[B, L, L]`` True where query i may not attend key j: the future and padding, never itself.

    Letting every position see itself keeps the softmax of all-padding rows finite; those rows are
    never scored because their labels are ignored.
    """
    length = history.shape[1]
    future = torch.ones(length, length, dtype=torch.bool, device=history.device).triu(1)
    blocked = future | (history == PAD).unsqueeze(1)
    return blocked & ~torch.eye(length, dtype=torch.bool, device=history.device)


class SASRec(FullRankingModule):
    """Causal self-attention over left-padded item tokens; position t predicts item t+1.

    Args:
        hidden: embedding and model width.
        layers: transformer blocks.
        heads: attention heads.
        dropout: dropout on embeddings, attention and feed-forward.
        lr: AdamW learning rate.
        weight_decay: AdamW weight decay.
        n_items: catalogue size; filled in from the datamodule, stored for ``load_from_checkpoint``.
        max_len: longest history; filled in from the datamodule's ``max_history`` when None.
        log_prefix: stage name in log keys.
        top_k: ranked-list length scored by the metrics.
    """

    def __init__(
        self,
        hidden: int = 64,
        layers: int = 2,
        heads: int = 2,
        dropout: float = 0.2,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        n_items: int | None = None,
        max_len: int | None = None,
        log_prefix: str = "sasrec",
        top_k: int = 10,
    ) -> None:
        super().__init__(log_prefix, top_k)
        if hidden % heads:
            raise ValueError(f"hidden ({hidden}) must be divisible by heads ({heads})")
        self.save_hyperparameters()
        self.built = False
        if n_items is not None and max_len is not None:
            self._build(n_items, max_len)

    def _build(self, n_items: int, max_len: int) -> None:
        h = self.hparams
        self.item_emb = nn.Embedding(n_items + 1, h.hidden, padding_idx=PAD)
        self.pos_emb = nn.Embedding(max_len, h.hidden)
        self.emb_dropout = nn.Dropout(h.dropout)
        block = nn.TransformerEncoderLayer(
            h.hidden,
            h.heads,
            dim_feedforward=h.hidden,
            dropout=h.dropout,
            activation="gelu",
            batch_first=True,
            norm_first=True,
        )
        self.encoder = nn.TransformerEncoder(block, h.layers, enable_nested_tensor=False)
        self.final_norm = nn.LayerNorm(h.hidden)
        nn.init.normal_(self.item_emb.weight, std=h.hidden**-0.5)
        nn.init.normal_(self.pos_emb.weight, std=h.hidden**-0.5)
        with torch.no_grad():
            self.item_emb.weight[PAD].zero_()
        self.built = True

    def configure_model(self) -> None:
        catalog = self.attached_catalog()
        n_items = self.resolve_n_items(catalog)
        if self.hparams.max_len is None:
            if catalog is None:
                raise ValueError("SASRec needs max_len or a trainer whose datamodule has max_history")
            self.hparams.max_len = self.trainer.datamodule.max_history
        if not self.built:
            self._build(n_items, self.hparams.max_len)

    def encode(self, history: torch.Tensor) -> torch.Tensor:
        """``[B, L]`` tokens -> ``[B, L, hidden]`` states (left padding; the last column is the newest)."""
        length = history.shape[1]
        if length > self.hparams.max_len:
            raise ValueError(f"history length {length} exceeds max_len {self.hparams.max_len}")
        positions = torch.arange(self.hparams.max_len - length, self.hparams.max_len, device=history.device)
        x = self.item_emb(history) * math.sqrt(self.hparams.hidden) + self.pos_emb(positions)
        mask = attention_block_mask(history).repeat_interleave(self.hparams.heads, dim=0)
        return self.final_norm(self.encoder(self.emb_dropout(x), mask=mask))

    def item_scores(self, states: torch.Tensor) -> torch.Tensor:
        """Dot products with every item embedding: ``[..., hidden] -> [..., n_items]`` (pad excluded)."""
        return states @ self.item_emb.weight[1:].T

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        labels = batch["labels"]
        keep = labels != IGNORE
        states = self.encode(batch["history"])[keep]
        loss = F.cross_entropy(self.item_scores(states), labels[keep])
        if not torch.isfinite(loss):
            raise FloatingPointError(f"SASRec loss is {loss.item()} at step {self.global_step}")
        self.log(f"{self.hparams.log_prefix}/train/loss", loss, prog_bar=True, batch_size=int(keep.sum()))
        return loss

    def rank(self, batch: dict[str, torch.Tensor], k: int) -> torch.Tensor:
        return top_items(self.item_scores(self.encode(batch["history"])[:, -1]), k, batch.get("seen"))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.AdamW(
            self.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay, betas=(0.9, 0.98)
        )
