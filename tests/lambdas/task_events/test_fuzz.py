"""Seeded fuzzing of the handler: whatever arrives, it never raises, counts every valid line exactly
once, records every valid failure, and prints only strict JSON."""

from __future__ import annotations

import base64
import gzip
import json
import random
from collections.abc import Callable
from types import ModuleType
from typing import Any

import pytest
from celery_fleet.contract import task_events as te
from celery_fleet.contract import task_metrics as tm

from tests.lambdas.task_events.support import (
    KEY,
    FakeLambdaContext,
    event_line,
    failure_records,
    raw_event,
    sign,
    subscription_event,
    task_metrics,
)

SEED = 20_260_101
ROUNDS = 25
OUTCOMES = ["succeeded", "failed", "retried", "time_limit_exceeded", "revoked", "unknown_task"]
HOSTILE_TEXT = ["é" * 300, "😀" * 200, "\x00\x1b[2J\r\n", "\u2028\u2029", "名前" * 150, '"},{"x":"']


def _strict_json(text: str) -> Any:
    def refuse(constant: str) -> None:
        raise ValueError(f"not JSON: {constant}")

    return json.loads(text, parse_constant=refuse)


def _record(line: str) -> dict[str, Any]:
    record: dict[str, Any] = json.loads(line[: line.rindex(',"mac"')] + "}")
    return record


def _resign(record: dict[str, Any], *, ensure_ascii: bool = True) -> str:
    body = json.dumps(record, separators=(",", ":"), ensure_ascii=ensure_ascii)
    return sign(body) if body.isascii() else body[:-1] + ',"mac":"' + "0" * 64 + '"}'


# Hostile lines signed with the stage's key (as a buggy or older emitter would write them): the MAC
# holds, the contract does not, so each is malformed.
def _non_finite(rng: random.Random, line: str) -> str:
    body = _record(line)
    body[rng.choice([te.F_RUNTIME, te.F_QUEUE_WAIT])] = 0.5
    text = json.dumps(body, separators=(",", ":")).replace(
        "0.5", rng.choice(["1e400", "Infinity", "NaN", "-1e400"])
    )
    return sign(text)


def _huge_number(rng: random.Random, line: str) -> str:
    body = _record(line)
    key, value = rng.choice(
        [(te.F_RUNTIME, 1e300), (te.F_QUEUE_WAIT, 10**30), (te.F_RETRIES, 10**40), (te.F_RUNTIME, -0.5)]
    )
    body[key] = value
    return _resign(body)


def _huge_field_in_bytes(rng: random.Random, line: str) -> str:
    body = _record(line)
    body[rng.choice([te.F_TASK, te.F_TASK_ID, te.F_QUEUE, te.F_WORKER])] = "😀" * 120
    return _resign(body)


def _wrong_type(rng: random.Random, line: str) -> str:
    body = _record(line)
    key, value = rng.choice(
        [
            (te.F_RETRIES, "many"),
            (te.F_RETRIES, True),
            (te.F_RUNTIME, "slow"),
            (te.F_EVENT, "exploded"),
            (te.F_TASK, ["a", "list"]),
            (te.F_TASK_ID, 42),
            (te.F_VERSION, 1),
            (te.MARKER_KEY, "something_else"),
            (te.F_TIMESTAMP, "yesterday"),
            (te.F_TIMESTAMP, "1999-01-01T00:00:00.000+00:00"),
        ]
    )
    body[key] = value
    return _resign(body)


def _missing_field(rng: random.Random, line: str) -> str:
    body = _record(line)
    del body[rng.choice([te.F_EVENT, te.F_TASK_ID, te.F_TASK, te.F_TIMESTAMP, te.F_RETRIES, te.F_QUEUE])]
    return _resign(body)


SIGNED_MALFORMED: list[Callable[[random.Random, str], str]] = [
    _non_finite,
    _huge_number,
    _huge_field_in_bytes,
    _wrong_type,
    _missing_field,
]


# Lines without a valid MAC: what a task can print, log or raise. Each is forged, however it looks.
def _unsigned(rng: random.Random, line: str) -> str:
    return json.dumps(_record(line), separators=(",", ":"))


def _guessed_mac(rng: random.Random, line: str) -> str:
    return line[: -(te.MAC_HEX_DIGITS + 2)] + f"{rng.getrandbits(256):064x}" + '"}'


def _edited_after_signing(rng: random.Random, line: str) -> str:
    return (
        line.replace('"succeeded"', '"failed"')
        .replace('"app.work"', '"app.other"', 1)
        .replace('"retries":0', '"retries":1')
    )


def _other_key(rng: random.Random, line: str) -> str:
    return sign(json.dumps(_record(line), separators=(",", ":")), key=b"not-the-stage-key")


def _raw_non_ascii(rng: random.Random, line: str) -> str:
    return _resign({**_record(line), te.F_TASK: rng.choice(HOSTILE_TEXT[:2])}, ensure_ascii=False)


