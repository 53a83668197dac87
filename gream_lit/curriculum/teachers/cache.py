"""On-disk answer cache so that reruns cost nothing and interrupted runs resume where they stopped."""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from collections.abc import Sequence
from pathlib import Path

from gream_lit.curriculum.teachers.base import Messages, ResultCallback, Teacher
from gream_lit.data.catalog import DataError

log = logging.getLogger(__name__)


def cache_key(teacher_id: str, messages: Messages) -> str:
    """Stable key of one request: sha256 over the teacher id and the exact messages."""
    payload = json.dumps([teacher_id, messages], sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


class CachedTeacher(Teacher):
    """Wraps a teacher with an append-only jsonl cache ``{"key", "teacher", "response"}``.

    Each answer is appended and flushed the moment it arrives, so a crash or a failing request later in
    the batch loses nothing already answered. A truncated last line (killed mid-write) is skipped with
    a warning; a corrupt line elsewhere means the file is not ours and is an error.
    """

    def __init__(self, teacher: Teacher, path: str | Path) -> None:
        self.inner = teacher
        self.path = Path(path)
        self.hits = 0
        self.misses = 0
        self._lock = threading.Lock()
        self._store = self._load()

    @property
    def teacher_id(self) -> str:
        return self.inner.teacher_id

    def _load(self) -> dict[str, str]:
        store: dict[str, str] = {}
        if not self.path.exists():
            return store
        lines = self.path.read_text(encoding="utf-8").splitlines()
        for n, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                store[row["key"]] = row["response"]
            except (json.JSONDecodeError, KeyError, TypeError):
                if n == len(lines):
                    log.warning("%s: dropping truncated last line %d (interrupted write)", self.path, n)
                    self._drop_last_line()
                    continue
                raise DataError(f"{self.path}: line {n} is not a cache record: {line[:120]!r}") from None
        return store

    def _drop_last_line(self) -> None:
        data = self.path.read_bytes().rstrip(b"\n")
        with self.path.open("r+b") as f:
            f.truncate(data.rfind(b"\n") + 1)

    def __len__(self) -> int:
        return len(self._store)

    def _append(self, key: str, response: str) -> None:
        with self._lock:
            self._store[key] = response
            self.path.parent.mkdir(parents=True, exist_ok=True)
            needs_newline = self.path.exists() and self.path.stat().st_size > 0 and not self._ends_with_newline()
            with self.path.open("a", encoding="utf-8") as f:
                if needs_newline:
                    f.write("\n")
                f.write(json.dumps({"key": key, "teacher": self.teacher_id, "response": response}, ensure_ascii=False))
                f.write("\n")
                f.flush()

    def _ends_with_newline(self) -> bool:
        with self.path.open("rb") as f:
            f.seek(-1, 2)
            return f.read(1) == b"\n"

    def complete(self, messages: Messages) -> str:
        return self.complete_many([messages])[0]

    def complete_many(self, batch: Sequence[Messages], on_result: ResultCallback | None = None) -> list[str]:
        keys = [cache_key(self.teacher_id, m) for m in batch]
        out: list[str | None] = [self._store.get(k) for k in keys]
        todo = [i for i, text in enumerate(out) if text is None]
        self.hits += len(batch) - len(todo)
        self.misses += len(todo)
        if on_result is not None:
            for i, text in enumerate(out):
                if text is not None:
                    on_result(i, text)

        def store(j: int, text: str) -> None:
            i = todo[j]
            self._append(keys[i], text)
            out[i] = text
            if on_result is not None:
                on_result(i, text)

        if todo:
            answers = self.inner.complete_many([batch[i] for i in todo], on_result=store)
            for j, text in enumerate(answers):
                if out[todo[j]] is None:
                    store(j, text)
        return [str(text) for text in out]
