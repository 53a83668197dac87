"""Content words of item text, weighted by how rare they are in the catalogue.

Both the template teacher (what to say about a history) and the denoised rewrite (which history items
match the inferred intent) need the same notion of "what an item is about": lower-cased words of the
title, brand and categories, minus stop words and minus words so common in the catalogue (e.g. the
root category "Industrial & Scientific") that they say nothing about a single item.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable

_WORD_RE = re.compile(r"[a-z][a-z0-9'\-]*[a-z0-9]|[a-z]")
STOPWORDS = frozenset(
    """a about above after again all also an and any are as at be because been before being below between both
    but by can could did do does doing down during each few for from further had has have having he her here
    him his how i if in into is it its itself just like may me more most my new no nor not now of off on once
    one only or other our out over own per pack piece same set she should so some such than that the their
    them then there these they this those through to too under until up use used user users very was we were
    what when where which while who why will with would you your item items product products inch inches
    count size color black white pcs""".split()
)


def normalise(word: str) -> str:
    """Crude plural folding so 'staples' and 'staple' meet; enough for overlap scores."""
    if len(word) > 3 and word.endswith("s") and not word.endswith(("ss", "us", "is")):
        return word[:-1]
    return word


def words(text: str) -> list[str]:
    """Normalised content words of ``text`` in order of first appearance; stop words and words with digits
    (model numbers, sizes) removed."""
    seen: dict[str, None] = {}
    for w in _WORD_RE.findall(text.lower()):
        if len(w) > 2 and w not in STOPWORDS and not any(ch.isdigit() for ch in w):
            seen.setdefault(normalise(w), None)
    return list(seen)


class KeywordModel:
    """Words with their document frequency over the item texts it was fitted on.

    ``keywords(text)`` keeps words that occur in at most ``max_df`` of the documents, so catalogue-wide
    words drop out; unseen words are kept (they are rare by definition).
    """

    def __init__(self, documents: Iterable[str], max_df: float = 0.1) -> None:
        if not 0 < max_df <= 1:
            raise ValueError(f"max_df must be in (0, 1], got {max_df}")
        self.df: Counter[str] = Counter()
        self.n_docs = 0
        for doc in documents:
            self.n_docs += 1
            self.df.update(set(words(doc)))
        if self.n_docs == 0:
            raise ValueError("KeywordModel needs at least one document")
        self.max_df = max_df

    def informative(self, word: str) -> bool:
        return self.df[word] <= self.max_df * self.n_docs

    def keywords(self, text: str) -> list[str]:
        return [w for w in words(text) if self.informative(w)]


def item_document(item: dict[str, str]) -> str:
    """The text an item is described by for keyword purposes: title, brand and categories."""
    return " ".join(item.get(f, "") for f in ("title", "brand", "categories"))