def _garbage(rng: random.Random, line: str) -> str:
    return rng.choice(
        [
            "[]",
            "{}",
            line[: rng.randrange(1, len(line) - 1)],
            "[2026-01-01 00:00:00,000: INFO] " + line,
            bytes(rng.randrange(256) for _ in range(rng.randrange(1, 200))).decode("latin-1"),
            "x" * (te.MAX_LINE_BYTES + rng.randrange(1, 10_000)),
        ]
    )


FORGED: list[Callable[[random.Random, str], str]] = [
    _unsigned,
    _guessed_mac,
    _edited_after_signing,
    _other_key,
    _raw_non_ascii,
    _garbage,
]


def _valid_line(rng: random.Random, round_number: int, i: int) -> str:
    event = rng.choice(OUTCOMES)
    fields: dict[str, Any] = {}
    if rng.random() < 0.3:
        # Hostile but within bounds: escaped in the line, cut to its byte cap, still a real outcome.
        # 16 characters take at most 16 x 12 escaped bytes: within every string field's cap.
        fields[te.F_EXC_MESSAGE if event in ("failed", "retried") else te.F_WORKER] = rng.choice(
            HOSTILE_TEXT
        )[:16]
    if rng.random() < 0.1:
        fields[te.F_QUEUE] = rng.choice(["unconfigured", "q\nnew", None])
    return event_line(event, task_id=f"{round_number}-{i}", **fields)


@pytest.mark.parametrize("round_number", range(ROUNDS))
def test_every_valid_line_counts_once_and_nothing_else_does(
    round_number: int, handler_module: ModuleType, logs: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    rng = random.Random(SEED + round_number)
    lines: list[str] = []
    valid: list[dict[str, Any]] = []
    expected = {"malformed": 0, "forged": 0, "duplicates": 0}
    for i in range(rng.randrange(1, 80)):
        line = _valid_line(rng, round_number, i)
        roll = rng.random()
        if roll < 0.2:
            lines.append(rng.choice(SIGNED_MALFORMED)(rng, line))
            expected["malformed"] += 1
        elif roll < 0.45:
            lines.append(rng.choice(FORGED)(rng, line))
            expected["forged"] += 1
        else:
            lines.append(line)
            valid.append(_record(line))
            if rng.random() < 0.15:
                lines.append(line)
                expected["duplicates"] += 1
    rng.shuffle(lines)

    result = handler_module.handler(subscription_event(lines), FakeLambdaContext())

    printed = [_strict_json(text) for text in capsys.readouterr().out.splitlines() if text.startswith("{")]
    documents = [document for document in printed if "_aws" in document]
    counted = sum(
        sum(entry.counts[name] for name in tm.COUNT_BY_EVENT.values())
        for entry in task_metrics(documents).values()
    )
    assert {name: result[name] for name in ("events", *expected)} == {"events": len(valid), **expected}
    assert counted == len(valid)
    recorded = sorted((r[te.F_TASK_ID], r[te.F_EVENT]) for r in failure_records(logs))
    assert recorded == sorted(
        (v[te.F_TASK_ID], v[te.F_EVENT]) for v in valid if v[te.F_EVENT] in te.FAILURE_EVENTS
    )
    for document in documents:
        assert all(
            value.isascii() and value.isprintable()
            for key, value in document.items()
            if key in ("TaskName", "Queue")
        )


BAD_PAYLOADS: list[Callable[[random.Random], dict[str, object]]] = [
    lambda rng: {"awslogs": {"data": "".join(rng.choice("!@#$%^&*()") for _ in range(40))}},
    lambda rng: raw_event(bytes(rng.randrange(256) for _ in range(300))),
    lambda rng: raw_event(json.dumps({"messageType": "DATA_MESSAGE"}).encode()),
    lambda rng: raw_event(gzip.compress(b"{not json")),
    lambda rng: raw_event(gzip.compress(b"[1, 2, 3]")),
    lambda rng: raw_event(
        gzip.compress(json.dumps({"messageType": "DATA_MESSAGE", "logEvents": "x"}).encode())
    ),
    lambda rng: {"awslogs": {}},
    lambda rng: {"Records": []},
    lambda rng: {"awslogs": {"data": base64.b64encode(gzip.compress(b"")).decode()}},
    lambda rng: raw_event(gzip.compress(b'{"messageType": "DATA_MESSAGE", "logEvents": [1e400]}')),
]


@pytest.mark.parametrize("make_payload", BAD_PAYLOADS)
def test_an_undecodable_payload_is_one_malformed_event(
    make_payload: Callable[[random.Random], dict[str, object]], handler_module: ModuleType
) -> None:
    result = handler_module.handler(make_payload(random.Random(SEED)), FakeLambdaContext())

    assert (result["events"], result["malformed"]) == (0, 1)


def test_the_fuzzed_lines_are_signed_with_the_handlers_key() -> None:
    # The signed-but-malformed mutators only test validation if the MAC itself is right.
    assert te.verify(event_line(task_id="x"), [KEY]) is not None
