"""SemanticIndex: item <-> codes <-> tokens, read and written as GREAM / LC-Rec ``.index.json``.

Codes are stored 0-based in a ``[n_items, depth]`` array; ``-1`` pads items whose ID is shorter
(the official GREAM index mixes 4- and 5-token IDs). Two token styles exist in the wild:
GREAM's ``<|a_12|>`` with 1-based codes and LC-Rec's ``<a_11>`` with 0-based codes; reading detects
the style and writing keeps it, so files round-trip byte-compatibly.
"""

from __future__ import annotations

import json
import re
import string
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from gream_lit.data.catalog import DataError

LEVEL_LETTERS = string.ascii_lowercase
_TOKEN_RE = re.compile(r"^<(\|?)([a-z])_(\d+)(\|?)>$")
STYLES = ("gream", "lcrec")


def format_token(level: int, code: int, style: str = "gream") -> str:
    """Token for a 0-based ``code`` at 0-based ``level``."""
    letter = LEVEL_LETTERS[level]
    if style == "gream":
        return f"<|{letter}_{code + 1}|>"
    if style == "lcrec":
        return f"<{letter}_{code}>"
    raise ValueError(f"unknown token style {style!r}; expected one of {STYLES}")


def parse_token(token: str) -> tuple[int, int, str]:
    """``(level, 0-based code, style)`` of one ID token; raises on anything else."""
    m = _TOKEN_RE.match(token)
    if not m or (m.group(1) != m.group(4)):
        raise ValueError(f"not a semantic-ID token: {token!r}")
    style = "gream" if m.group(1) else "lcrec"
    code = int(m.group(3)) - (1 if style == "gream" else 0)
    if code < 0:
        raise ValueError(f"code below the first code in {token!r}")
    return LEVEL_LETTERS.index(m.group(2)), code, style


