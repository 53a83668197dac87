"""Alignment SFT tasks (spec §5.1): templates, builders, teacher side information."""

from gream_lit.data.tasks.builders import (
    DEFAULT_TASKS,
    SYSTEM_PROMPT,
    TaskContext,
    TaskSample,
    TaskSpec,
    build_alignment_samples,
    parse_task_specs,
)
from gream_lit.data.tasks.side_info import UserSideInfo, load_side_info
from gream_lit.data.tasks.templates import DIRECT_EVAL_TEMPLATE

__all__ = [
    "DEFAULT_TASKS",
    "DIRECT_EVAL_TEMPLATE",
    "SYSTEM_PROMPT",
    "TaskContext",
    "TaskSample",
    "TaskSpec",
    "UserSideInfo",
    "build_alignment_samples",
    "load_side_info",
    "parse_task_specs",
]
