"""The teacher interface: a chat model that answers lists of chat messages.

Teachers write chain-of-thought and user side information (docs/gream_spec.md §3, §5.2). Every implementation answers
one request with ``complete`` and many with ``complete_many``; ``on_result`` is called as each answer
arrives so a caller (``CachedTeacher``) can persist finished work before a later request fails.
"""

from __future__ import annotations

import hashlib
import json
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence

Message = dict[str, str]
Messages = list[Message]
ResultCallback = Callable[[int, str], None]


class TeacherError(RuntimeError):
    """A teacher request that could not be answered; the message names the request."""


def describe_request(messages: Messages, limit: int = 80) -> str:
    """Short human-readable identity of a request for error messages: hash + start of the user turn."""
    user = next((m.get("content", "") for m in reversed(messages) if m.get("role") == "user"), "")
    digest = hashlib.sha256(json.dumps(messages, sort_keys=True).encode()).hexdigest()[:10]
    snippet = " ".join(user.split())[:limit]
    return f"request {digest} ({snippet!r})"


def validate_messages(messages: Messages) -> None:
    if not messages or not all(isinstance(m, dict) and "role" in m and "content" in m for m in messages):
        raise TeacherError(f"messages must be a non-empty list of {{role, content}} dicts, got {messages!r:.200}")


class Teacher(ABC):
    """A chat model answering requests. ``teacher_id`` must change whenever answers could change
    (model, decoding settings), because caches are keyed by it."""

    @property
    @abstractmethod
    def teacher_id(self) -> str: ...

    @abstractmethod
    def complete(self, messages: Messages) -> str:
        """The assistant's answer to one chat."""

    def complete_many(self, batch: Sequence[Messages], on_result: ResultCallback | None = None) -> list[str]:
        """Answers in request order. Default: one by one; subclasses batch or parallelise."""
        out = []
        for i, messages in enumerate(batch):
            text = self.complete(messages)
            if on_result is not None:
                on_result(i, text)
            out.append(text)
        return out
