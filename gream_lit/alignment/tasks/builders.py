"""Alignment task builders (docs/gream_spec.md §5.1): catalog + semantic IDs -> chat samples.

Each builder turns one kind of knowledge into instruction/answer pairs: sequences of IDs
(``seqrec``), ID <-> text (``item2index``, ``index2item``), mixed ID/text sequences (``fusionseqrec``)
and teacher side information (``itemsearch``, ``preferenceobtain``). A sample keeps its history as a
list so over-long prompts can later drop the oldest items without touching the instruction or answer.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields

from gream_lit.alignment.tasks.user_side_info import UserSideInfo
from gream_lit.data import templates as T
from gream_lit.data.catalog import Catalog
from gream_lit.data.split import Sample
from gream_lit.data.text_format import TaskSample

log = logging.getLogger(__name__)


@dataclass
class TaskSpec:
    """How much of one task to build.

    Args:
        enabled: build this task at all.
        prompt_samples: templates drawn (without repetition) per data sample, as GREAM's
            ``train_prompt_sample_num``.
        data_samples: random subset of this many data samples (0 = all), as ``train_data_sample_num``.
    """

    enabled: bool = True
    prompt_samples: int = 1
    data_samples: int = 0


DEFAULT_TASKS: dict[str, TaskSpec] = {
    "seqrec": TaskSpec(prompt_samples=1),
    "item2index": TaskSpec(prompt_samples=2),
    "index2item": TaskSpec(prompt_samples=2),
    "fusionseqrec": TaskSpec(prompt_samples=1, data_samples=50000),
    "itemsearch": TaskSpec(prompt_samples=1),
    "preferenceobtain": TaskSpec(prompt_samples=1),
    "seqdense": TaskSpec(enabled=False),
}
# Tasks the data module writes as whole-sequence rows rather than instruction samples (``seqdense``:
# every item of a user's training sequence is a target, see ``compact_format.dense_row``).
ROW_TASKS = frozenset({"seqdense"})


def parse_task_specs(config: dict[str, dict] | None) -> dict[str, TaskSpec]:
    """Defaults overridden by ``config`` (``{task: {enabled, prompt_samples, data_samples}}``)."""
    specs = {name: TaskSpec(**vars(spec)) for name, spec in DEFAULT_TASKS.items()}
    allowed = {f.name for f in fields(TaskSpec)}
    for name, overrides in (config or {}).items():
        if name not in specs:
            raise ValueError(f"unknown alignment task {name!r}; known: {sorted(specs)}")
        bad = set(overrides or {}) - allowed
        if bad:
            raise ValueError(f"task {name!r}: unknown option(s) {sorted(bad)}; allowed: {sorted(allowed)}")
        for key, value in (overrides or {}).items():
            setattr(specs[name], key, value)
        if specs[name].prompt_samples < 1 or specs[name].data_samples < 0:
            raise ValueError(f"task {name!r}: prompt_samples must be >= 1 and data_samples >= 0, got {specs[name]}")
    return specs


def clean_title(title: str) -> str:
    """Titles lose backticks and trailing ``.!?,;:`` (docs/gream_spec.md §5.1)."""
    return title.replace("`", "").strip().rstrip(".!?,;:").strip()


def has_text(text: str) -> bool:
    return text.strip() not in ("", ".")


@dataclass
class TaskContext:
    """Everything the builders read: catalog, each item's ID string, train samples, side information."""

    catalog: Catalog
    sids: list[str]
    train: list[Sample]
    side_info: dict[int, UserSideInfo] = field(default_factory=dict)
    max_history: int = 20

    def title(self, item: int) -> str:
        return clean_title(self.catalog.items[item].get("title", ""))

    def description(self, item: int) -> str:
        return self.catalog.items[item].get("description", "").strip()


def _subset(pool: Sequence, n: int, rng: random.Random) -> list:
    return list(pool) if n == 0 or n >= len(pool) else rng.sample(list(pool), n)


def _templates(pool: list[tuple[str, str]], k: int, rng: random.Random, usable: Callable[[str, str], bool]):
    ok = [(kind, text) for kind, text in pool if usable(kind, text)]
    return rng.sample(ok, min(k, len(ok)))


def _text_kinds(ctx: TaskContext, item: int) -> set[str]:
    kinds = set()
    if ctx.title(item):
        kinds.add("title")
    if has_text(ctx.description(item)):
        kinds.add("description")
    if kinds == {"title", "description"}:
        kinds.add("both")
    return kinds


def build_seqrec(ctx: TaskContext, spec: TaskSpec, rng: random.Random) -> list[TaskSample]:
    out = []
    for s in _subset(ctx.train, spec.data_samples, rng):
        history = tuple(ctx.sids[h] for h in s.history)
        for _, text in _templates(T.SEQREC, spec.prompt_samples, rng, lambda k, t: True):
            out.append(TaskSample("seqrec", text, history, ctx.sids[s.target]))
    return out


def build_item2index(ctx: TaskContext, spec: TaskSpec, rng: random.Random) -> list[TaskSample]:
    out = []
    for item in _subset(range(ctx.catalog.n_items), spec.data_samples, rng):
        kinds = _text_kinds(ctx, item)
        values = {"title": ctx.title(item), "description": ctx.description(item)}
        for _, text in _templates(T.ITEM2INDEX, spec.prompt_samples, rng, lambda k, t: k in kinds):
            out.append(TaskSample("item2index", text, (), ctx.sids[item], values))
    return out


