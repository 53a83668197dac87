"""glibc mmap threshold: set from the environment, left alone when switched off or tuned by the user."""

import platform

import pytest

from gream_lit.experiment import allocator
from gream_lit.experiment.allocator import ENV, apply_configured_threshold, fix_mmap_threshold

glibc = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")


@glibc
def test_sets_the_threshold_by_default_and_from_the_environment(monkeypatch):
    monkeypatch.delenv("MALLOC_MMAP_THRESHOLD_", raising=False)
    monkeypatch.delenv(ENV, raising=False)
    assert fix_mmap_threshold()
    monkeypatch.setenv(ENV, str(1 << 20))
    assert fix_mmap_threshold()


def test_zero_or_a_user_tuned_glibc_leaves_it_alone(monkeypatch):
    monkeypatch.setenv(ENV, "0")
    assert not fix_mmap_threshold()
    monkeypatch.setenv(ENV, str(1 << 20))
    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", "131072")
    assert not fix_mmap_threshold()


def test_a_malformed_value_names_the_variable(monkeypatch):
    monkeypatch.setenv(ENV, "4MB")
    with pytest.raises(ValueError, match=ENV):
        fix_mmap_threshold()


def test_a_config_files_threshold_applies_unless_the_variable_is_set(monkeypatch):
    calls = []
    monkeypatch.setattr(allocator, "fix_mmap_threshold", lambda threshold=None: calls.append(threshold) or True)
    monkeypatch.delenv(ENV, raising=False)
    assert apply_configured_threshold(262144) and calls == [262144]
    assert not apply_configured_threshold(None)
    monkeypatch.setenv(ENV, str(4 << 20))
    assert not apply_configured_threshold(262144) and calls == [262144]