@dataclass
class SemanticIndex:
    """Discrete IDs of every catalogue item (row ``i`` = item ``i``)."""

    codes: np.ndarray
    codebook_sizes: list[int]
    style: str = "gream"
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.codes = np.asarray(self.codes, dtype=np.int64)
        if self.codes.ndim != 2 or self.codes.shape[0] == 0:
            raise DataError(f"codes must be a non-empty [n_items, depth] array, got shape {self.codes.shape}")
        if len(self.codebook_sizes) != self.codes.shape[1]:
            raise DataError(
                f"index has {self.codes.shape[1]} levels but codebook_sizes lists {len(self.codebook_sizes)}"
            )
        if self.style not in STYLES:
            raise DataError(f"unknown token style {self.style!r}; expected one of {STYLES}")
        for level, size in enumerate(self.codebook_sizes):
            col = self.codes[:, level]
            if (col >= size).any() or (col < -1).any():
                raise DataError(f"level {level} has codes outside 0..{size - 1}")
        present = self.codes >= 0
        if not present[:, 0].all() or (present[:, 1:] & ~present[:, :-1]).any():
            raise DataError("every item needs a first-level code and no gaps between levels")

    @property
    def n_items(self) -> int:
        return self.codes.shape[0]

    @property
    def depth(self) -> int:
        return self.codes.shape[1]

    def lengths(self) -> np.ndarray:
        return (self.codes >= 0).sum(axis=1)

    def item_tokens(self, item: int) -> list[str]:
        return [format_token(lv, int(c), self.style) for lv, c in enumerate(self.codes[item]) if c >= 0]

    def item_string(self, item: int) -> str:
        """The ID as the LLM writes it: tokens joined with no separator (docs/gream_spec.md §4.4)."""
        return "".join(self.item_tokens(item))

    def all_tokens(self) -> list[str]:
        """Every token the vocabulary must hold: all codes of all levels, level by level."""
        return [format_token(lv, c, self.style) for lv, size in enumerate(self.codebook_sizes) for c in range(size)]

    def collisions(self) -> int:
        """Number of items whose full code tuple is shared with an earlier item."""
        return self.n_items - len(np.unique(self.codes, axis=0))

    def lookup(self) -> dict[tuple[int, ...], int]:
        """Map from a code tuple (without padding) to its item; requires a collision-free index."""
        if self.collisions():
            raise DataError(f"index has {self.collisions()} colliding items; resolve collisions first")
        return {tuple(int(c) for c in row if c >= 0): i for i, row in enumerate(self.codes)}

    def to_json(self, path: str | Path) -> None:
        """Write ``{"<item>": [tok, ...]}`` (GREAM/LC-Rec compatible) plus a ``.meta.json`` sidecar."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        data = {str(i): self.item_tokens(i) for i in range(self.n_items)}
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(json.dumps(data))
        tmp.replace(path)
        sidecar = {"codebook_sizes": self.codebook_sizes, "style": self.style, **self.meta}
        path.with_name(path.name.removesuffix(".json") + ".meta.json").write_text(json.dumps(sidecar, indent=1))

    @classmethod
    def from_json(
        cls, path: str | Path, n_items: int | None = None, depth: int | None = None, unique: bool = False
    ) -> SemanticIndex:
        """Read an index file; item keys must be 0..n-1. Codebook sizes come from the sidecar if present.

        With ``unique`` (what decoding and ID-token training need), items sharing an ID are an error
        that names two of them, instead of a failure later inside the decoder's tables.
        """
        path = Path(path)
        if not path.is_file():
            raise DataError(f"{path}: index file not found")
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise DataError(f"{path}: invalid JSON at line {e.lineno}: {e.msg}") from e
        if not isinstance(data, dict) or not data:
            raise DataError(f"{path}: expected a non-empty JSON object of item -> token list")
        n = n_items if n_items is not None else len(data)
        max_depth = max(len(v) for v in data.values())
        if depth is not None and max_depth != depth:
            raise DataError(f"{path}: IDs have up to {max_depth} tokens but the config says {depth} levels")
        codes = np.full((n, max_depth), -1, dtype=np.int64)
        styles = set()
        for key, tokens in data.items():
            try:
                item = int(key)
            except ValueError:
                raise DataError(f"{path}: item key {key!r} is not an integer") from None
            if not 0 <= item < n:
                raise DataError(f"{path}: item {item} outside the catalogue's 0..{n - 1}")
            for pos, tok in enumerate(tokens):
                try:
                    level, code, style = parse_token(tok)
                except ValueError as e:
                    raise DataError(f"{path}: item {key}: {e}") from None
                if level != pos:
                    raise DataError(f"{path}: item {key}: token {tok!r} at position {pos} belongs to level {level}")
                codes[item, pos] = code
                styles.add(style)
        missing = np.flatnonzero(codes[:, 0] < 0)
        if len(missing):
            raise DataError(f"{path}: {len(missing)} catalogue items have no ID, e.g. item {int(missing[0])}")
        if len(styles) > 1:
            raise DataError(f"{path}: mixes GREAM <|a_1|> and LC-Rec <a_0> token styles")
        meta_path = path.with_name(path.name.removesuffix(".json") + ".meta.json")
        meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
        sizes = meta.pop("codebook_sizes", None) or [int(codes[:, lv].max()) + 1 for lv in range(max_depth)]
        meta.pop("style", None)
        try:
            index = cls(codes=codes, codebook_sizes=list(sizes), style=styles.pop(), meta=meta)
        except DataError as e:
            raise DataError(f"{path} (codebook sizes from {meta_path.name} if present): {e}") from None
        if unique and index.collisions():
            first: dict[tuple[int, ...], int] = {}
            for item, row in enumerate(map(tuple, codes.tolist())):
                if row in first:
                    raise DataError(
                        f"{path}: {index.collisions()} items share their ID with another item, e.g. items "
                        f"{first[row]} and {item} ({''.join(index.item_tokens(item))}); decoding needs one ID per "
                        "item: build the index with a collision mode (index build --collision rank)"
                    )
                first[row] = item
        return index


HANDOFF_INDEX_FILE = "index.json"  # the index a stage's hand-off folder was trained with (inference.bundle)


def check_handoff_index(index: SemanticIndex, backbone: str | Path, index_path: str | Path) -> None:
    """Refuse to continue a handed-off model with another index than the one it learned: its ID tokens
    would mean other items, and tokens it never saw would start from random rows."""
    recorded = Path(backbone) / HANDOFF_INDEX_FILE
    if not recorded.is_file():
        return
    learned = SemanticIndex.from_json(recorded)
    if learned.codes.shape != index.codes.shape or learned.style != index.style or (learned.codes != index.codes).any():
        differ = (
            f"{learned.n_items} items x {learned.depth} levels there, {index.n_items} x {index.depth} here"
            if learned.codes.shape != index.codes.shape
            else f"{int((learned.codes != index.codes).any(axis=1).sum())} items have other IDs"
        )
        raise DataError(
            f"{index_path} is not the index {backbone} was trained with ({recorded}: {differ}); give this stage "
            "the index of the stage it continues"
        )
