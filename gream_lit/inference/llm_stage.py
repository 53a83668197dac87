"""The LightningModule base of the LLM stages (alignment and curriculum SFT, SRPO).

What these stages share lives here, once:

- slim LoRA checkpoints (``modeling.slim_checkpoint``): under LoRA a checkpoint keeps the trained
  weights only and a fingerprint of the frozen base, which loading checks;
- the test-time search model: before a test or predict epoch, LoRA is merged into the weights (one
  matmul per projection instead of three) and decoding runs on a ``test_dtype`` copy
  (``inference.search_precision``); after it, the copy is dropped and LoRA unmerged;
- the hand-off bundle (``inference.bundle``): one ``BundleSpec`` built from the module and its data;
- ``log_prefix``, the first part of every key the stage logs (``sft/val/ndcg@10``, ``rl/train/...``);
- ``stage_data``: the data module, checked against the stage's ``data_contract``
  (``data.stage_data``) instead of probing it attribute by attribute.

A subclass names its trained model (``stage_model``) and the base it started from (``base_source``),
sets ``lora``, ``tokenizer`` and ``base_fingerprint`` when it builds the model, and says which prompt
layouts its bundle offers (``bundle_prompt``, ``bundle_reasoning``). Its hparams hold ``test_dtype``,
``logits_vocab`` and ``num_beams``.
"""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch
from peft import PeftModel

from gream_lit.data.direct_prompt import DirectPrompt
from gream_lit.data.stage_data import LLMStageData, missing_members
from gream_lit.inference.bundle import BundleSpec, write_bundle
from gream_lit.inference.reasoning import ReasoningOptions
from gream_lit.inference.search_precision import search_model
from gream_lit.modeling.lora import LoraOptions
from gream_lit.modeling.slim_checkpoint import check_base, keep_trained


class LLMStageModule(L.LightningModule):
    """Base of the modules that fine-tune an LLM to write the semantic IDs of items (see the module doc)."""

    log_prefix: str = ""
    """First part of the stage's log keys (``<log_prefix>/<split>/<name>``)."""
    data_contract: type = LLMStageData
    """The protocol the stage's data module must satisfy (``data.stage_data``)."""

    def __init__(self) -> None:
        super().__init__()
        self.lora: LoraOptions | None = None
        self.tokenizer = None
        self.base_fingerprint: str | None = None  # of the local base folder; ``None``: a hub name or alias
        self._search: list[torch.nn.Module] = []  # the search model of a test/predict epoch, unregistered
        self._merged = False

    # ---- what a subclass provides ---------------------------------------------------------------
    @property
    def stage_model(self) -> torch.nn.Module:
        """The model the stage trains (plain or peft)."""
        raise NotImplementedError

    def base_source(self) -> str:
        """The base the stage started from, as error messages name it."""
        raise NotImplementedError

    def base_model(self) -> str:
        """The model the stage started from (a name, an alias, a folder or an earlier stage's bundle)."""
        return self.base_source()

    def bundle_prompt(self) -> DirectPrompt:
        """The direct-mode prompt layout of the stage's bundle."""
        raise NotImplementedError

    def bundle_reasoning(self) -> tuple[ReasoningOptions, DirectPrompt] | None:
        """The reasoning mode the bundle offers: none for a stage that only learned IDs."""
        return None

    def uses_search(self) -> bool:
        """Whether the test and predict epochs decode with the search model."""
        return True

    def merges_for_search(self) -> bool:
        """Whether LoRA is merged into the weights for the test and predict epochs."""
        return True

    # ---- the data module ------------------------------------------------------------------------
    def stage_data(self, contract: type | None = None) -> LLMStageData:
        """The trainer's data module, which must satisfy ``contract`` (default: ``data_contract``)."""
        dm = self.trainer.datamodule
        contract = contract or self.data_contract
        missing = missing_members(dm, contract)
        if missing:
            raise ValueError(
                f"{type(self).__name__} needs a data module satisfying {contract.__name__} "
                f"(gream_lit.data.stage_data); {type(dm).__name__} lacks {', '.join(missing)}"
            )
        return dm

    # ---- slim LoRA checkpoints ------------------------------------------------------------------
    @property
    def lora(self) -> LoraOptions | None:
        """LoRA options (``None``: all weights train). LoRA checkpoints hold the trained weights only,
        so they load non-strictly: the frozen base is rebuilt from its path."""
        return self._lora

    @lora.setter
    def lora(self, options: LoraOptions | None) -> None:
        self._lora = options
        self.strict_loading = options is None

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        """Under LoRA keep only what is trained (adapter, ID-token rows): tens of MB instead of a copy
        of the frozen base, which the checkpoint names by fingerprint instead."""
        if self.lora is not None:
            keep_trained(checkpoint, self, self.base_fingerprint)

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        check_base(checkpoint, self.base_fingerprint, self.base_source())

    # ---- the test-time search model -------------------------------------------------------------
    def begin_search(self) -> None:
        """Merge LoRA (``merges_for_search``) and make the ``test_dtype`` search model."""
        if not self.uses_search():
            return
        model = self.stage_model
        self._merged = self.merges_for_search() and isinstance(model, PeftModel)
        if self._merged:
            model.merge_adapter()
        self._search = [search_model(model, self.hparams.test_dtype)]

    def end_search(self) -> None:
        """Drop the search model and unmerge what ``begin_search`` merged."""
        self._search = []
        if self._merged:
            self.stage_model.unmerge_adapter()
            self._merged = False

    def decoding_model(self) -> torch.nn.Module:
        """The search model during a test or predict epoch, the trained model otherwise."""
        return self._search[0] if self._search else self.stage_model

    def on_test_epoch_start(self) -> None:
        self.begin_search()

    def on_test_epoch_end(self) -> None:
        self.end_search()

    def on_predict_epoch_start(self) -> None:
        self.begin_search()

    def on_predict_epoch_end(self) -> None:
        self.end_search()

    # ---- the hand-off bundle --------------------------------------------------------------------
    def bundle_spec(self) -> BundleSpec:
        """The bundle of the stage as trained: the data's index and catalogue, the module's decoding."""
        dm = self.stage_data()
        return BundleSpec(
            index=dm.index,
            item_ids=dm.catalog.item_ids,
            prompt=self.bundle_prompt(),
            logits_vocab=self.hparams.logits_vocab,
            num_beams=self.hparams.num_beams,
            stage=self.log_prefix,
            reasoning=self.bundle_reasoning(),
            base_model=self.base_model(),
            dataset=dm.catalog.name,
            titles=[dm.catalog.title(i) for i in range(dm.catalog.n_items)],
            exclude_seen=dm.exclude_seen,
        )

    def write_bundles(self, *folders: str | Path) -> None:
        """Write the bundle (``inference.bundle.write_bundle``) next to each saved model or adapter."""
        spec = self.bundle_spec()
        for folder in folders:
            write_bundle(folder, spec)
