"""Capped texts keep their head and tail and say how much was cut."""

from __future__ import annotations

from shared.textcap import MAX_ERROR_CHARS, cap_error, cap_text


def test_a_short_text_is_kept_whole():
    assert cap_text("boom", 10) == "boom"
    assert cap_error(None) is None


def test_a_20_mb_error_keeps_head_and_tail_within_the_limit():
    text = "RuntimeError: start" + "x" * (20 * 1024 * 1024) + "the end"
    capped = cap_error(text)
    assert len(capped) <= MAX_ERROR_CHARS
    assert capped.startswith("RuntimeError: start") and capped.endswith("the end")
    assert " … [truncated 19.9 MB] … " in capped


def test_the_marker_counts_utf8_bytes_cut():
    assert cap_text("é" * 100, 50) == "é" * 5 + " … [truncated 180 B] … " + "é" * 5
