"""The in-memory catalog every stage reads: users' chronological item lists and item text."""

from __future__ import annotations

from dataclasses import dataclass, field

TEXT_FIELDS = ("title", "description", "brand", "categories")


class DataError(ValueError):
    """Bad input data; the message names the file and the offending entry."""


@dataclass
class Catalog:
    """Users' chronological interactions over a dense item index.

    Items are numbered 0..n_items-1 (``item_ids[i]`` is the raw id of item ``i``); users likewise.
    ``sequences[u]`` is user ``u``'s item list, oldest first. ``items[i]`` holds text fields such as
    title, description, brand and categories (missing fields are empty strings).
    """

    name: str
    sequences: list[list[int]]
    items: list[dict[str, str]]
    item_ids: list[str]
    user_ids: list[str]
    skipped: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if len(self.items) != len(self.item_ids):
            raise DataError(f"{self.name}: {len(self.items)} item records but {len(self.item_ids)} item ids")
        if len(self.sequences) != len(self.user_ids):
            raise DataError(f"{self.name}: {len(self.sequences)} sequences but {len(self.user_ids)} user ids")
        if not self.sequences:
            raise DataError(f"{self.name}: no users")
        n = len(self.items)
        for u, seq in enumerate(self.sequences):
            for i in seq:
                if not 0 <= i < n:
                    raise DataError(f"{self.name}: user {self.user_ids[u]!r} has item index {i} outside 0..{n - 1}")

    @property
    def n_items(self) -> int:
        return len(self.items)

    @property
    def n_users(self) -> int:
        return len(self.sequences)

    @property
    def n_interactions(self) -> int:
        return sum(len(s) for s in self.sequences)

    def title(self, item: int) -> str:
        return self.items[item].get("title", "")

    def stats(self) -> dict[str, float]:
        """Users, items, interactions, mean sequence length and density, as papers tabulate them."""
        n_inter = self.n_interactions
        return {
            "users": self.n_users,
            "items": self.n_items,
            "interactions": n_inter,
            "mean_length": n_inter / self.n_users,
            "density": n_inter / (self.n_users * self.n_items),
        }
