"""Seeded fuzzing of the handler: whatever arrives, it never raises and still counts the good lines."""

from __future__ import annotations

import base64
import gzip
import json
import random
from collections.abc import Callable
from types import ModuleType

import pytest
from celery_fleet.contract import task_events as te
from celery_fleet.contract import task_metrics as tm
from task_events.models import MAX_ACCEPTED_LINE_CHARS

from tests.lambdas.task_events.support import (
    FakeLambdaContext,
    emf_documents,
    event_line,
    raw_event,
    subscription_event,
    task_metrics,
)

SEED = 20_260_101
ROUNDS = 25


def _cut_json(rng: random.Random, line: str) -> str:
    return line[: rng.randrange(1, len(line) - 1)]


def _bad_version(rng: random.Random, line: str) -> str:
    return line.replace(f'"{te.F_VERSION}": 1', f'"{te.F_VERSION}": {rng.choice([0, 2, 99, -1])}')


def _drop_required_field(rng: random.Random, line: str) -> str:
    record = json.loads(line)
    del record[rng.choice([te.MARKER_KEY, te.F_EVENT, te.F_TASK_ID, te.F_TASK, te.F_TIMESTAMP, te.F_RETRIES])]
    return json.dumps(record)


def _wrong_type(rng: random.Random, line: str) -> str:
    record = json.loads(line)
    key, value = rng.choice(
        [
            (te.F_RETRIES, "many"),
            (te.F_RETRIES, -3),
            (te.F_RUNTIME, "slow"),
            (te.F_QUEUE_WAIT, -1.0),
            (te.F_EVENT, "exploded"),
            (te.F_TASK, ["a", "list"]),
            (te.MARKER_KEY, "something_else"),
        ]
    )
    record[key] = value
    return json.dumps(record)


def _not_an_object(rng: random.Random, line: str) -> str:
    return rng.choice(["[]", "null", "42", '"a string"', "true", "{}"])


def _random_bytes(rng: random.Random, line: str) -> str:
    return bytes(rng.randrange(256) for _ in range(rng.randrange(1, 200))).decode("latin-1")


def _huge(rng: random.Random, line: str) -> str:
    record = json.loads(line)
    record[te.F_TASK] = "x" * (MAX_ACCEPTED_LINE_CHARS + rng.randrange(1, 1000))
    return json.dumps(record)


def _garbage_prefix(rng: random.Random, line: str) -> str:
    return rng.choice(["[2026-01-01 00:00:00,000: INFO] ", "\x00", "} ", "Traceback: "]) + line


MUTATORS: list[Callable[[random.Random, str], str]] = [
    _cut_json,
    _bad_version,
    _drop_required_field,
    _wrong_type,
    _not_an_object,
    _random_bytes,
    _huge,
    _garbage_prefix,
]

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
]


@pytest.mark.parametrize("round_number", range(ROUNDS))
def test_bad_lines_are_counted_and_good_lines_in_the_same_batch_still_count(
    round_number: int, handler_module: ModuleType, capsys: pytest.CaptureFixture[str]
) -> None:
    rng = random.Random(SEED + round_number)
    good = bad = 0
    lines = []
    for i in range(rng.randrange(1, 60)):
        line = event_line(rng.choice(["succeeded", "failed", "retried"]), task_id=f"{round_number}-{i}")
        if rng.random() < 0.4:
            lines.append(rng.choice(MUTATORS)(rng, line))
            bad += 1
        else:
            lines.append(line)
            good += 1

    result = handler_module.handler(subscription_event(lines), FakeLambdaContext())

    counts = task_metrics(emf_documents(capsys.readouterr().out)).get(("app.work", "default"))
    counted = sum(counts.counts[name] for name in (tm.SUCCEEDED, tm.FAILED, tm.RETRIED)) if counts else 0
    assert (result["events"], result["malformed"], counted) == (good, bad, good)


@pytest.mark.parametrize("make_payload", BAD_PAYLOADS)
def test_an_undecodable_payload_is_one_malformed_event(
    make_payload: Callable[[random.Random], dict[str, object]], handler_module: ModuleType
) -> None:
    result = handler_module.handler(make_payload(random.Random(SEED)), FakeLambdaContext())

    assert (result["events"], result["malformed"]) == (0, 1)
