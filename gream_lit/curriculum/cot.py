"""Chain-of-thought SFT samples for the reasoning curriculum (docs/gream_spec.md §5.2).

A teacher sees a user's history and the true next item and writes Steps 1-4 while reasoning as if it
did not know the item. We keep Steps 1-3 and build the response

    <think>\\n{Steps 1-3}\\n</think>\\n\\nLet's rewrite user's purchase history: {SIDs}.\\n\\n
    Based on the above analysis, the recommended product is <answer>{SID}</answer>

Unlike the official code, which copies the history verbatim, the rewrite really denoises: history items
sharing no informative word with the teacher's Step 3 (the inferred intent) are dropped, order is kept,
and when nothing matches the whole history is kept (``rewrite="copy"`` gives the official behaviour).
Samples failing a filter (missing or empty step, target ID or title leaked, too long) are dropped and
counted.
"""

from __future__ import annotations

import json
import logging
import random
import re
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from gream_lit.curriculum.teachers.base import Teacher
from gream_lit.curriculum.teachers.prompts import COT_SYSTEM_PROMPT, cot_messages
from gream_lit.data.catalog import Catalog, DataError
from gream_lit.data.keywords import KeywordModel, item_document
from gream_lit.data.semantic_index import SemanticIndex
from gream_lit.data.split import Sample
from gream_lit.data.text_format import (
    REASONING_SYSTEM_PROMPT,
    REASONING_TEMPLATES,
    TaskSample,
    format_response,
    parse_reasoning,
    replace_rewrite,
    visible_rewrite,
)

log = logging.getLogger(__name__)

REWRITE_MODES = ("denoise", "copy")
FILTERS = ("missing_step", "empty_step", "leaked_id", "leaked_title", "too_long")
STEP_LABELS = {1: "analyze the purchase history", 2: "build user preferences", 3: "uncover purchase intent"}

_STEP_RE = re.compile(r"Step\s*([1-4])\b", re.IGNORECASE)


# ---------------------------------------------------------------- teacher text -> reasoning


def strip_step4(text: str) -> str | None:
    """Steps 1-3: cut at the last '.' before the last "Step 4" and keep that '.' (the official
    ``delete_step4``); ``None`` when there is no "Step 4" (often a truncated answer)."""
    at = text.rfind("Step 4")
    dot = text.rfind(".", 0, at) if at >= 0 else -1
    return text[:dot].strip() + "." if dot >= 0 else None


def missing_steps(reasoning: str) -> list[int]:
    """Which of Steps 1-3 the reasoning does not mention."""
    present = {int(m) for m in _STEP_RE.findall(reasoning)}
    return [s for s in (1, 2, 3) if s not in present]


def empty_steps(reasoning: str, min_words: int = 5, ignore: frozenset[str] = frozenset()) -> list[int]:
    """Steps 1-3 with fewer than ``min_words`` words besides "Step k", the step's label and the words in
    ``ignore`` (the request's instructions): a teacher, typically a small model, echoing the requested
    format instead of reasoning about this user."""
    out = []
    for s in (1, 2, 3):
        body = " ".join(plain_words(step_text(reasoning, s))[2:]).removeprefix(STEP_LABELS[s])
        if len([w for w in body.split() if w not in ignore]) < min_words:
            out.append(s)
    return out


def step_text(reasoning: str, step: int) -> str:
    """The text of ``Step <step>`` up to the next step label (empty if the step is absent)."""
    starts = [(int(m.group(1)), m.start()) for m in _STEP_RE.finditer(reasoning)]
    for k, (s, pos) in enumerate(starts):
        if s == step:
            end = next((p for s2, p in starts[k + 1 :] if s2 != step), len(reasoning))
            return reasoning[pos:end]
    return ""


def plain_words(text: str) -> list[str]:
    """Lower-cased alphanumeric words; what leak and echo checks compare."""
    return re.sub(r"[^0-9a-z]+", " ", text.lower()).split()


def title_leaked(reasoning: str, title: str, ngram: int = 6) -> bool:
    """True if the target's title (case and punctuation ignored) appears in the reasoning, or any run of
    ``ngram`` consecutive title words does. One-word titles are too common words to judge."""
    t = plain_words(title)
    if len(t) < 2:
        return False
    r = " " + " ".join(plain_words(reasoning)) + " "
    if f" {' '.join(t)} " in r:
        return True
    return any(f" {' '.join(t[i : i + ngram])} " in r for i in range(len(t) - ngram + 1))


def denoise(history_words: Sequence[set[str]], intent_words: set[str], min_overlap: int = 1) -> list[int]:
    """Positions of history items sharing at least ``min_overlap`` words with the intent, in order.

    Never empty: if no item qualifies, the intent gives no evidence about noise and all are kept.
    """
    kept = [i for i, w in enumerate(history_words) if len(w & intent_words) >= min_overlap]
    return kept or list(range(len(history_words)))


# ---------------------------------------------------------------- samples


