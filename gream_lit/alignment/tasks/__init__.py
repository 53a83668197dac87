"""Alignment SFT tasks (docs/gream_spec.md §5.1): templates, builders, teacher side information."""

from gream_lit.alignment.tasks.builders import (
    DEFAULT_TASKS,
    TaskContext,
    TaskSpec,
    build_alignment_samples,
    parse_task_specs,
)
from gream_lit.alignment.tasks.user_side_info import UserSideInfo, load_side_info

__all__ = [
    "DEFAULT_TASKS",
    "TaskContext",
    "TaskSpec",
    "UserSideInfo",
    "build_alignment_samples",
    "load_side_info",
    "parse_task_specs",
]
