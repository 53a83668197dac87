"""Teachers: chat models that write reasoning and user side information (docs/gream_spec.md §3, §5.2)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from gream_lit.curriculum.teachers.base import Messages, Teacher, TeacherError
from gream_lit.curriculum.teachers.cache import CachedTeacher, cache_key
from gream_lit.curriculum.teachers.hf import HFTeacher
from gream_lit.curriculum.teachers.openai_compat import OpenAITeacher
from gream_lit.curriculum.teachers.template import TemplateTeacher
from gream_lit.curriculum.teachers.write_side_info import build_user_side_info
from gream_lit.data.catalog import Catalog

KINDS = ("template", "hf", "openai")


def build_teacher(kind: str, catalog: Catalog | None = None, cache: str | Path | None = None, **kwargs: Any) -> Teacher:
    """A teacher from config: ``kind`` is template | hf | openai, ``kwargs`` go to its constructor;
    with ``cache`` set, answers are stored in (and reused from) that jsonl file."""
    if kind == "template":
        if catalog is None:
            raise ValueError("the template teacher needs the catalog (its keyword statistics come from it)")
        teacher: Teacher = TemplateTeacher.from_catalog(catalog, **kwargs)
    elif kind == "hf":
        teacher = HFTeacher(**kwargs)
    elif kind == "openai":
        teacher = OpenAITeacher(**kwargs)
    else:
        raise ValueError(f"unknown teacher kind {kind!r}; expected one of {KINDS}")
    return CachedTeacher(teacher, cache) if cache else teacher


__all__ = [
    "KINDS",
    "CachedTeacher",
    "HFTeacher",
    "Messages",
    "OpenAITeacher",
    "Teacher",
    "TeacherError",
    "TemplateTeacher",
    "build_teacher",
    "build_user_side_info",
    "cache_key",
]
