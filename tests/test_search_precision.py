"""The test's decoding precision: fp32 decodes with the model itself, bfloat16 with a copy."""

from __future__ import annotations

import pytest
import torch

from gream_lit.inference.constrained_beam import constrained_beam_search
from gream_lit.inference.prefix_tables import build_prefix_tables
from gream_lit.inference.search_precision import check_test_dtype, search_model
from gream_lit.modeling.tiny import tiny_causal_lm


def test_float32_is_the_model_itself_and_bfloat16_a_copy_that_leaves_the_weights() -> None:
    model = tiny_causal_lm(30, arch="llama", seed=0).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert search_model(model, "float32") is model
    copy = search_model(model, "bfloat16")
    assert copy is not model and not copy.training
    assert {p.dtype for p in copy.parameters()} == {torch.bfloat16}
    assert all(torch.equal(v, model.state_dict()[k]) and v.dtype == torch.float32 for k, v in before.items())
    assert search_model(copy, "bfloat16") is copy


def test_a_bfloat16_copy_decodes_catalogue_items() -> None:
    model = tiny_causal_lm(30, arch="llama", seed=0)
    ids = torch.tensor([[2, 5], [2, 6], [3, 7], [4, 8]])
    tables = build_prefix_tables(ids, 1)
    prompts = torch.tensor([[9, 10, 11], [12, 13, 14]])
    out = constrained_beam_search(search_model(model, "bfloat16"), prompts, torch.ones_like(prompts), tables, 4)
    assert sorted(out.items[0].tolist()) == [0, 1, 2, 3] and torch.isfinite(out.scores).all()


def test_unknown_test_dtype_is_refused() -> None:
    with pytest.raises(ValueError, match="test_dtype: unknown 'float16'"):
        check_test_dtype("float16")