@dataclass(frozen=True)
class CotSample(TaskSample):
    """A reasoning SFT sample: a ``TaskSample`` (task "cot") that carries its own system prompt.

    ``user``/``target``/``history_items``/``kept_items`` are catalogue indices (-1/empty for rows read
    from official files, which only hold text).
    """

    system: str = REASONING_SYSTEM_PROMPT
    user: int = -1
    target: int = -1
    history_items: tuple[int, ...] = ()
    kept_items: tuple[int, ...] = ()
    teacher: str = ""

    def messages(self, system: str | None = None, drop: int = 0) -> list[dict[str, str]]:
        """Chat messages; the sample's own reasoning system prompt unless ``system`` overrides it."""
        return super().messages(self.system if system is None else system, drop)

    def response_for(self, drop: int = 0) -> str:
        """The response whose rewritten history holds only items the shortened prompt still shows."""
        if drop == 0 or not self.history:
            return self.response
        return replace_rewrite(
            self.response, visible_rewrite(self.history, parse_reasoning(self.response).rewrite, drop)
        )


@dataclass
class CotStats:
    """How many requests became samples and why the others were dropped."""

    requested: int = 0
    kept: int = 0
    dropped: dict[str, int] = field(default_factory=lambda: {f: 0 for f in FILTERS})
    denoised_samples: int = 0
    history_items: int = 0
    dropped_items: int = 0
    teacher_seconds: float = 0.0


def cot_targets(
    catalog: Catalog, users: Sequence[int] | None = None, max_history: int = 20, min_history: int = 4
) -> list[Sample]:
    """Every training target with at least ``min_history`` items before it (docs/gream_spec.md §5.2): for
    ``trimmed = seq[:-2]``, targets ``trimmed[t]`` for ``min_history <= t < len(trimmed)``."""
    out = []
    for u in range(catalog.n_users) if users is None else users:
        if not 0 <= u < catalog.n_users:
            raise DataError(f"{catalog.name}: user index {u} outside 0..{catalog.n_users - 1}")
        trimmed = catalog.sequences[u][:-2]
        for t in range(min_history, len(trimmed)):
            out.append(Sample(u, tuple(trimmed[max(0, t - max_history) : t]), trimmed[t]))
    return out


class CotBuilder:
    """Turns teacher answers into ``CotSample``s: filters, denoised rewrite, prompt template."""

    def __init__(
        self,
        catalog: Catalog,
        index: SemanticIndex,
        rewrite: str = "denoise",
        min_overlap: int = 1,
        min_step_words: int = 5,
        leak_ngram: int = 6,
        max_response_chars: int = 4000,
        max_df: float = 0.1,
        templates: Sequence[str] = REASONING_TEMPLATES,
        seed: int = 0,
    ) -> None:
        if rewrite not in REWRITE_MODES:
            raise ValueError(f"rewrite must be one of {REWRITE_MODES}, got {rewrite!r}")
        if index.n_items != catalog.n_items:
            raise DataError(f"index has {index.n_items} items but catalog {catalog.name!r} has {catalog.n_items}")
        self.catalog, self.index, self.rewrite = catalog, index, rewrite
        self.min_overlap, self.min_step_words = min_overlap, min_step_words
        self.instruction_words = frozenset(plain_words(COT_SYSTEM_PROMPT))
        self.leak_ngram, self.max_response_chars = leak_ngram, max_response_chars
        self.keywords = KeywordModel((item_document(it) for it in catalog.items), max_df=max_df)
        self.templates = list(templates)
        self.rng = random.Random(seed)

    def reject_reason(self, reasoning: str | None, sample: Sample) -> str | None:
        if reasoning is None or missing_steps(reasoning):
            return "missing_step"
        if empty_steps(reasoning, self.min_step_words, self.instruction_words):
            return "empty_step"
        if self.index.item_string(sample.target) in reasoning:
            return "leaked_id"
        if title_leaked(reasoning, self.catalog.title(sample.target), self.leak_ngram):
            return "leaked_title"
        return None

    def kept_positions(self, reasoning: str, history: Sequence[int]) -> list[int]:
        if self.rewrite == "copy":
            return list(range(len(history)))
        intent = set(self.keywords.keywords(step_text(reasoning, 3) or reasoning))
        words = [set(self.keywords.keywords(item_document(self.catalog.items[i]))) for i in history]
        return denoise(words, intent, self.min_overlap)

    def build(self, sample: Sample, answer: str, teacher_id: str, stats: CotStats) -> CotSample | None:
        stats.requested += 1
        reasoning = strip_step4(answer)
        reason = self.reject_reason(reasoning, sample)
        kept: list[int] = []
        if reasoning is not None and reason is None:
            kept = [sample.history[p] for p in self.kept_positions(reasoning, sample.history)]
            sids = [self.index.item_string(i) for i in kept]
            response = format_response(reasoning, sids, self.index.item_string(sample.target))
            if len(response) > self.max_response_chars:
                reason = "too_long"
        if reason is not None:
            stats.dropped[reason] += 1
            return None
        stats.kept += 1
        stats.history_items += len(sample.history)
        stats.dropped_items += len(sample.history) - len(kept)
        stats.denoised_samples += len(kept) < len(sample.history)
        return CotSample(
            task="cot",
            template=self.rng.choice(self.templates),
            history=tuple(self.index.item_string(i) for i in sample.history),
            response=response,
            user=sample.user,
            target=sample.target,
            history_items=tuple(sample.history),
            kept_items=tuple(kept),
            teacher=teacher_id,
        )


