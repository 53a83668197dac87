"""Direct-mode evaluation that any LightningModule plugs into its validation/test/predict steps.

The module owns the decoding tables and one metric collection per split, so a model only passes its
prompts and targets: ``DirectEvaluator.step`` decodes, updates and logs ``<stage>/<split>/<metric>``.
``PredictionWriter`` turns ``predict`` outputs into one jsonl line per user with ids and titles.
"""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import BasePredictionWriter

from gream_lit.data.semantic_index import SemanticIndex
from gream_lit.inference.constrained_beam import BeamResult, constrained_beam_search
from gream_lit.inference.prefix_tables import (
    PrefixTables,
    build_per_position_tables,
    build_prefix_tables,
    index_token_ids,
)
from gream_lit.metrics import ranking_metrics

CONSTRAINTS = ("trie", "per_position")
SPLITS = ("val", "test")


class DirectEvaluator(torch.nn.Module):
    """Prompts -> constrained beams -> ranked item lists -> Recall/NDCG/MRR at ``ks``.

    Args:
        item_token_ids: ``[n_items, L]`` vocabulary ids of each item's ID (``-1`` pads shorter IDs);
            ``from_index`` builds it from a ``SemanticIndex`` and a tokenizer.
        eos_token_id: token that ends an answer (pads shorter IDs on their trie path).
        stage: first part of the log keys, e.g. ``sft`` -> ``sft/val/recall@10``.
        num_beams: beams per user = length of the ranked list (10 as in GREAM; 50+ works).
        ks: cut-offs of the metrics; each must be <= ``num_beams``.
        constraint: ``trie`` (only catalogue IDs) or ``per_position`` (official rule, docs/gream_spec.md §8.1).
        vocab: token ids to score over (``constrained_beam_search``'s ``vocab``); ``None`` = all.
    """

    def __init__(
        self,
        item_token_ids: torch.Tensor,
        eos_token_id: int,
        stage: str,
        num_beams: int = 10,
        ks: tuple[int, ...] = (1, 5, 10),
        constraint: str = "trie",
        vocab: torch.Tensor | None = None,
    ) -> None:
        super().__init__()
        if constraint not in CONSTRAINTS:
            raise ValueError(f"unknown constraint {constraint!r}; expected one of {CONSTRAINTS}")
        if max(ks) > num_beams:
            raise ValueError(f"metric cut-off {max(ks)} exceeds num_beams={num_beams}")
        build = build_prefix_tables if constraint == "trie" else build_per_position_tables
        self._register_tables(build(item_token_ids, eos_token_id))
        self.num_beams = num_beams
        self.register_buffer("_vocab", vocab, persistent=False)
        self.metrics = torch.nn.ModuleDict({s: ranking_metrics(tuple(ks), prefix=f"{stage}/{s}/") for s in SPLITS})

    @classmethod
    def from_index(cls, index: SemanticIndex, tokenizer, stage: str, **kwargs) -> DirectEvaluator:
        """Evaluator for an LLM whose tokenizer holds the index's tokens; EOS = ``tokenizer.eos_token_id``."""
        return cls(index_token_ids(index, tokenizer), tokenizer.eos_token_id, stage, **kwargs)

    def _register_tables(self, tables: PrefixTables) -> None:
        """Keep the table tensors as non-persistent buffers so they follow the module's device."""
        self._spec = tables
        for name in ("tokens", "valid", "next_state", "scored"):
            for t, tensor in enumerate(getattr(tables, name)):
                self.register_buffer(f"_{name}_{t}", tensor, persistent=False)
        if tables.leaf_item is not None:
            self.register_buffer("_leaf_item", tables.leaf_item, persistent=False)

    @property
    def tables(self) -> PrefixTables:
        """The decoding tables on the module's current device."""

        def get(name: str) -> list[torch.Tensor]:
            return [getattr(self, f"_{name}_{t}") for t in range(self._spec.steps)]

        return PrefixTables(
            tokens=get("tokens"),
            valid=get("valid"),
            next_state=get("next_state"),
            scored=get("scored"),
            leaf_item=getattr(self, "_leaf_item", None),
            sequences=self._spec.sequences,
            eos_token_id=self._spec.eos_token_id,
        )

    def rank(
        self,
        model: torch.nn.Module,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        exclude: torch.Tensor | None = None,
    ) -> BeamResult:
        """Top ``num_beams`` items per prompt (left-padded for causal LMs), best first, none of
        ``exclude`` (``constrained_beam_search``)."""
        return constrained_beam_search(
            model, input_ids, attention_mask, self.tables, self.num_beams, self._vocab, exclude=exclude
        )

    def step(
        self,
        module: L.LightningModule,
        model: torch.nn.Module,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        target: torch.Tensor,
        split: str,
        exclude: torch.Tensor | None = None,
    ) -> BeamResult:
        """Decode, update the ``split`` metrics and log them per epoch through ``module``."""
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
        result = self.rank(model, input_ids, attention_mask, exclude)
        metrics = self.metrics[split]
        metrics.update(result.items, target)
        module.log_dict(metrics, on_step=False, on_epoch=True, batch_size=target.shape[0])
        return result


class PredictionWriter(BasePredictionWriter):
    """Writes ``predict_step`` outputs ``{"user": [B], "items": [B, K], "scores": [B, K] (optional),
    "texts": [B] (optional)}`` as jsonl: raw user id, top-K raw item ids, titles, scores and, in reasoning
    mode, the text the model wrote (``reasoning``), from the datamodule's catalog.

    Args:
        path: output file; truncated when prediction starts.
    """

    def __init__(self, path: str) -> None:
        super().__init__(write_interval="batch")
        self.path = Path(path)

    def on_predict_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text("")

    def write_on_batch_end(self, trainer, pl_module, prediction, batch_indices, batch, batch_idx, dataloader_idx):
        catalog = trainer.datamodule.load()
        users = prediction["user"].tolist()
        items = prediction["items"].tolist()
        scores = prediction["scores"].tolist() if "scores" in prediction else [None] * len(users)
        texts = prediction.get("texts") or [None] * len(users)
        with self.path.open("a") as f:
            for user, row, row_scores, text in zip(users, items, scores, texts):
                kept = [i for i in row if i >= 0]
                record = {
                    "user": catalog.user_ids[user],
                    "items": [catalog.item_ids[i] for i in kept],
                    "titles": [catalog.title(i) for i in kept],
                }
                if row_scores is not None:
                    record["scores"] = [s for i, s in zip(row, row_scores) if i >= 0]
                if text is not None:
                    record["reasoning"] = text
                f.write(json.dumps(record, ensure_ascii=False) + "\n")
