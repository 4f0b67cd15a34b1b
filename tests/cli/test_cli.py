"""`celery-fleet` against moto: each command's output, its JSON, and the errors an operator meets."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest
from botocore.exceptions import ClientError
from celery_fleet.contract import kept_messages as km
from celery_fleet_cli.aws import Insights
from celery_fleet_cli.main import build_parser, main

from tests.cli.conftest import OUTPUTS, Deployed, FakeContext

CHARGE_FAILURES = [
    {
        "fingerprint": "3f9a0c1d2e4b5a69",
        "task": "app.charge",
        "exc_type": "ConnectionError",
        "failures": "42",
        "first_seen": "2026-11-30 12:03:11.000",
        "last_seen": "2026-11-30 13:58:40.000",
        "example_task_id": "7d1c4e2a-0b61-4c1e-9a55-2f0c3e8d9b10",
        "example_message": "payments API unavailable",
    },
]


def test_status_shows_queues_workers_and_alarms_with_runbooks(deployed: Deployed) -> None:
    status, out, _ = deployed.run("status", "-s", "dev")

    assert status == 0
    lines = out.splitlines()
    assert "default    1,520          8          5m 12s" in lines
    assert "bulk           0          0               -" in lines
    assert any(line.split() == ["default", "0", "3"] for line in lines)
    assert "    runbook: docs/runbooks.md#oldest-task-late" in lines
    assert "SomeoneElses-Alarm" not in out


def test_status_json_is_the_same_data_for_scripts(deployed: Deployed) -> None:
    status, out, _ = deployed.run("status", "-s", "dev", "--json")

    data = json.loads(out)
    assert status == 0
    assert data["queues"][0] == {
        "queue": "default",
        "waiting": 1520.0,
        "in_flight": 8.0,
        "oldest_age_s": 312.0,
    }
    assert [alarm["runbook"] for alarm in data["alarms"]] == ["docs/runbooks.md#oldest-task-late"]


def test_a_missing_stage_names_the_deployed_ones(deployed: Deployed) -> None:
    status, out, err = deployed.run("status", "-s", "prdo")

    assert (status, out) == (1, "")
    assert "no stage 'prdo' in eu-west-1: stack CeleryFleet-prdo-Stateless does not exist" in err
    assert "Deployed stages here: dev." in err


class _Expired:
    def describe_stacks(self, **_: Any) -> None:
        error = {
            "Error": {
                "Code": "ExpiredTokenException",
                "Message": "The security token included in the request is expired",
            }
        }
        raise ClientError(error, "DescribeStacks")


def test_expired_credentials_say_what_to_do() -> None:
    err = io.StringIO()
    status = main(["status", "-s", "dev"], clients=lambda name: _Expired(), stdout=io.StringIO(), stderr=err)

    assert status == 1
    assert "They have probably expired: refresh them (`aws sso login`" in err.getvalue()


def test_a_query_that_does_not_finish_is_stopped_with_advice(deployed: Deployed) -> None:
    deployed.insights.running_polls = 1000

    status, _, err = deployed.run("failures", "-s", "dev", "--timeout", "0")

    assert status == 1
    assert (
        "did not finish within 0 s (1,234 records scanned so far) and was stopped. Narrow the window" in err
    )
    assert deployed.insights.stopped == ["0"]


def test_failures_lists_fingerprints_for_one_task(deployed: Deployed) -> None:
    deployed.insights.rules.append(("stats count(*)", CHARGE_FAILURES))

    status, out, _ = deployed.run("failures", "-s", "dev", "--since", "2h", "--task", "app.charge")

    (query,) = deployed.insights.queries
    assert status == 0
    assert query["logGroupNames"] == ["failed-tasks"]
    assert '| filter task = "app.charge"' in query["queryString"]
    assert query["endTime"] - query["startTime"] == 7200
    assert "42  3f9a0c1d2e4b5a69  app.charge  ConnectionError" in out


def test_a_name_that_could_change_the_query_is_refused(deployed: Deployed) -> None:
    status, _, err = deployed.run("failures", "-s", "dev", "--task", 'x" or task = "y')

    assert status == 1
    assert "cannot be used in a query" in err
    assert deployed.insights.queries == []


def test_show_prints_the_history_failure_record_and_traceback(deployed: Deployed) -> None:
    task_id = "7d1c4e2a-0b61-4c1e-9a55-2f0c3e8d9b10"
    deployed.insights.rules += [
        (
            'filter celery_fleet = "task_event"',
            [
                {
                    "@timestamp": "2026-11-30 13:58:39.000",
                    "event": "retried",
                    "task_id": task_id,
                    "task": "app.charge",
                    "queue": "default",
                    "retries": "0",
                    "exc_type": "ConnectionError",
                    "exc_message": "unavailable",
                },
                {
                    "@timestamp": "2026-11-30 13:58:40.000",
                    "event": "failed",
                    "task_id": task_id,
                    "task": "app.charge",
                    "queue": "default",
                    "retries": "1",
                    "exc_type": "ConnectionError",
                    "exc_message": "unavailable",
                },
                {
                    "@timestamp": "2026-11-30 14:10:02.000",
                    "event": "succeeded",
                    "task_id": "new-1",
                    "task": "app.charge",
                    "queue": "default",
                    "retries": "0",
                    "replay_of": task_id,
                },
            ],
        ),
        (
            "kept_message, args",
            [
                {
                    "@timestamp": "2026-11-30 13:58:40.000",
                    "event": "failed",
                    "task_id": task_id,
                    "exc_type": "ConnectionError",
                    "kept_message": km.message_key(task_id),
                    "traceback": 'Traceback (most recent call last):\n  File "app.py", line 3\n'
                    "ConnectionError: unavailable",
                },
            ],
        ),
        (
            'audit = "replay"',
            [
                {
                    "@timestamp": "2026-11-30 14:10:00.000",
                    "replay_id": "r-1",
                    "requested_by": "arn:aws:sts::123456789012:assumed-role/oncall/ana",
                    "selection": "fingerprint 3f9a",
                },
            ],
        ),
    ]

    status, out, _ = deployed.run("show", "-s", "dev", task_id)

    assert status == 0
    events = [line.split()[2] for line in out.splitlines() if line.startswith("2026-")]
    assert events == ["retried", "failed", "replayed", "succeeded"]
    assert f"(attempt new-1, replays {task_id})" in out
    assert "    ConnectionError: unavailable" in out
    assert f"  kept_message: {km.message_key(task_id)}" in out


def test_replay_dry_run_counts_then_replays_once(deployed: Deployed) -> None:
    keys = {task_id: deployed.keep(task_id) for task_id in ("f-1", "f-2")}
    deployed.keep("f-3", task="app.report", queue="bulk")
    rows = [
        {
            "@timestamp": f"2026-11-30 13:0{i}:00.000",
            "task_id": task_id,
            "kept_message": km.message_key(task_id),
        }
        for i, task_id in enumerate(["f-1", "f-2", "f-3"])
    ] + [{"task_id": "f-4", "kept_message": ""}]
    deployed.insights.rules.append(("fingerprint =", rows))
    broker = deployed.broker.client()

    dry = deployed.run("replay", "-s", "dev", "--fingerprint", "3f9a0c1d2e4b5a69", "--dry-run")
    first = deployed.run("replay", "-s", "dev", "--fingerprint", "3f9a0c1d2e4b5a69", "--rate", "100")
    again = deployed.run("replay", "-s", "dev", "--fingerprint", "3f9a0c1d2e4b5a69", "--json")

    assert dry[0] == first[0] == again[0] == 0
    assert "would replay 3 task(s) in stage 'dev' (dry run: nothing was sent)" in dry[1]
    table = [line.split() for line in dry[1].splitlines()]
    assert ["app.charge", "default", "2"] in table
    assert ["app.report", "bulk", "1"] in table
    assert "no kept message (keeping off, or past retention): 1: f-4" in dry[1]
    assert "replayed 3 task(s) in stage 'dev'" in first[1]
    assert (broker.llen("default"), broker.llen("bulk")) == (2, 1)
    assert json.loads(again[1])["count"] == 0
    assert sorted(json.loads(again[1])["already_replayed"]) == ["f-1", "f-2", "f-3"]
    audited = deployed.lambda_.events[1]
    assert audited["requested_by"].startswith("arn:aws:sts::")
    assert audited["selection"] == "fingerprint 3f9a0c1d2e4b5a69"
    assert sorted(c["kept_key"] for c in audited["candidates"]) == sorted(
        [*keys.values(), km.message_key("f-3")]
    )


def test_replay_needs_a_selection(deployed: Deployed) -> None:
    status, _, err = deployed.run("replay", "-s", "dev", "--dry-run")

    assert status == 1
    assert "choose what to replay" in err


@pytest.mark.parametrize("command", [[], ["status"], ["failures"], ["show"], ["replay"]])
def test_every_help_prints_and_exits_cleanly(command: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args([*command, "--help"])

    assert exited.value.code == 0
    assert "usage: celery-fleet" in capsys.readouterr().out


def test_replay_by_query_runs_the_query_as_given(deployed: Deployed) -> None:
    deployed.keep("q-1")
    query = 'filter exc_type = "ConnectionError" | fields task_id, kept_message'
    deployed.insights.rules.append(
        ('exc_type = "ConnectionError"', [{"task_id": "q-1", "kept_message": km.message_key("q-1")}])
    )

    status, out, _ = deployed.run("replay", "-s", "dev", "--query", query, "--dry-run")

    assert status == 0
    assert deployed.insights.queries[-1]["queryString"] == query
    assert "would replay 1 task(s)" in out
    assert deployed.lambda_.events[-1]["selection"] == f"query: {query}"


def test_a_query_without_the_kept_message_field_is_refused(deployed: Deployed) -> None:
    deployed.insights.rules.append(("stats", [{"task": "app.charge", "failures": "3"}]))

    status, _, err = deployed.run("replay", "-s", "dev", "--query", "stats count(*) as failures by task")

    assert status == 1
    assert "need the fields task_id and kept_message" in err
    assert deployed.lambda_.events == []


def test_a_long_query_shows_its_progress() -> None:
    now = [0.0]

    class Running:
        polls = 0

        def start_query(self, **_: Any) -> dict[str, str]:
            return {"queryId": "q"}

        def get_query_results(self, **_: Any) -> dict[str, Any]:
            self.polls += 1
            done = self.polls > 3
            return {
                "status": "Complete" if done else "Running",
                "results": [],
                "statistics": {"recordsScanned": 5e5},
            }

    progress = io.StringIO()
    insights = Insights(
        Running(),
        timeout_s=60,
        progress=progress,
        clock=lambda: now[0],
        sleep=lambda s: now.__setitem__(0, now[0] + s),
    )

    insights.run(log_groups=["g"], query="fields @message", start=0, end=1, what="failures")

    assert progress.getvalue() == "\rfailures: 2 s, 500,000 records scanned…\n"


def test_replay_without_a_kept_message_store_says_replay_is_off(deployed: Deployed) -> None:
    stack = deployed.clients["cloudformation"]
    outputs = {k: v for k, v in OUTPUTS.items() if not k.startswith("Replay")}
    stack.update_stack(
        StackName="CeleryFleet-dev-Stateless",
        TemplateBody=json.dumps(
            {
                "Resources": {"Topic": {"Type": "AWS::SNS::Topic"}},
                "Outputs": {k: {"Value": v} for k, v in outputs.items()},
            }
        ),
    )

    status, _, err = deployed.run("replay", "-s", "dev", "--task-id", "x", "--dry-run")

    assert status == 1
    assert "has no output ReplayFunctionName, needed for replay" in err
    assert "monitoring.keep_failed_messages = true" in err


def test_the_replay_function_answers_a_bad_request_with_an_error_and_sends_nothing(
    deployed: Deployed,
) -> None:
    key = deployed.keep("bad-1")
    event = {"candidates": [{"task_id": "bad-1", "kept_key": key}], "dry_run": False, "rate_per_s": -1}

    answer = deployed.lambda_.handler(event, FakeContext())

    assert answer == {"error": "invalid replay request: rate_per_s: Input should be greater than 0"}
    assert deployed.broker.client().llen("default") == 0


def test_the_replay_function_audits_who_what_and_how_many(
    deployed: Deployed, caplog: pytest.LogCaptureFixture
) -> None:
    key = deployed.keep("aud-1")
    event = {
        "candidates": [{"task_id": "aud-1", "kept_key": key}],
        "dry_run": False,
        "rate_per_s": 100,
        "requested_by": "arn:aws:sts::123456789012:assumed-role/oncall/ana",
        "selection": "task ids: aud-1",
    }

    deployed.lambda_.handler(event, FakeContext())

    (record,) = [r for r in caplog.records if getattr(r, "audit", None) == "replay"]
    audit = vars(record)
    assert {k: audit[k] for k in ("audit", "requested_by", "selection", "dry_run", "count")} == {
        "audit": "replay",
        "requested_by": "arn:aws:sts::123456789012:assumed-role/oncall/ana",
        "selection": "task ids: aud-1",
        "dry_run": False,
        "count": 1,
    }
    assert list(audit["replayed"]) == ["aud-1"]


def test_no_region_anywhere_is_said_plainly(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("AWS_REGION", "AWS_DEFAULT_REGION", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    err = io.StringIO()

    status = main(["status", "-s", "dev"], stdout=io.StringIO(), stderr=err)

    assert status == 1
    assert (
        "no AWS region while reaching AWS for stage 'dev': pass --region or set AWS_REGION" in err.getvalue()
    )


def test_replay_by_task_name_within_a_window(deployed: Deployed) -> None:
    deployed.insights.rules.append(("filter", []))

    status, out, _ = deployed.run(
        "replay",
        "-s",
        "dev",
        "--task",
        "app.charge",
        "--since",
        "2026-11-30T10:00",
        "--until",
        "3h",
        "--dry-run",
    )

    (query,) = deployed.insights.queries
    assert status == 0
    assert query["queryString"].startswith('filter task = "app.charge"\n')
    assert (query["startTime"], query["endTime"]) == (1796032800, 1796032800 + 3600)
    assert "would replay 0 task(s)" in out


def test_replay_by_task_ids_asks_for_exactly_those(deployed: Deployed) -> None:
    deployed.insights.rules.append(("filter", []))

    deployed.run("replay", "-s", "dev", "--task-id", "a-1", "--task-id", "b-2", "--dry-run")

    assert deployed.insights.queries[0]["queryString"].startswith('filter task_id in ["a-1", "b-2"]\n')
