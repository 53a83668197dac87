"""Per-user test results: every test writes each user's ranked list and the target's rank.

Aggregate metrics cannot be compared with intervals or paired between models; the per-user file can
(``stats``, ``report --baseline``). Any module whose ``test_step`` returns ``{"user", "target",
"items"}`` (user and catalogue indices, ``items`` ``[B, K]`` best first) is covered; rows are keyed
by the catalogue's raw ids so files from different models join on the same users.
"""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L

from gream_lit.metrics import hit_rank

FILE_NAME = "test_per_user.jsonl"


class PerUserResults(L.Callback):
    """Writes ``test_per_user.jsonl`` (one JSON object per user: ``user``, ``target``, ``rank``
    0-based or -1, ``items``) for the first test set of every ``test`` run.

    Args:
        dirpath: folder of the file; ``None`` = the logger's folder (else the trainer's root dir).
    """

    def __init__(self, dirpath: str | Path | None = None) -> None:
        self.dirpath = None if dirpath is None else Path(dirpath)
        self.rows: list[dict] = []

    def on_test_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.rows = []

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        if dataloader_idx != 0 or not isinstance(outputs, dict) or outputs.get("items") is None:
            return
        user = outputs.get("user")
        if user is None or bool((user < 0).any()):
            return
        catalog = trainer.datamodule.load()
        items, target = outputs["items"].cpu(), outputs["target"].cpu()
        ranks = hit_rank(items, target).tolist()
        for u, t, r, row in zip(user.cpu().tolist(), target.tolist(), ranks, items.tolist()):
            self.rows.append(
                {
                    "user": catalog.user_ids[u],
                    "target": catalog.item_ids[t],
                    "rank": r,
                    "items": [catalog.item_ids[i] for i in row if i >= 0],
                }
            )

    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self.rows:
            return
        folder = self.dirpath or Path(trainer.log_dir or trainer.default_root_dir)
        folder.mkdir(parents=True, exist_ok=True)
        name = FILE_NAME if trainer.world_size == 1 else f"test_per_user.rank{trainer.global_rank}.jsonl"
        tmp = folder / f".{name}.tmp"
        with tmp.open("w") as f:
            for row in sorted(self.rows, key=lambda r: str(r["user"])):
                f.write(json.dumps(row) + "\n")
        tmp.replace(folder / name)


def read_per_user(path: str | Path) -> dict[str, int]:
    """``{user: 0-based rank of the target or -1}`` from one ``test_per_user*.jsonl`` file."""
    out = {}
    with Path(path).open() as f:
        for line_no, line in enumerate(f, 1):
            try:
                row = json.loads(line)
                out[str(row["user"])] = int(row["rank"])
            except (json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
                raise ValueError(f"{path}:{line_no}: not a per-user result row ({err})") from err
    return out
