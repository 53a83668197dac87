"""Short thoughts written from the history alone: the reasoning a small model can learn and keep.

A thought is one line, ``Recently A, B and C; mostly D, E and F.``, naming the kinds of the user's most
recent items and the kinds that recur in the visible history. It is a function of the prompt, never of
the target, so the student can write it at test time exactly as it was trained to, and whether what it
wrote is grounded in the history can be checked (``grounded``). Kinds are an item's categories (the leaf
of a hierarchy such as Amazon's, every genre of a flat list such as MovieLens') or, for catalogues with
titles only, its rarest title words; or (``codes``) the first token of its semantic ID, the coarse cluster
the index put it in, so the thought narrows the answer's first step. Sizes: about 20-30 SmolLM2 tokens a thought.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from typing import Literal, get_args

from gream_lit.data.catalog import Catalog
from gream_lit.data.compact_format import IGNORE
from gream_lit.data.keywords import KeywordModel

THINK_OPEN = "<think>"
THINK_CLOSE = "</think>"
ThoughtSource = Literal["auto", "categories", "leaf", "keywords", "codes"]
TERM_SOURCES = get_args(ThoughtSource)


def _categories(item: dict[str, str]) -> list[str]:
    return [c.strip() for c in item.get("categories", "").split(",") if c.strip()]


def hierarchical(items: Sequence[dict[str, str]]) -> bool:
    """Whether category lists are paths (most items share one root, as Amazon's do) rather than tags."""
    roots = Counter(cats[0] for cats in map(_categories, items) if cats)
    return bool(roots) and roots.most_common(1)[0][1] > 0.5 * sum(roots.values())


def _join(terms: Sequence[str]) -> str:
    return terms[0] if len(terms) == 1 else ", ".join(terms[:-1]) + " and " + terms[-1]


class ThoughtWriter:
    """Writes and checks short thoughts over one catalogue.

    Args:
        catalog: the items whose kinds the thoughts name.
        source: ``categories`` (every category), ``leaf`` (a hierarchy's last level), ``keywords``
            (rare title words) or ``auto`` (``leaf`` for hierarchies, ``categories`` for tag lists,
            ``keywords`` for items without categories).
        recent: most recent items whose kinds open the thought.
        top: recurring kinds named after them.
        first_codes: each item's first semantic-ID token, needed by ``source="codes"``: the kinds are then
            the coarse clusters of the index itself (first the cluster, then the item within it).
    """

    def __init__(
        self,
        catalog: Catalog,
        source: ThoughtSource = "auto",
        recent: int = 3,
        top: int = 3,
        first_codes: Sequence[str] | None = None,
    ) -> None:
        if source not in TERM_SOURCES:
            raise ValueError(f"thought source {source!r}; expected one of {TERM_SOURCES}")
        if min(recent, top) < 1:
            raise ValueError(f"recent and top must be >= 1, got {recent}, {top}")
        if source == "codes" and (first_codes is None or len(first_codes) != catalog.n_items):
            raise ValueError("thought source 'codes' needs one first ID token per catalogue item (first_codes)")
        self.recent, self.top = recent, top
        items = catalog.items
        leaf = hierarchical(items) if source == "auto" else source == "leaf"
        titles = KeywordModel((it.get("title", "") for it in items), max_df=0.1)
        self.terms: list[tuple[str, ...]] = []
        for i, it in enumerate(items):
            if source == "codes":
                self.terms.append((first_codes[i],))
                continue
            cats = _categories(it) if source != "keywords" else []
            if cats:
                self.terms.append((cats[-1],) if leaf else tuple(cats))
            else:
                self.terms.append(tuple(w.capitalize() for w in titles.keywords(it.get("title", ""))[:2]))
        vocab = sorted({t for ts in self.terms for t in ts}, key=len, reverse=True)
        self._pattern = re.compile(r"(?<!\w)(" + "|".join(map(re.escape, vocab)) + r")(?!\w)") if vocab else None

    @classmethod
    def over_index(cls, catalog: Catalog, source: ThoughtSource, index) -> ThoughtWriter:
        """The writer of a run whose semantic index is ``index`` (a ``SemanticIndex``, read for ``codes`` only)."""
        codes = [index.item_tokens(i)[0] for i in range(catalog.n_items)] if source == "codes" else None
        return cls(catalog, source, first_codes=codes)

    def thought(self, history: Sequence[int]) -> str:
        """The thought for a visible history (catalogue positions, oldest first); empty without kinds."""
        recent: dict[str, None] = {}
        for item in reversed(history[-self.recent :]):
            for t in self.terms[item]:
                recent.setdefault(t, None)
        counts = Counter(t for item in history for t in self.terms[item])
        if not counts:
            return ""
        top = [t for t, _ in counts.most_common(self.top)]
        return f"Recently {_join(list(recent)[: self.recent])}; mostly {_join(top)}."

    def named(self, text: str) -> list[str]:
        """The catalogue kinds a text names, in order."""
        return self._pattern.findall(text) if self._pattern else []

    def grounded(self, text: str, history: Sequence[int]) -> bool:
        """A thought is grounded when it names at least one kind and every kind it names is one of the
        visible history's. Only the thought counts: ``text`` is cut at its first ``</think>``, so the answer
        ID after it (whose first code is a kind under ``source="codes"``) is not read as part of it."""
        named = self.named(text.split(THINK_CLOSE, 1)[0])
        seen = {t for item in history for t in self.terms[item]}
        return bool(named) and all(t in seen for t in named)


def think_block(thought: str) -> str:
    """The assistant text before the answer ID (the ID tokens follow ``THINK_CLOSE`` directly)."""
    return f"{THINK_OPEN}{thought}{THINK_CLOSE}"


def short_row(prompt: list[int], think_ids: list[int], answer: list[int]) -> dict:
    """A compact prompt, the think block and the answer ID; the loss is on the think block and the ID,
    so the model learns to write the thought, close it and answer."""
    target = think_ids + answer
    return {"input_ids": prompt + target, "labels": [IGNORE] * len(prompt) + target}
