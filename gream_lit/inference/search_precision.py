"""The precision a test decodes in: the model itself in fp32, or a copy in bfloat16.

On CPUs with AVX512-BF16 or AMX, bfloat16 matrix products run at about twice the fp32 rate; the beam
search over SmolLM2 served 2.3x the users per second on this project's 2-core machine with the same
hits at 10 (docs/benchmarks.md, "Direct-mode evaluation on a CPU"). The copy leaves the trained fp32 weights
untouched (casting them in place and back would round them), and costs half the model's memory for
the length of the test. The scores are bfloat16 log-probs, so near-ties may swap places in a list;
docs/benchmarks.md reports how often that changes a metric.
"""

from __future__ import annotations

import copy

import torch

TEST_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def check_test_dtype(name: str) -> None:
    if name not in TEST_DTYPES:
        raise ValueError(f"test_dtype: unknown {name!r}; expected one of {sorted(TEST_DTYPES)}")


def search_model(model: torch.nn.Module, name: str) -> torch.nn.Module:
    """``model`` itself for ``float32`` (or a model already in ``name``), else an eval-mode copy in ``name``."""
    dtype = TEST_DTYPES[name]
    if next(model.parameters()).dtype == dtype:
        return model
    return copy.deepcopy(model).to(dtype).eval()
