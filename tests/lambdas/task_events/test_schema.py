"""One schema: the Lambda's model, its failure records and the docs all come from the contract."""

from __future__ import annotations

import dataclasses
import json
import typing

import pytest
from celery_fleet.contract import task_events as te
from pydantic import TypeAdapter, ValidationError
from task_events import models
from task_events.logic import failure_record

from tests.lambdas.task_events.support import TS, event_line
from tools.task_event_reference import DOC, render_doc


def _model_keys(line_type: typing.Any) -> tuple[set[str], set[str]]:
    hints = typing.get_type_hints(line_type, include_extras=True)
    return set(hints), set(line_type.__required_keys__)


def test_the_lambda_reads_exactly_the_contracts_fields() -> None:
    keys, required = _model_keys(models.TaskEventLine)

    assert keys == {spec.key for spec in te.FIELDS}
    assert required == {spec.key for spec in te.FIELDS if spec.presence is te.Presence.ALWAYS}


def test_a_field_added_to_the_contract_is_read_bounded_and_recorded(monkeypatch: pytest.MonkeyPatch) -> None:
    added = te.FieldSpec("shard", str, te.Presence.FAILURE, "a new field", max_bytes=8)
    monkeypatch.setattr(te, "FIELDS", (*te.FIELDS, added))
    line_type = models.line_type()
    adapter: TypeAdapter[dict[str, typing.Any]] = TypeAdapter(line_type)
    body = json.loads(event_line("failed", task_id="a", key=None))

    assert "shard" in _model_keys(line_type)[0]
    assert adapter.validate_python({**body, "shard": "s-1"})["shard"] == "s-1"
    with pytest.raises(ValidationError, match="shard"):
        adapter.validate_python({**body, "shard": "é" * 5})


def test_a_failure_record_carries_every_field_of_the_line() -> None:
    line = models.LINE.validate_json(json.dumps(json.loads(event_line("failed", task_id="a", key=None))))

    record = failure_record(line, log_group="g", log_stream="s")

    envelope = {te.MARKER_KEY, te.F_VERSION}
    assert set(record) == {"key", "fingerprint", "source"} | {spec.key for spec in te.FIELDS} - envelope
    assert record["key"] == f"a:failed:{TS}"


def test_every_contract_field_is_bounded() -> None:
    for spec in te.FIELDS:
        if spec.constant is not None or spec.type is te.EventType:
            continue
        bounded = spec.max_bytes is not None if spec.type is str else None not in (spec.minimum, spec.maximum)
        assert bounded, spec.key


def test_an_optional_field_is_recorded_when_the_line_has_it() -> None:
    optional = [spec for spec in te.FIELDS if spec.optional and spec.type is str]
    if not optional:
        pytest.skip("the contract has no optional field")
    spec = optional[0]
    body = json.loads(event_line("failed", task_id="a", key=None))
    line = models.LINE.validate_python({**body, spec.key: "x"})

    assert failure_record(line, log_group="g", log_stream="s")[spec.key] == "x"


def test_a_field_spec_has_no_field_the_tools_ignore() -> None:
    # The generator and the model read these attributes; a new one must be taught to both.
    assert [f.name for f in dataclasses.fields(te.FieldSpec)] == [
        "key", "type", "presence", "meaning", "nullable", "max_bytes", "minimum", "maximum", "keep_end",
        "constant", "optional",
    ]  # fmt: skip


def test_the_fingerprint_ignores_line_numbers_and_names_the_way_of_failing() -> None:
    first = te.fingerprint("app.fetch", "ConnectionError", "app/tasks.py:fetch")

    assert first == te.fingerprint("app.fetch", "ConnectionError", "app/tasks.py:fetch")
    assert len({first, te.fingerprint("app.fetch", "TimeoutError", "app/tasks.py:fetch"),
                te.fingerprint("app.fetch", "ConnectionError", "app/http.py:get"),
                te.fingerprint("app.store", "ConnectionError", "app/tasks.py:fetch")}) == 4  # fmt: skip


def test_the_docs_field_table_is_generated_from_the_contract() -> None:
    doc = DOC.read_text(encoding="utf-8")
    assert render_doc(doc) == doc, "run: .venv/bin/python -m tools.task_event_reference"


def test_lines_validated_together_are_judged_one_by_one() -> None:
    good = json.dumps(json.loads(event_line(task_id="a", key=None)), separators=(",", ":"))
    bad = good.replace('"retries":0', '"retries":"0"')
    escaped = json.dumps(json.loads(event_line("failed", task_id="b", key=None)), separators=(",", ":"))
    # Not a line on its own, but one with its neighbour if they were simply joined.
    half = good[: good.index(',"task"')] + ',"x":"}'

    results = models.validate_lines([good, bad, escaped, half, good])

    assert [type(r).__name__ for r in results] == [
        "dict",
        "ValidationError",
        "dict",
        "ValidationError",
        "dict",
    ]
