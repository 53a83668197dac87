"""Item text cleaning as GREAM's preprocessing does it (docs/gream_spec.md §2.2 step 2), so prompts see the same text."""

from __future__ import annotations

import html
import re

MAX_FIELD_CHARS = 2000
_TAG = re.compile(r"</?\w+[^>]*>")
_DROPPED = re.compile(r'["\n\r]')


def _clean_piece(text: str) -> str:
    text = html.unescape(text)
    text = _TAG.sub("", text)
    return _DROPPED.sub("", text).strip()


def clean_text(raw: object) -> str:
    """HTML-unescape, strip tags, drop ``"`` and line breaks, end with exactly one ".".

    Lists are cleaned piece by piece and joined with spaces. A field of ``MAX_FIELD_CHARS`` or more
    characters (after cleaning) is blanked: the official code does that so one huge description
    cannot swamp a prompt. Unlike the official code, an empty field stays empty instead of becoming ".",
    so "no description" is still recognisable downstream.
    """
    if raw is None:
        return ""
    if isinstance(raw, (list, tuple)):
        text = " ".join(p for p in (_clean_piece(str(r)) for r in raw) if p)
    else:
        text = _clean_piece(str(raw))
    text = text.rstrip(".").rstrip()
    if not text:
        return ""
    text += "."
    return "" if len(text) >= MAX_FIELD_CHARS else text
