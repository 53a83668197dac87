"""What we ask teachers, in our own words (docs/gream_spec.md §3 and §5.2 describe the official prompts' shape).

Requests are plain chat messages; item metadata is written as ``key: value`` blocks so that the
offline ``TemplateTeacher`` can read a request back with ``parse_item_blocks``.
"""

from __future__ import annotations

import re

from gream_lit.curriculum.teachers.base import Messages

ITEM_FIELDS = ("title", "brand", "categories", "description")

COT_SYSTEM_PROMPT = """You are a recommendation analyst. You receive a customer's purchase history (items with \
their metadata) and the item the customer actually bought next.

Explain how one could have predicted the next purchase, but reason as if the next item were unknown: every \
statement must be supported by the purchase history alone, and you must never name or quote the next item.

Write exactly four steps, each starting with its label:
Step 1: Analyze the purchase history - what the items are, recurring categories, brands, uses and trends.
Step 2: Build user preferences - summarise what this customer cares about.
Step 3: Uncover purchase intent - connect history and preferences to what the customer most likely needs now.
Step 4: Recommend the item - describe the kind of item to recommend, with its likely metadata.

Be concise and output only the four steps."""

COT_STEP_HEADERS = (
    "Step 1: Analyze the purchase history.",
    "Step 2: Build user preferences.",
    "Step 3: Uncover purchase intent.",
    "Step 4: Recommend the item.",
)

PREFERENCE_PROMPTS = {
    "summary": (
        "You read a customer's purchase history and describe their preferences in two or three sentences, in "
        "the third person. Do not list or name the purchased items; describe what they reveal about the customer."
    ),
    "long_term": (
        "You read a customer's purchase history and state their long-term, stable preferences in one or two "
        "sentences. Answer in the form 'Long-term preferences: ...' and do not name the items."
    ),
    "short_term": (
        "You read a customer's purchase history and state their short-term preferences, judged mostly from the "
        "latest purchases, in one or two sentences. Answer in the form 'Short-term preferences: ...' and do not "
        "name the items."
    ),
}

INTENTION_PROMPTS = {
    "user": (
        "You are given an item a customer bought. Write, in the customer's own voice, the need that led to the "
        "purchase, as a short search request that does not name the item. Answer in the form 'My needs: ...'."
    ),
    "item": (
        "You are given an item a customer bought. Describe the characteristics the customer was looking for, as "
        "a short search request that does not name the item. Answer in the form 'Item characteristics: ...'."
    ),
}

EMPTY_PREFERENCE = "I enjoy high-quality items."
_BLOCK_RE = re.compile(r"^(Item \d+|Next item|Purchased item):[ \t]*$", re.MULTILINE)


def item_block(item: dict[str, str], max_description_chars: int = 300) -> str:
    """``key: value`` lines for the item's text fields; empty fields are written as N/A.

    ``max_description_chars <= 0`` leaves the description out (preference prompts list many items).
    """
    lines = []
    for f in ITEM_FIELDS:
        if f == "description" and max_description_chars <= 0:
            continue
        value = " ".join(str(item.get(f, "") or "").split())
        if f == "description" and len(value) > max_description_chars:
            value = value[:max_description_chars].rsplit(" ", 1)[0] + " ..."
        lines.append(f"{f}: {value if value and value != '.' else 'N/A'}")
    return "\n".join(lines)


def history_blocks(items: list[dict[str, str]], max_description_chars: int = 300) -> str:
    return "\n\n".join(f"Item {k}:\n{item_block(it, max_description_chars)}" for k, it in enumerate(items, 1))


def cot_messages(history: list[dict[str, str]], target: dict[str, str], max_description_chars: int = 300) -> Messages:
    user = (
        f"User purchase history:\n\n{history_blocks(history, max_description_chars)}\n\n"
        f"Next item:\n{item_block(target, max_description_chars)}"
    )
    return [{"role": "system", "content": COT_SYSTEM_PROMPT}, {"role": "user", "content": user}]


def preference_messages(kind: str, domain: str, history: list[dict[str, str]]) -> Messages:
    user = f"Product domain: {domain}\n\nPurchase history, oldest first:\n\n{history_blocks(history, 0)}"
    return [{"role": "system", "content": PREFERENCE_PROMPTS[kind]}, {"role": "user", "content": user}]


def intention_messages(kind: str, domain: str, item: dict[str, str]) -> Messages:
    user = f"Product domain: {domain}\n\nPurchased item:\n{item_block(item)}"
    return [{"role": "system", "content": INTENTION_PROMPTS[kind]}, {"role": "user", "content": user}]


def parse_item_blocks(text: str) -> list[tuple[str, dict[str, str]]]:
    """Read back the ``(label, fields)`` blocks written by ``item_block``; N/A becomes empty."""
    parts = _BLOCK_RE.split(text)
    blocks = []
    for label, body in zip(parts[1::2], parts[2::2]):
        fields = {}
        for line in body.strip().splitlines():
            key, sep, value = line.partition(": ")
            if sep and key in ITEM_FIELDS:
                fields[key] = "" if value == "N/A" else value
        blocks.append((label, fields))
    return blocks


def after_label(text: str) -> str:
    """The official post-processing: keep what follows the first ':' (if any), on one line."""
    _, sep, rest = text.partition(":")
    return " ".join((rest if sep else text).split())
