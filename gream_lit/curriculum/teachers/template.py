"""A deterministic offline teacher that writes its answers from catalogue metadata.

It reads the item blocks of our own request formats back (``parse_item_blocks``) and fills fixed
sentence patterns with categories, brands and rare title words. No model, no network: it makes the
whole reasoning pipeline runnable and testable anywhere, and is a floor any LLM teacher should beat.
"""

from __future__ import annotations

from collections import Counter

from gream_lit.curriculum.teachers.base import Messages, Teacher, TeacherError, describe_request, validate_messages
from gream_lit.curriculum.teachers.prompts import (
    COT_SYSTEM_PROMPT,
    INTENTION_PROMPTS,
    PREFERENCE_PROMPTS,
    parse_item_blocks,
)
from gream_lit.data.catalog import Catalog
from gream_lit.data.keywords import KeywordModel, item_document


def categories(item: dict[str, str]) -> list[str]:
    return [c.strip() for c in item.get("categories", "").split(",") if c.strip()]


def leaf_category(item: dict[str, str]) -> str:
    cats = categories(item)
    return cats[-1] if cats else ""


def parent_category(item: dict[str, str]) -> str:
    """The level above the leaf (not the catalogue root), or empty."""
    cats = categories(item)
    return cats[-2] if len(cats) > 2 else ""


def _join(words: list[str], empty: str) -> str:
    if not words:
        return empty
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]


def _kind(item: dict[str, str], unknown: str) -> str:
    """ "Leaf (Parent)" category, the short name a student that sees only semantic IDs can learn to write
    (quoting a title it never sees made SmolLM2 invent one and loop on it); ``unknown`` without one."""
    leaf, parent = leaf_category(item), parent_category(item)
    return f"{leaf} ({parent})" if parent else leaf or unknown


def _from_brand(item: dict[str, str]) -> str:
    brand = item.get("brand", "").rstrip(".")
    return f" from {brand}" if brand else ""


class TemplateTeacher(Teacher):
    """Answers CoT, preference and intention requests from metadata; ``keywords`` decides which words
    are informative (fit it on the catalogue with ``from_catalog``)."""

    def __init__(self, keywords: KeywordModel, n_keywords: int = 3) -> None:
        self.kw = keywords
        self.n_keywords = n_keywords
        self._handlers = {COT_SYSTEM_PROMPT: self._cot}
        for kind in PREFERENCE_PROMPTS:
            self._handlers[PREFERENCE_PROMPTS[kind]] = lambda items, kind=kind: self._preference(kind, items)
        for kind in INTENTION_PROMPTS:
            self._handlers[INTENTION_PROMPTS[kind]] = lambda items, kind=kind: self._intention(kind, items)

    @classmethod
    def from_catalog(cls, catalog: Catalog, max_df: float = 0.1, n_keywords: int = 3) -> TemplateTeacher:
        return cls(KeywordModel((item_document(it) for it in catalog.items), max_df=max_df), n_keywords)

    @property
    def teacher_id(self) -> str:
        return f"template:v3:k{self.n_keywords}:df{self.kw.max_df}"

    def complete(self, messages: Messages) -> str:
        validate_messages(messages)
        system = next((m["content"] for m in messages if m["role"] == "system"), "")
        user = next((m["content"] for m in messages if m["role"] == "user"), "")
        handler = self._handlers.get(system)
        if handler is None:
            raise TeacherError(f"{describe_request(messages)}: TemplateTeacher only answers gream_lit's own prompts")
        return handler(parse_item_blocks(user))

    def _top_words(self, items: list[dict[str, str]], n: int) -> list[str]:
        counts: Counter[str] = Counter()
        for it in items:
            counts.update(self.kw.keywords(item_document(it)))
        return [w for w, _ in counts.most_common(n)]

    @staticmethod
    def _top_categories(items: list[dict[str, str]], n: int) -> list[tuple[str, int]]:
        return Counter(c for c in map(leaf_category, items) if c).most_common(n)

    def _cot(self, blocks: list[tuple[str, dict[str, str]]]) -> str:
        history = [f for label, f in blocks if label.startswith("Item ")]
        targets = [f for label, f in blocks if label == "Next item"]
        if not history or len(targets) != 1:
            raise TeacherError("CoT request needs item blocks and exactly one 'Next item' block")
        target, last = targets[0], history[-1]
        cats = self._top_categories(history, 3)
        brands = Counter(b for b in (h.get("brand", "").rstrip(".") for h in history) if b).most_common(2)
        recent = self.kw.keywords(item_document(last))[:2]
        latest = f'"{last.get("title", "").rstrip(".")}"'  # only where the catalogue has no categories
        cat_text = f", mostly {_join([f'{c} ({n})' for c, n in cats], '')}" if cats else ""
        brand_text = f"; brands include {_join([b for b, _ in brands], '')}" if brands else ""
        step1 = (
            f"Step 1: Analyze the purchase history. The user bought {len(history)} items{cat_text}{brand_text}. "
            f"The latest purchase is {_kind(last, latest)}{_from_brand(last)}."
        )
        loyal = [b for b, n in brands if n >= 2]
        step2 = (
            f"Step 2: Build user preferences. The user keeps coming back to "
            f"{_join(self._top_words(history, self.n_keywords + 1), 'practical everyday items')}"
            + (f" and seems loyal to {loyal[0]}." if loyal else ".")
        )
        wanted = self.kw.keywords(item_document(target))[: self.n_keywords]
        step3 = (
            f"Step 3: Uncover purchase intent. Building on the recent interest in {_join(recent, 'these items')}, "
            f"the user most likely needs {_kind(target, 'a related item')} next, something involving "
            f"{_join(wanted, 'the same use')}."
        )
        brand = target.get("brand") or "any brand"
        step4 = f"Step 4: Recommend the item. Recommend {target.get('title', '')} by {brand}."
        return "\n".join([step1, step2, step3, step4])

    def _preference(self, kind: str, blocks: list[tuple[str, dict[str, str]]]) -> str:
        items = [f for _, f in blocks]
        cats = _join([c for c, _ in self._top_categories(items, 2)], "a range of products")
        words = _join(self._top_words(items, self.n_keywords + 1), "quality and value")
        if kind == "summary":
            return f"The user is interested in {cats} and values {words}."
        if kind == "long_term":
            return f"Long-term preferences: {cats}, with a recurring interest in {words}."
        recent = items[-3:]
        return (
            f"Short-term preferences: lately focused on "
            f"{_join([c for c, _ in self._top_categories(recent, 2)], 'similar products')}, such as "
            f"{_join(self._top_words(recent, self.n_keywords), 'practical items')}."
        )

    def _intention(self, kind: str, blocks: list[tuple[str, dict[str, str]]]) -> str:
        if len(blocks) != 1:
            raise TeacherError(f"intention request needs exactly one item block, got {len(blocks)}")
        item = blocks[0][1]
        leaf = leaf_category(item) or "a product"
        brand = item.get("brand", "")
        brand_words = set(self.kw.keywords(brand))
        title_words = [w for w in self.kw.keywords(item.get("title", "")) if w not in brand_words]
        words = _join(title_words[: self.n_keywords], "good quality")
        if kind == "user":
            return f"My needs: I am looking for {leaf.lower()} for {words}."
        return f"Item characteristics: {leaf.lower()}{f' from {brand}' if brand else ''}, featuring {words}."
