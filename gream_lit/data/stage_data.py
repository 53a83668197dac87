"""What the LLM stages' modules read from their data module, as ``typing.Protocol`` classes.

``SFTModule``, ``ReasoningSFTModule`` and ``SRPOModule`` use these attributes and methods directly;
their data modules (``AlignmentDataModule``, ``CurriculumDataModule``, ``RLDataModule``) provide them.
``missing_members`` says which members an object lacks, so that a module handed another data module
fails at once with their names (``inference.llm_stage.LLMStageModule.stage_data``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

from gream_lit.data.catalog import Catalog
from gream_lit.data.direct_prompt import DirectPrompt
from gream_lit.data.semantic_index import SemanticIndex


@runtime_checkable
class LLMStageData(Protocol):
    """What every LLM stage reads: the catalogue (raw item ids, titles) and its semantic-ID index,
    both set once ``load`` (or ``setup``) has run; ``exclude_seen``: whether evaluation drops each user's
    earlier items."""

    catalog: Catalog | None
    index: SemanticIndex | None
    exclude_seen: bool

    def load(self) -> Catalog: ...


@runtime_checkable
class SFTStageData(LLMStageData, Protocol):
    """The SFT stages' data (``AlignmentDataModule``).

    ``tokenizer`` (with the ID tokens) and ``backbone`` (the model it belongs to) are set by ``setup``;
    ``eval_mode`` is ``direct`` or ``reasoning`` (how next-item evaluation prompts ask);
    ``direct_prompt`` is the layout of direct-mode prompts, ``reasoning_prompt`` that of reasoning-mode
    prompts (``None``: the data has no reasoning mode)."""

    tokenizer: Any
    backbone: str
    eval_mode: str

    def item_texts(self) -> list[str]: ...

    def eval_set_names(self) -> list[str]: ...

    def direct_prompt(self) -> DirectPrompt: ...

    def reasoning_prompt(self) -> DirectPrompt | None: ...


@runtime_checkable
class ReasoningStageData(SFTStageData, Protocol):
    """The curriculum stage's data (``CurriculumDataModule``): the layout of its chains of thought
    (``official`` or ``short``) and, for short thoughts, whether they are grounded in the history."""

    cot_layout: str

    def grounded(self, users: list[int], thoughts: list[str]) -> list[bool]: ...


@runtime_checkable
class RLStageData(LLMStageData, Protocol):
    """The SRPO stage's data (``RLDataModule``): prompts in ``mode`` (``reason`` or ``direct``); the
    prompt layouts take the policy's prompt budget."""

    mode: str
    prompt_format: str
    eval_mode: str

    def direct_prompt(self, max_prompt_tokens: int) -> DirectPrompt: ...

    def reasoning_prompt(self, max_prompt_tokens: int) -> DirectPrompt: ...


def protocol_members(protocol: type) -> list[str]:
    """The attribute and method names a protocol class declares (its protocol bases' included)."""
    names: set[str] = set()
    for cls in protocol.__mro__:
        if cls in (Protocol, object) or not getattr(cls, "_is_protocol", False):
            continue
        names |= {n for n in vars(cls) if not n.startswith("_")}
        names |= set(vars(cls).get("__annotations__", {}))
    return sorted(names)


def missing_members(obj: object, protocol: type) -> Sequence[str]:
    """The members of ``protocol`` that ``obj`` lacks (empty: it satisfies the protocol)."""
    return [name for name in protocol_members(protocol) if not hasattr(obj, name)]
