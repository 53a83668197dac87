"""Rewards and advantages by name: a built-in registry, or any importable ``package.module.function``,
so a new reward or advantage is a function in the user's own module and one config value."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import TypeVar

F = TypeVar("F", bound=Callable)


def lookup(registry: Mapping[str, F], name: str, kind: str) -> F:
    """``registry[name]``, else the function a dotted ``name`` imports; a clear error otherwise."""
    if name in registry:
        return registry[name]
    module, _, attr = name.rpartition(".")
    if module:
        try:
            fn = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as err:
            raise ValueError(f"{kind} {name!r}: cannot import it ({err})") from err
        if callable(fn):
            return fn
    raise ValueError(
        f"unknown {kind} {name!r}; expected one of {sorted(registry)} or an importable 'package.module.function'"
    )
