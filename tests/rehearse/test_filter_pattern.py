"""The CloudWatch Logs JSON filter-pattern subset the rehearsal applies to worker logs."""

from __future__ import annotations

import pytest

from rehearse.filter_pattern import FilterPatternError, compile_pattern


def test_string_equality_selects_matching_json_lines() -> None:
    matches = compile_pattern('{ $.celery_fleet = "task_event" }')
    assert matches('{"celery_fleet": "task_event", "event": "succeeded"}')
    assert not matches('{"celery_fleet": "other"}')


def test_a_line_that_is_not_json_never_matches() -> None:
    matches = compile_pattern('{ $.celery_fleet = "task_event" }')
    assert not matches('celery_fleet = "task_event"')
    assert not matches('["task_event"]')


def test_a_missing_field_does_not_match_equality_nor_inequality() -> None:
    assert not compile_pattern('{ $.a = "x" }')('{"b": "x"}')
    assert not compile_pattern('{ $.a != "x" }')('{"b": "x"}')


def test_a_string_never_equals_a_number_of_the_same_digits() -> None:
    assert not compile_pattern('{ $.code = "200" }')('{"code": 200}')


def test_wildcards_match_prefixes_and_suffixes() -> None:
    matches = compile_pattern('{ $.task = "sample_app.*" }')
    assert matches('{"task": "sample_app.tasks.process_item"}')
    assert not matches('{"task": "other.tasks.x"}')


def test_nested_selectors_and_array_indexes() -> None:
    matches = compile_pattern('{ $.outer.inner[1] = "b" }')
    assert matches('{"outer": {"inner": ["a", "b"]}}')
    assert not matches('{"outer": {"inner": ["a"]}}')


def test_numeric_comparisons() -> None:
    matches = compile_pattern("{ $.runtime >= 2.5 }")
    assert matches('{"runtime": 3}')
    assert not matches('{"runtime": 1}')
    assert not matches('{"runtime": "3"}')


def test_and_binds_tighter_than_or_and_parentheses_group() -> None:
    either = compile_pattern('{ $.a = "1" || $.b = "2" && $.c = "3" }')
    assert either('{"a": "1"}')
    assert not either('{"b": "2"}')
    grouped = compile_pattern('{ ($.a = "1" || $.b = "2") && $.c = "3" }')
    assert not grouped('{"a": "1"}')
    assert grouped('{"b": "2", "c": "3"}')


def test_is_true_null_and_not_exists() -> None:
    assert compile_pattern("{ $.ok IS TRUE }")('{"ok": true}')
    assert not compile_pattern("{ $.ok IS TRUE }")('{"ok": 1}')
    assert compile_pattern("{ $.x IS NULL }")('{"x": null}')
    assert compile_pattern("{ $.x NOT EXISTS }")('{"y": 1}')
    assert not compile_pattern("{ $.x NOT EXISTS }")('{"x": 1}')


def test_an_empty_pattern_matches_every_line() -> None:
    assert compile_pattern("")("anything at all")


def test_unsupported_patterns_are_refused_not_matched_silently() -> None:
    with pytest.raises(FilterPatternError, match="only JSON filter patterns"):
        compile_pattern("ERROR -DEBUG")
    with pytest.raises(FilterPatternError):
        compile_pattern('{ $.a = "x" && }')
