"""Any OpenAI-compatible chat-completions endpoint (OpenAI, vLLM, sglang, llama.cpp server, ...).

Plain ``urllib`` (no client package): POST ``{base_url}/chat/completions``. Timeouts, 429/5xx answers
and malformed JSON are retried with exponential back-off; other 4xx are the caller's mistake and fail
at once. Requests run in a bounded thread pool; every request that succeeds is reported through
``on_result`` before the first failure is raised, so no finished answer is lost.
"""

from __future__ import annotations

import json
import logging
import os
import re
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from typing import Any

from gream_lit.curriculum.teachers.base import (
    Messages,
    ResultCallback,
    Teacher,
    TeacherError,
    describe_request,
    validate_messages,
)

log = logging.getLogger(__name__)

SHOWN_BODY_CHARS = 200  # of a server's error body: enough for its message, not a page of echoed request
_SECRET_PATTERNS = (
    re.compile(r"(Bearer\s+)[^\s\"',;]+", re.IGNORECASE),
    re.compile(
        r"((?:api[_-]?key|authorization|x-api-key)[\"']?\s*[:=]\s*[\"']?)(?!Bearer\b)[^\s\"',;}]+", re.IGNORECASE
    ),
)


def redact(text: str, secrets: Sequence[str] = (), limit: int = SHOWN_BODY_CHARS) -> str:
    """``text`` fit to print: each secret value, Bearer token and ``api_key: …`` value as ``***``, then cut
    to ``limit`` characters (a server that echoes the request's headers must not put the key on stderr)."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    for pattern in _SECRET_PATTERNS:
        text = pattern.sub(r"\1***", text)
    return text if len(text) <= limit else text[:limit] + f"... ({len(text) - limit} more characters)"


class _Retryable(Exception):
    """A failure worth another try (timeout, overload, server error, garbled body)."""


class OpenAITeacher(Teacher):
    """Chat completions over HTTP.

    ``api_key_env`` names the environment variable holding the key (never the key itself, so configs
    can be shared); leave it ``None`` for local servers without auth. ``extra_body`` is merged into
    every request (e.g. ``{"reasoning_effort": "low"}`` as the official GREAM scripts send).

    Until the endpoint has sent any HTTP response, a request that times out or cannot connect gets
    two tries of ``first_contact_s / 2`` seconds, not ``max_retries`` of ``timeout_s``: a dead or hung
    server is reported in under a minute instead of after hours of retries over every request.
    """

    def __init__(
        self,
        model: str,
        base_url: str = "https://api.openai.com/v1",
        api_key_env: str | None = "OPENAI_API_KEY",
        max_tokens: int = 512,
        temperature: float | None = None,
        extra_body: dict[str, Any] | None = None,
        timeout_s: float = 120.0,
        max_retries: int = 5,
        backoff_s: float = 1.0,
        max_workers: int = 8,
        first_contact_s: float = 50.0,
    ) -> None:
        if max_retries < 0 or max_workers < 1:
            raise ValueError(f"max_retries must be >= 0 and max_workers >= 1, got {max_retries}, {max_workers}")
        self.model = model
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.api_key_env = api_key_env
        self.max_tokens = max_tokens
        self.temperature = temperature
        self.extra_body = dict(extra_body or {})
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self.max_workers = max_workers
        self.first_contact_s = first_contact_s
        self._reached = False  # set by the first HTTP response of any status

    @property
    def teacher_id(self) -> str:
        settings = json.dumps(
            {"max_tokens": self.max_tokens, "temperature": self.temperature, **self.extra_body}, sort_keys=True
        )
        return f"openai:{self.model}@{self.url}:{settings}"

    def _headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json"}
        if self.api_key_env:
            key = os.environ.get(self.api_key_env)
            if not key:
                raise TeacherError(f"environment variable {self.api_key_env} (api_key_env) is not set")
            headers["Authorization"] = f"Bearer {key}"
        return headers

    def _secrets(self) -> list[str]:
        """The values that must never be printed: the API key."""
        return [os.environ.get(self.api_key_env, "")] if self.api_key_env else []

    def _body(self, messages: Messages) -> bytes:
        body: dict[str, Any] = {"model": self.model, "messages": messages, "max_tokens": self.max_tokens}
        if self.temperature is not None:
            body["temperature"] = self.temperature
        body.update(self.extra_body)
        return json.dumps(body).encode("utf-8")

    def _post_once(self, messages: Messages, timeout: float) -> str:
        req = urllib.request.Request(self.url, data=self._body(messages), headers=self._headers(), method="POST")
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                self._reached = True
                raw = resp.read()
        except urllib.error.HTTPError as e:
            self._reached = True
            detail = redact(e.read(1 << 16).decode("utf-8", "replace"), self._secrets())
            if e.code == 429 or e.code >= 500:
                raise _Retryable(f"HTTP {e.code}: {detail}") from None
            raise TeacherError(f"HTTP {e.code} from {self.url}: {detail}") from None
        except TimeoutError as e:
            raise _Retryable(f"timeout after {timeout:g}s") from e
        except urllib.error.URLError as e:
            if isinstance(e.reason, (socket.timeout, TimeoutError)):
                raise _Retryable(f"timeout after {timeout:g}s") from e
            raise _Retryable(f"connection error: {e.reason}") from e
        try:
            content = json.loads(raw)["choices"][0]["message"]["content"]
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, IndexError, TypeError):
            body = redact(raw[: 1 << 16].decode("utf-8", "replace"), self._secrets())
            raise _Retryable(f"malformed response body: {body!r}") from None
        if not isinstance(content, str):
            raise _Retryable(f"response content is {type(content).__name__}, expected a string")
        return content

    def complete(self, messages: Messages) -> str:
        validate_messages(messages)
        last = ""
        for attempt in range(self.max_retries + 1):
            reached = self._reached
            timeout = self.timeout_s if reached else min(self.timeout_s, self.first_contact_s / 2)
            try:
                return self._post_once(messages, timeout)
            except _Retryable as e:
                last = str(e)
                if not reached and not self._reached and attempt >= 1:
                    raise TeacherError(
                        f"{describe_request(messages)}: {self.url} has not answered any request ({last}, "
                        f"{attempt + 1} tries); is the server running and base_url right? (first_contact_s)"
                    ) from None
                if attempt < self.max_retries:
                    delay = self.backoff_s * 2**attempt
                    log.warning("%s: %s; retry %d/%d in %.1fs", self.url, last, attempt + 1, self.max_retries, delay)
                    time.sleep(delay)
            except TeacherError as e:
                raise TeacherError(f"{describe_request(messages)}: {e}") from None
        raise TeacherError(
            f"{describe_request(messages)} to {self.url} failed after {self.max_retries + 1} attempts: {last}"
        )

    def complete_many(self, batch: Sequence[Messages], on_result: ResultCallback | None = None) -> list[str]:
        out: list[str] = [""] * len(batch)
        errors: list[tuple[int, TeacherError]] = []
        with ThreadPoolExecutor(max_workers=min(self.max_workers, max(1, len(batch)))) as pool:
            futures = {pool.submit(self.complete, m): i for i, m in enumerate(batch)}
            for fut in as_completed(futures):
                i = futures[fut]
                try:
                    out[i] = fut.result()
                except TeacherError as e:
                    errors.append((i, e))
                    continue
                if on_result is not None:
                    on_result(i, out[i])
        if errors:
            errors.sort(key=lambda x: x[0])
            first_i, first = errors[0]
            raise TeacherError(
                f"{len(errors)} of {len(batch)} requests failed ({len(batch) - len(errors)} answered and kept); "
                f"first, batch position {first_i}: {first}"
            )
        return out