def _item_text(ctx: TaskContext, item: int, kind: str) -> str:
    if kind == "title":
        return ctx.title(item)
    if kind == "description":
        return ctx.description(item)
    return f"{ctx.title(item)}\n\n{ctx.description(item)}"


def build_index2item(ctx: TaskContext, spec: TaskSpec, rng: random.Random) -> list[TaskSample]:
    out = []
    for item in _subset(range(ctx.catalog.n_items), spec.data_samples, rng):
        kinds = _text_kinds(ctx, item)
        for kind, text in _templates(T.INDEX2ITEM, spec.prompt_samples, rng, lambda k, t: k in kinds):
            out.append(TaskSample("index2item", text, (), _item_text(ctx, item, kind), {"item": ctx.sids[item]}))
    return out


def build_fusionseqrec(ctx: TaskContext, spec: TaskSpec, rng: random.Random) -> list[TaskSample]:
    out = []
    for s in _subset(ctx.train, spec.data_samples, rng):
        kinds = _text_kinds(ctx, s.target) | ({"item_from_titles"} if all(ctx.title(h) for h in s.history) else set())
        for kind, text in _templates(T.FUSIONSEQREC, spec.prompt_samples, rng, lambda k, t: k in kinds):
            if kind == "item_from_titles":
                history = tuple(f'"{ctx.title(h)}"' for h in s.history)
                out.append(TaskSample("fusionseqrec", text, history, ctx.sids[s.target]))
            else:
                history = tuple(ctx.sids[h] for h in s.history)
                out.append(TaskSample("fusionseqrec", text, history, _item_text(ctx, s.target, kind)))
    return out


def _side_users(ctx: TaskContext, task: str, need: Callable[[UserSideInfo], bool]) -> list[int]:
    users = [u for u in range(ctx.catalog.n_users) if u in ctx.side_info and need(ctx.side_info[u])]
    missing = ctx.catalog.n_users - len(users)
    if missing:
        log.info("%s: %d of %d users have no teacher side information; skipped", task, missing, ctx.catalog.n_users)
    return users


def _search_history(ctx: TaskContext, user: int) -> tuple[int, ...]:
    """History before the last training item (``seq[:-3]``), the item side information describes."""
    return tuple(ctx.catalog.sequences[user][:-3][-ctx.max_history :])


def build_itemsearch(ctx: TaskContext, spec: TaskSpec, rng: random.Random) -> list[TaskSample]:
    out = []
    users = _side_users(ctx, "itemsearch", lambda s: bool(s.preferences or s.queries))
    for u in _subset(users, spec.data_samples, rng):
        info, history = ctx.side_info[u], _search_history(ctx, u)

        def usable(kind: str, text: str) -> bool:
            return (
                ("{history}" not in text or bool(history))
                and ("{preference}" not in text or bool(info.preferences))
                and ("{query}" not in text or bool(info.queries))
            )

        target = ctx.catalog.sequences[u][-3]
        for _, text in _templates(T.ITEMSEARCH, spec.prompt_samples, rng, usable):
            values = {
                "preference": rng.choice(info.preferences) if info.preferences else "",
                "query": rng.choice(info.queries) if info.queries else "",
            }
            out.append(TaskSample("itemsearch", text, tuple(ctx.sids[h] for h in history), ctx.sids[target], values))
    return out


def build_preferenceobtain(ctx: TaskContext, spec: TaskSpec, rng: random.Random) -> list[TaskSample]:
    out = []
    users = _side_users(ctx, "preferenceobtain", lambda s: bool(s.preferences))
    for u in _subset(users, spec.data_samples, rng):
        history = _search_history(ctx, u)
        if not history:
            continue
        for _, text in _templates(T.PREFERENCEOBTAIN, spec.prompt_samples, rng, lambda k, t: True):
            response = rng.choice(ctx.side_info[u].preferences)
            out.append(TaskSample("preferenceobtain", text, tuple(ctx.sids[h] for h in history), response))
    return out


BUILDERS: dict[str, Callable[[TaskContext, TaskSpec, random.Random], list[TaskSample]]] = {
    "seqrec": build_seqrec,
    "item2index": build_item2index,
    "index2item": build_index2item,
    "fusionseqrec": build_fusionseqrec,
    "itemsearch": build_itemsearch,
    "preferenceobtain": build_preferenceobtain,
}


def build_alignment_samples(
    ctx: TaskContext, specs: dict[str, TaskSpec], seed: int = 0, passes: int = 1
) -> list[TaskSample]:
    """All enabled tasks, ``passes`` times with fresh templates and subsets (GREAM builds 3 passes).

    Order is pass by pass, task by task, as the official ``get_align.py`` writes it.
    """
    rng = random.Random(seed)
    out: list[TaskSample] = []
    for _ in range(passes):
        for name, spec in specs.items():
            if spec.enabled and name not in ROW_TASKS:
                samples = BUILDERS[name](ctx, spec, rng)
                log.info("alignment task %s: %d samples", name, len(samples))
                out.extend(samples)
    if not out and not any(specs[name].enabled for name in ROW_TASKS if name in specs):
        raise ValueError("alignment tasks produced no samples; enable at least one task with data")
    return out
