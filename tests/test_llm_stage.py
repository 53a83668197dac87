"""The LLM stages' base: the typed data-module contract, the bundle spec and the search-model lifecycle."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from peft import LoraConfig, get_peft_model
from test_sft import write_toy_dataset

from gream_lit.alignment.sft_data import AlignmentDataModule
from gream_lit.alignment.sft_module import SFTModule
from gream_lit.curriculum.curriculum_data import CurriculumDataModule
from gream_lit.curriculum.reasoning_module import ReasoningSFTModule
from gream_lit.data.direct_prompt import DirectPrompt
from gream_lit.data.semantic_index import SemanticIndex
from gream_lit.data.stage_data import (
    LLMStageData,
    ReasoningStageData,
    RLStageData,
    SFTStageData,
    missing_members,
    protocol_members,
)
from gream_lit.inference.bundle import BundleSpec
from gream_lit.inference.llm_stage import LLMStageModule
from gream_lit.modeling.tiny import tiny_causal_lm
from gream_lit.rl.rl_data import RLDataModule
from gream_lit.rl.srpo_module import SRPOModule


def test_protocol_members_include_the_bases_members() -> None:
    assert protocol_members(LLMStageData) == ["catalog", "exclude_seen", "index", "load"]
    assert set(protocol_members(RLStageData)) == {
        "catalog",
        "exclude_seen",
        "index",
        "load",
        "mode",
        "prompt_format",
        "eval_mode",
        "direct_prompt",
        "reasoning_prompt",
    }
    sft = set(protocol_members(SFTStageData))
    assert {"tokenizer", "backbone", "eval_mode", "item_texts", "eval_set_names"} <= sft
    assert set(protocol_members(ReasoningStageData)) == sft | {"cot_layout", "grounded"}


def test_each_stage_names_its_contract() -> None:
    assert SFTModule.data_contract is SFTStageData and ReasoningSFTModule.data_contract is SFTStageData
    assert SRPOModule.data_contract is RLStageData and SRPOModule.log_prefix == "rl"


def test_the_data_modules_satisfy_their_contracts(tmp_path: Path) -> None:
    paths = write_toy_dataset(tmp_path)
    align = AlignmentDataModule(**paths)
    curriculum = CurriculumDataModule(**paths, teacher={"kind": "template"})
    rl = RLDataModule(data_dir=paths["data_dir"], index_path=paths["index_path"])
    assert missing_members(align, SFTStageData) == []
    assert missing_members(curriculum, ReasoningStageData) == []
    assert missing_members(rl, RLStageData) == []
    assert "cot_layout" in missing_members(align, ReasoningStageData)
    assert set(missing_members(rl, SFTStageData)) >= {"tokenizer", "item_texts"}


def test_a_stage_handed_the_wrong_data_module_names_what_is_missing(tmp_path: Path) -> None:
    paths = write_toy_dataset(tmp_path)
    module = SRPOModule(backbone="tiny")
    module.trainer = SimpleNamespace(datamodule=AlignmentDataModule(**paths))
    with pytest.raises(ValueError, match=r"RLStageData .*AlignmentDataModule lacks mode"):
        module.stage_data()


def _index() -> SemanticIndex:
    return SemanticIndex(np.array([[0, 0], [0, 1], [1, 0]]), [2, 2])


@pytest.mark.parametrize(
    ("item_ids", "logits_vocab", "titles", "message"),
    [
        (["a", "b"], "full", (), "2 item ids for an index of 3 items"),
        (["a", "b", "c"], "topk", (), "logits_vocab 'topk'"),
        (["a", "b", "c"], "full", ("A",), "1 titles for 3 item ids"),
    ],
)
def test_bundle_spec_rejects_what_a_bundle_could_not_serve(item_ids, logits_vocab, titles, message) -> None:
    with pytest.raises(ValueError, match=message):
        BundleSpec(_index(), item_ids, DirectPrompt("chat", 64, 5), logits_vocab=logits_vocab, titles=titles)


class _Stage(LLMStageModule):
    """The smallest stage: a peft-wrapped tiny LM, LoRA merged for the search."""

    log_prefix = "toy"

    def __init__(self) -> None:
        super().__init__()
        self.save_hyperparameters({"test_dtype": "float32", "logits_vocab": "full", "num_beams": 2})
        config = LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
        self.model = get_peft_model(tiny_causal_lm(vocab_size=32, hidden_size=16, num_layers=1), config)

    @property
    def stage_model(self) -> torch.nn.Module:
        return self.model


def test_the_search_model_is_merged_for_a_test_epoch_and_unmerged_after() -> None:
    stage = _Stage()
    ids = torch.tensor([[1, 2, 3, 4]])
    with torch.no_grad():
        before = stage.model(ids).logits
    assert stage.decoding_model() is stage.model
    stage.on_test_epoch_start()
    assert stage.model.base_model.model.model.layers[0].self_attn.q_proj.merged
    with torch.no_grad():
        torch.testing.assert_close(stage.decoding_model()(ids).logits, before, atol=1e-5, rtol=1e-5)
    stage.on_test_epoch_end()
    assert stage.decoding_model() is stage.model
    assert not stage.model.base_model.model.model.layers[0].self_attn.q_proj.merged
    with torch.no_grad():
        torch.testing.assert_close(stage.model(ids).logits, before)
