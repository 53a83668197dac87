"""Supervised fine-tuning of the LM on chat samples (alignment and curriculum stages, docs/gream_spec.md §6).

Data-agnostic: the datamodule supplies the tokenizer (with ID tokens), the index and batches (see
``gream_lit.alignment.sft_data``). Validation/test run direct-mode recommendation: constrained beam search
over the index's IDs, then Recall/NDCG/MRR@K over the full catalogue.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from jsonargparse.typing import PositiveInt  # a range the preflight checks
from lightning.pytorch.loggers import TensorBoardLogger
from peft import PeftModel
from transformers import get_cosine_schedule_with_warmup, get_linear_schedule_with_warmup

from gream_lit.alignment.sft_data import label_index as flat_label_index
from gream_lit.data.direct_prompt import DirectPrompt
from gream_lit.data.stage_data import SFTStageData
from gream_lit.inference.constrained_beam import constrained_beam_search, vocab_positions
from gream_lit.inference.llm_stage import LLMStageModule
from gream_lit.inference.prefix_tables import build_per_position_tables, build_prefix_tables, id_vocab, index_token_ids
from gream_lit.inference.search_precision import check_test_dtype
from gream_lit.metrics import ranking_metrics
from gream_lit.modeling.attention import avoid_cudnn_attention
from gream_lit.modeling.backbone import load_causal_lm, resolve
from gream_lit.modeling.checkpointing import LongBatchCheckpointing
from gream_lit.modeling.lora import TOKEN_ROWS, LoraOptions, apply_lora
from gream_lit.modeling.slim_checkpoint import weights_fingerprint
from gream_lit.modeling.vocab import extend_model_vocab

log = logging.getLogger(__name__)
CONSTRAINTS = ("trie", "per_position")
LOGITS_VOCABS = ("full", "ids")
SCHEDULES = {"cosine": get_cosine_schedule_with_warmup, "linear": get_linear_schedule_with_warmup}


def assistant_token_loss(
    hidden: torch.Tensor,
    labels: torch.Tensor,
    head: torch.nn.Module,
    label_index: torch.Tensor | None = None,
    vocab: torch.Tensor | None = None,
) -> torch.Tensor:
    """Mean next-token cross-entropy over labelled positions; the vocabulary projection runs only on
    the hidden states that predict a label (a few % of a chat sample), not on the whole sequence.

    ``label_index`` comes from the collator (``sft_data.label_index``), computed on the host so that
    picking the positions needs no device sync; without it, it is computed here from ``labels``.
    With ``vocab`` (sorted token ids) the softmax runs over those rows of the head only, which is
    what an ID-only objective needs and ~50x fewer logits for SmolLM2 with a 1k-token index.
    """
    targets = labels[:, 1:]
    if label_index is None:
        label_index = flat_label_index(labels)
    rows, cols = label_index // targets.shape[1], label_index % targets.shape[1]
    picked, gold = hidden[rows, cols], targets[rows, cols]
    if vocab is None:
        return F.cross_entropy(head(picked).float(), gold)
    error = "logits_vocab='ids' but labels hold token ids outside the ID vocabulary"
    mapped = vocab_positions(vocab, gold, error)[gold]
    logits = picked @ head.weight[vocab].T
    if getattr(head, "bias", None) is not None:
        logits = logits + head.bias[vocab]
    return F.cross_entropy(logits.float(), mapped)


class SFTModule(LLMStageModule):
    """Causal-LM SFT with LoRA (or full fine-tuning) and direct-mode ranking evaluation.

    Args:
        model_path: HF name/path or GGUF alias of the weights to start from (e.g. a previous stage's
            ``hf/model``); ``None`` uses the datamodule's ``backbone``, whose tokenizer built the data.
        lora: LoRA options; ``None`` fine-tunes all parameters.
        embedding_init: init of new ID-token rows: ``hf_default`` or ``text_mean`` (see ``vocab``).
        lr: AdamW peak learning rate.
        token_lr: peak learning rate of the new ID-token rows under LoRA (``None`` = ``lr``). They start
            with no meaning and are tied to the output head, so at a LoRA rate they move too slowly
            for a short run to tell the IDs apart (docs/results.md, "What moved the number 9×";
            ``analyses/sft_memorise.py``).
        weight_decay: AdamW weight decay.
        warmup_ratio: share of optimizer steps of linear warm-up before the cosine decay.
        num_beams: beams (= ranked list length) of the constrained search.
        constraint: ``trie`` (only catalogue IDs) or ``per_position`` (the official rule, docs/gream_spec.md §8.1).
        ks: cut-offs of the ranking metrics.
        stage: first part of the log keys (``sft/val/ndcg@10``): the module's ``log_prefix``.
        export_merged: at the end of fit also write ``hf/model``, the LoRA-merged model (a full copy
            of the base, 540 MB for SmolLM2). Off by default: the next stage and
            ``gream_lit.modeling.backbone.load_causal_lm`` load the ``hf/adapter`` hand-off directly.
        export_dir: where the hand-off folders go (``adapter/``, ``model/``); ``None`` = ``<log_dir>/hf``.
            Pipelines point it at the stage directory so the next stage can find ``model/``.
        avoid_cudnn_attention: on CUDA, switch PyTorch's cuDNN attention off (see ``attention``):
            length-bucketed batches change shape every step, which that backend pays for per shape.
        logits_vocab: ``full`` (softmax over the whole vocabulary) or ``ids`` (over the ID tokens and
            EOS only, in the training loss and in the beam search alike): an ID-only objective
            (``seqdense``, compact prompts) needs no other rows, and on a CPU the 49k-row head is a
            fifth of a decode step. Batches the datamodule marks ``full_vocab`` (the curriculum's
            chain-of-thought rows, whose targets are text) train over the whole vocabulary.
        lr_schedule: ``cosine`` or ``linear`` decay after the warm-up.
        merge_for_test: merge LoRA into the weights while testing (one matmul per projection
            instead of three), unmerged afterwards.
        test_dtype: ``float32``, or ``bfloat16``: the direct-mode test decodes with a bfloat16 copy
            of the model (``inference.search_precision``: about 2x faster on CPUs with AVX512-BF16,
            near-ties may swap). Validation stays in fp32, so epochs are chosen on exact scores.
        checkpoint_tokens: training batches with more padded tokens than this recompute their
            activations in the backward pass (same gradients, a third more compute on those batches,
            the peak memory of a shorter batch; ``modeling.checkpointing``). ``None``: never.
    """

    data_contract = SFTStageData

    def __init__(
        self,
        model_path: str | None = None,
        lora: LoraOptions | None = None,
        embedding_init: str = "hf_default",
        lr: float = 5e-5,
        token_lr: float | None = None,
        weight_decay: float = 0.0,
        warmup_ratio: float = 0.1,
        num_beams: PositiveInt = 10,
        constraint: str = "trie",
        ks: tuple[int, ...] = (1, 5, 10),
        stage: str = "sft",
        export_merged: bool = False,
        export_dir: str | None = None,
        avoid_cudnn_attention: bool = True,
        logits_vocab: str = "full",
        lr_schedule: str = "cosine",
        merge_for_test: bool = True,
        checkpoint_tokens: int | None = None,
        test_dtype: str = "float32",
    ) -> None:
        super().__init__()
        check_test_dtype(test_dtype)
        if constraint not in CONSTRAINTS:
            raise ValueError(f"unknown constraint {constraint!r}; expected one of {CONSTRAINTS}")
        if logits_vocab not in LOGITS_VOCABS:
            raise ValueError(f"logits_vocab: unknown {logits_vocab!r}; expected one of {LOGITS_VOCABS}")
        if lr_schedule not in SCHEDULES:
            raise ValueError(f"lr_schedule: unknown {lr_schedule!r}; expected one of {sorted(SCHEDULES)}")
        self.save_hyperparameters()
        self.lora = LoraOptions(**lora) if isinstance(lora, dict) else lora
        self.model: torch.nn.Module | None = None
        self.tables = None
        self.vocab: torch.Tensor | None = None
        self.eval_metrics: dict[tuple[str, int], torch.nn.Module] = {}
        self.checkpointing: LongBatchCheckpointing | None = None

    @property
    def log_prefix(self) -> str:
        return self.hparams.stage

    @property
    def stage_model(self) -> torch.nn.Module:
        return self.model

    def base_source(self) -> str:
        return self.hparams.model_path or "the datamodule backbone"

    def base_model(self) -> str:
        return self.hparams.model_path or self.stage_data().backbone

    def merges_for_search(self) -> bool:
        return self.hparams.merge_for_test

    def setup(self, stage: str) -> None:
        avoid_cudnn_attention(self.trainer.strategy.root_device, self.hparams.avoid_cudnn_attention)
        if stage == "fit":
            check_monitors(self.trainer.callbacks, self.log_prefix)

    def configure_model(self) -> None:
        if self.model is not None:
            return
        dm: SFTStageData = self.stage_data()
        if dm.tokenizer is None or dm.index is None:
            raise ValueError("SFTModule needs a datamodule exposing `tokenizer` and `index` (e.g. AlignmentDataModule)")
        self.tokenizer, index = dm.tokenizer, dm.index
        name = self.hparams.model_path or dm.backbone
        self.base_fingerprint = weights_fingerprint(resolve(name))
        model = load_causal_lm(name)
        model.config.pad_token_id = self.tokenizer.pad_token_id
        texts = dm.item_texts() if self.hparams.embedding_init == "text_mean" else None
        token_ids = extend_model_vocab(model, self.tokenizer, index, self.hparams.embedding_init, texts)
        if self.lora is not None:
            model = apply_lora(model, self.lora, token_ids)
        self.model = model.train()  # from_pretrained returns eval mode; Lightning switches modes per loop
        if self.hparams.checkpoint_tokens is not None:
            self.checkpointing = LongBatchCheckpointing(model, self.hparams.checkpoint_tokens)
        item_ids = index_token_ids(index, self.tokenizer)
        build = build_prefix_tables if self.hparams.constraint == "trie" else build_per_position_tables
        self.tables = build(item_ids, self.tokenizer.eos_token_id)
        if self.hparams.logits_vocab == "ids":
            self.vocab = id_vocab(index, self.tokenizer)
            # fails now, not at the first evaluation
            vocab_positions(self.vocab, torch.cat([t.reshape(-1) for t in self.tables.tokens]))
        n_train = sum(p.numel() for p in model.parameters() if p.requires_grad)
        log.info("backbone %s: %d ID tokens, %d trainable parameters", name, len(token_ids), n_train)

    def _causal_lm(self) -> torch.nn.Module:
        return self.model.get_base_model() if isinstance(self.model, PeftModel) else self.model

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        lm = self._causal_lm()
        if self.checkpointing is not None:
            self.checkpointing.for_batch(batch["input_ids"])
        hidden = lm.base_model(
            input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False
        ).last_hidden_state
        vocab = None if self.vocab is None or batch.get("full_vocab") else self.vocab.to(self.device)
        head = lm.get_output_embeddings()
        loss = assistant_token_loss(hidden, batch["labels"], head, batch.get("label_index"), vocab)
        if self._check_finite() and not torch.isfinite(loss):
            raise FloatingPointError(f"non-finite training loss {loss.item()} at step {self.global_step}")
        stage, size = self.log_prefix, batch["input_ids"].shape[0]
        self.log(f"{stage}/train/loss", loss, prog_bar=True, batch_size=size)
        if self._trainer is not None and self.trainer.optimizers:
            self.log(f"{stage}/train/lr", self.trainer.optimizers[0].param_groups[0]["lr"], batch_size=size)
        return loss

    def on_train_batch_start(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._batch_start = time.perf_counter()

    def on_train_batch_end(self, outputs, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        """Tokens trained per second (non-padding tokens of the batch over its forward, backward and step)."""
        seconds = max(time.perf_counter() - self._batch_start, 1e-9)
        # a tensor: no host sync on an accelerator (Lightning reads it at logging steps only)
        self.log(f"{self.log_prefix}/train/tokens_per_s", batch["attention_mask"].sum() / seconds, batch_size=1)

    def on_before_optimizer_step(self, optimizer) -> None:
        grads = [p.grad for p in self.parameters() if p.grad is not None]
        if grads:  # one fused norm over the trained weights, not one per parameter
            self.log(f"{self.log_prefix}/train/grad_norm", torch.nn.utils.get_total_norm(grads), batch_size=1)

    def _check_finite(self) -> bool:
        """Every step on the CPU; on an accelerator only at logging steps, since reading the loss makes
        the host wait for the forward pass before it can queue the backward one."""
        if self.device.type == "cpu" or self._trainer is None:
            return True
        return self.global_step % self.trainer.log_every_n_steps == 0

    def recommend(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """``[B, num_beams]`` ranked items for a batch of direct-mode prompts (none of its ``seen``
        items, which the data module adds with ``exclude_seen``)."""
        if self.tables.tokens[0].device != self.device:
            self.tables = self.tables.to(self.device)
        vocab = None if self.vocab is None else self.vocab.to(self.device)
        result = constrained_beam_search(
            self.decoding_model(),
            batch["input_ids"],
            batch["attention_mask"],
            self.tables,
            self.hparams.num_beams,
            vocab,
            exclude=batch.get("seen"),
        )
        return result.items

    def _metrics(self, split: str, dataloader_idx: int):
        """Ranking metrics of one evaluation set; sets other than the datamodule's first
        (``eval_set_names``, e.g. ``item2index``) log under ``stage/split/<name>/``."""
        key = (split, dataloader_idx)
        if key not in self.eval_metrics:
            names = self.stage_data().eval_set_names()
            suffix = f"{names[dataloader_idx]}/" if dataloader_idx else ""
            prefix = f"{self.log_prefix}/{split}/{suffix}"
            self.eval_metrics[key] = ranking_metrics(self.hparams.ks, prefix=prefix).to(self.device)
        return self.eval_metrics[key]

    def _log_eval(self, split: str) -> None:
        for (s, _), metrics in self.eval_metrics.items():
            if s == split and any(m.update_count for m in metrics.values()):
                self.log_dict(metrics.compute(), add_dataloader_idx=False)
                metrics.reset()

    def _direct_step(
        self, split: str, batch: dict[str, torch.Tensor], dataloader_idx: int, batch_idx: int = -1
    ) -> dict[str, torch.Tensor]:
        items = self.recommend(batch)
        self._metrics(split, dataloader_idx).update(items, batch["target"])
        if split == "val" and batch_idx == 0 and dataloader_idx == 0:
            self._log_decoded(batch["target"], items)
        return {"user": batch.get("user"), "target": batch["target"], "items": items}

    def _log_decoded(self, target: torch.Tensor, items: torch.Tensor, n: int = 3) -> None:
        """A few validation users' target and top-3 items by title, as TensorBoard text."""
        catalog = self.stage_data().catalog
        loggers = [lg for lg in self.loggers if isinstance(lg, TensorBoardLogger)]
        if catalog is None or not loggers or not self.trainer.is_global_zero:
            return
        lines = ["| target | top 3 (hit in bold) |", "|---|---|"]
        for t, row in zip(target[:n].tolist(), items[:n].tolist()):
            top = [f"**{catalog.title(i)}**" if i == t else catalog.title(i) for i in row[:3] if i >= 0]
            lines.append(f"| {catalog.title(t)} | {'; '.join(top)} |")
        for logger in loggers:
            logger.experiment.add_text(f"{self.log_prefix}/val/decoded", "\n".join(lines), self.global_step)

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int, dataloader_idx: int = 0) -> dict:
        return self._direct_step("val", batch, dataloader_idx, batch_idx)

    def on_validation_epoch_end(self) -> None:
        self._log_eval("val")

    def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int, dataloader_idx: int = 0) -> dict:
        return self._direct_step("test", batch, dataloader_idx)

    def on_test_epoch_end(self) -> None:
        self._log_eval("test")
        super().on_test_epoch_end()

    def predict_step(self, batch: dict[str, torch.Tensor], batch_idx: int, dataloader_idx: int = 0) -> dict:
        """Ranked items of the test users' prompts (``inference.PredictionWriter`` writes raw ids)."""
        return {"user": batch["user"], "items": self.recommend(batch)}

    def configure_optimizers(self):
        optimizer = torch.optim.AdamW(self._param_groups(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)
        total = max(1, int(self.trainer.estimated_stepping_batches))
        schedule = SCHEDULES[self.hparams.lr_schedule]
        scheduler = schedule(optimizer, int(self.hparams.warmup_ratio * total), total)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def _param_groups(self) -> list[dict]:
        """LoRA (or all) weights at ``lr``; with ``token_lr``, peft's trainable ID-token rows at their own rate."""
        tokens, rest = [], []
        for name, p in self.model.named_parameters():
            if p.requires_grad:
                (tokens if TOKEN_ROWS in name else rest).append(p)
        if self.hparams.token_lr is None or not tokens:
            return [{"params": tokens + rest}]
        return [{"params": rest}, {"params": tokens, "lr": self.hparams.token_lr, "weight_decay": 0.0}]

    # hand-off artefacts (design §5): save_pretrained folders next to the Lightning checkpoints
    def export_path(self) -> Path:
        if self.hparams.export_dir:
            return Path(self.hparams.export_dir)
        return Path(self.trainer.log_dir or self.trainer.default_root_dir) / "hf"

    def save_handoff(self, merged: bool) -> Path:
        """Write ``hf/adapter`` (LoRA) or ``hf/model`` (full FT) with the tokenizer and the recommender
        bundle (index, prompt layout, item ids: ``inference.bundle``); with ``merged`` also ``hf/model``
        for LoRA (adapter merged into a copy of the base weights)."""
        out = self.export_path()
        folders = []
        if isinstance(self.model, PeftModel):
            # trainable ID-token rows are stored as values, which a freshly resized base takes over;
            # untrained new rows would be random in that base, so then the whole embedding is saved
            full_embedding = not (self.lora is not None and self.lora.train_new_tokens)
            self.model.save_pretrained(out / "adapter", save_embedding_layers=full_embedding)
            self.tokenizer.save_pretrained(out / "adapter")
            folders.append(out / "adapter")
            if merged:
                merge_adapter(out / "adapter", out / "model")
                folders.append(out / "model")
        else:
            self.model.save_pretrained(out / "model")
            self.tokenizer.save_pretrained(out / "model")
            folders.append(out / "model")
        self.write_bundles(*folders)
        return out

    def bundle_prompt(self) -> DirectPrompt:
        return self.stage_data().direct_prompt()

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        """A slim checkpoint under LoRA (``LLMStageModule``), and the hand-off folders beside it."""
        super().on_save_checkpoint(checkpoint)
        if self.trainer.is_global_zero:
            self.save_handoff(merged=False)

    def on_fit_end(self) -> None:
        """Hand the next stage the checkpoint this stage is tested with: the best one on validation when
        a checkpoint callback monitors a metric, else the last weights."""
        best = monitored_best(self.trainer.checkpoint_callback)
        if best is not None:
            state = torch.load(best, map_location=self.device, weights_only=False)["state_dict"]
            self.load_state_dict(state, strict=self.strict_loading)
            log.info("hand-off from the best checkpoint on validation: %s", best)
        if self.trainer.is_global_zero:
            log.info("hand-off artefacts written to %s", self.save_handoff(merged=self.hparams.export_merged))


def monitored_best(callback) -> str | None:
    """The best checkpoint's path of a ``ModelCheckpoint`` that monitors a metric, if it wrote one."""
    if callback is None or not getattr(callback, "monitor", None):
        return None
    path = getattr(callback, "best_model_path", "")
    return path if path and Path(path).is_file() else None


def check_monitors(callbacks: list, stage: str) -> None:
    """Fail before training when a checkpoint or early-stopping callback monitors another stage's key
    (``sft/val/ndcg@10`` for a module logging ``align/...``): Lightning finds out only at the end of the
    first epoch."""
    for cb in callbacks:
        monitor = getattr(cb, "monitor", None)
        if monitor and "/" in monitor and not monitor.startswith(f"{stage}/"):
            raise ValueError(
                f"{type(cb).__name__}(monitor={monitor!r}) cannot be found: this module logs under "
                f"'{stage}/' (model.init_args.stage); monitor e.g. '{stage}/val/ndcg@10'"
            )


def merge_adapter(adapter_dir: str | Path, out_dir: str | Path) -> None:
    """Save the adapter merged into its base (chained hand-offs included) as a standalone model +
    tokenizer that plain transformers loads."""
    from transformers import AutoTokenizer

    load_causal_lm(str(adapter_dir)).save_pretrained(out_dir)
    AutoTokenizer.from_pretrained(str(adapter_dir)).save_pretrained(out_dir)