def build_cot_dataset(
    catalog: Catalog,
    index: SemanticIndex,
    teacher: Teacher,
    users: Sequence[int] | None = None,
    out: str | Path | None = None,
    max_samples: int | None = None,
    max_history: int = 20,
    max_description_chars: int = 300,
    chunk_size: int = 256,
    seed: int = 0,
    **builder_kwargs,
) -> tuple[list[CotSample], CotStats]:
    """Ask ``teacher`` for every target of ``users`` (all by default; ``max_samples`` draws a seeded
    subset), build and filter samples, write them as jsonl to ``out`` and the counts to
    ``<out>.stats.json``. Wrap the teacher in ``CachedTeacher`` to make reruns free and resumable."""
    targets = cot_targets(catalog, users, max_history)
    if max_samples is not None and max_samples < len(targets):
        keep = sorted(random.Random(seed).sample(range(len(targets)), max_samples))
        targets = [targets[i] for i in keep]
    if not targets:
        raise DataError(f"{catalog.name}: no user has a training target with 4 items before it")
    builder = CotBuilder(catalog, index, seed=seed, **builder_kwargs)
    stats, samples = CotStats(), []
    for start in range(0, len(targets), chunk_size):
        chunk = targets[start : start + chunk_size]
        requests = [
            cot_messages([catalog.items[i] for i in s.history], catalog.items[s.target], max_description_chars)
            for s in chunk
        ]
        t0 = time.perf_counter()
        answers = teacher.complete_many(requests)
        stats.teacher_seconds += time.perf_counter() - t0
        for s, answer in zip(chunk, answers):
            built = builder.build(s, answer, teacher.teacher_id, stats)
            if built is not None:
                samples.append(built)
        log.info("cot: %d / %d requests, %d kept", stats.requested, len(targets), stats.kept)
    level = logging.INFO if samples else logging.WARNING
    log.log(level, "cot: kept %d of %d; dropped %s", stats.kept, stats.requested, stats.dropped)
    if out is not None:
        save_cot_samples(samples, out)
        Path(str(out) + ".stats.json").write_text(json.dumps(asdict(stats), indent=1))
    return samples, stats


# ---------------------------------------------------------------- files


def save_cot_samples(samples: Sequence[CotSample], path: str | Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    with tmp.open("w", encoding="utf-8") as f:
        for s in samples:
            f.write(json.dumps(asdict(s), ensure_ascii=False) + "\n")
    tmp.replace(path)


def _read_rows(path: Path) -> list[dict]:
    if not path.is_file():
        raise DataError(f"{path}: CoT file not found")
    if path.suffix == ".parquet":
        import pandas as pd

        return pd.read_parquet(path).to_dict(orient="records")
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix == ".jsonl":
            return [json.loads(line) for line in text.splitlines() if line.strip()]
        rows = json.loads(text)
    except json.JSONDecodeError as e:
        raise DataError(f"{path}: invalid JSON at line {e.lineno}: {e.msg}") from e
    if not isinstance(rows, list):
        raise DataError(f"{path}: expected a JSON list of rows")
    return rows


def _from_sharegpt(row: dict, where: str) -> CotSample:
    turns = row.get("conversations")
    turns = list(turns) if turns is not None else []
    roles = [t.get("from") if isinstance(t, dict) else None for t in turns]
    if roles != ["human", "gpt"] or not all(isinstance(t.get("value"), str) and t["value"] for t in turns):
        raise DataError(
            f"{where}: conversations must be [{{from: human, value}}, {{from: gpt, value}}], got roles {roles}"
        )
    prompt = turns[0]["value"].replace("{", "{{").replace("}", "}}")
    system = row.get("system") or REASONING_SYSTEM_PROMPT
    return CotSample(task="cot", template=prompt, history=(), response=turns[1]["value"], system=system)


def load_cot_samples(path: str | Path) -> list[CotSample]:
    """Our jsonl, or the official GREAM layout (ShareGPT rows ``conversations`` [{from: human},
    {from: gpt}] + ``system``, as parquet / json / jsonl), so existing CoT data can be trained on."""
    path = Path(path)
    names = {f.name for f in fields(CotSample)}
    out = []
    for n, row in enumerate(_read_rows(path), 1):
        where = f"{path}: row {n}"
        if not isinstance(row, dict):
            raise DataError(f"{where}: expected an object")
        if "conversations" in row:
            out.append(_from_sharegpt(row, where))
        elif {"template", "response"} <= set(row):
            unknown = set(row) - names
            if unknown:
                raise DataError(f"{where}: unknown fields {sorted(unknown)}")
            row = {k: tuple(v) if isinstance(v, list) else v for k, v in row.items()}
            out.append(CotSample(**row))
        else:
            raise DataError(
                f"{where}: neither a ShareGPT row (conversations) nor a gream_lit CoT row (template, response)"
            )
    if not out:
        raise DataError(f"{path}: no CoT rows")
    return out
