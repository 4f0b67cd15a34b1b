"""What each subcommand does: gather from AWS into plain data, then render it for a person.

Each `*_data` function returns JSON-ready data (`--json` prints it as is); each `render_*` turns
that data into the text a person reads by default.
"""

from __future__ import annotations

import json
import re
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, TextIO

from celery_fleet.contract import queue_metrics as qm

from celery_fleet_cli.aws import CliError, Insights, Stage, call

# What an id, a task name or a fingerprint may contain to be put into a query: Celery's names and
# uuids fit; a quote or a backslash could change the query.
_SAFE = re.compile(r"[\w.:@+\-]{1,200}")
_DURATION = re.compile(r"(\d+)\s*([smhd])")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
# Candidates sent to the replay Lambda per invocation (its MAX_CANDIDATES).
REPLAY_BATCH = 1000
RUNBOOK = re.compile(r"Runbook: (\S+)")


def safe_value(value: str, what: str) -> str:
    if not _SAFE.fullmatch(value):
        raise CliError(
            f"{what} {value!r} cannot be used in a query: letters, digits and . _ : @ + - only, 200 at most"
        )
    return value


def parse_when(text: str, *, now: datetime) -> datetime:
    """`2h`, `30m`, `1d`, `90s` (that long ago) or an ISO 8601 time."""
    match = _DURATION.fullmatch(text.strip())
    if match:
        return now - timedelta(seconds=int(match.group(1)) * _UNITS[match.group(2)])
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise CliError(
            f"{text!r} is not a time: use 30m, 2h, 7d or an ISO time like 2026-11-30T14:00"
        ) from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


# -- status --------------------------------------------------------------------------------------


def status_data(stage: Stage, *, cloudwatch: Any, ecs: Any, now: datetime) -> dict[str, Any]:
    """Per queue: waiting, in flight, oldest age; per group: running, desired; alarms in ALARM."""
    namespace = stage.output("MetricNamespace", needed_for="queue metrics")
    metrics = {
        "waiting": qm.WAITING_TASKS,
        "in_flight": qm.IN_FLIGHT_TASKS,
        "oldest_age_s": qm.OLDEST_TASK_AGE,
    }
    queries = []
    for index, queue in enumerate(stage.queues):
        for short, metric in metrics.items():
            queries.append(
                {
                    "Id": f"m{index}_{short}",
                    "MetricStat": {
                        "Metric": {
                            "Namespace": namespace,
                            "MetricName": metric,
                            "Dimensions": [{"Name": qm.QUEUE_DIMENSION, "Value": queue}],
                        },
                        "Period": 60,
                        "Stat": "Maximum",
                    },
                }
            )
    latest: dict[str, float] = {}
    for start in range(0, len(queries), 500):
        response = call(
            "reading queue metrics",
            cloudwatch.get_metric_data,
            MetricDataQueries=queries[start : start + 500],
            StartTime=now - timedelta(minutes=10),
            EndTime=now,
            ScanBy="TimestampDescending",
        )
        for result in response["MetricDataResults"]:
            if result.get("Values"):
                latest[result["Id"]] = float(result["Values"][0])
    queues = [
        {short: latest.get(f"m{index}_{short}") for short in metrics} | {"queue": queue}
        for index, queue in enumerate(stage.queues)
    ]

    groups = []
    services = stage.worker_services
    if services:
        cluster = stage.output("ClusterName", needed_for="worker counts")
        names = list(services.values())
        by_name: dict[str, Any] = {}
        # DescribeServices takes at most 10 services per call.
        for start in range(0, len(names), 10):
            described = call(
                "reading the worker services",
                ecs.describe_services,
                cluster=cluster,
                services=names[start : start + 10],
            )
            by_name.update({s["serviceName"]: s for s in described.get("services", [])})
        for group, service in services.items():
            found = by_name.get(service) or by_name.get(service.rsplit("/", 1)[-1]) or {}
            groups.append(
                {"group": group, "running": found.get("runningCount"), "desired": found.get("desiredCount")}
            )

    alarms = []
    paginator = cloudwatch.get_paginator("describe_alarms")
    pages = call(
        "reading alarms",
        lambda: list(
            paginator.paginate(
                AlarmNamePrefix=stage.stack_name,
                StateValue="ALARM",
                AlarmTypes=["MetricAlarm", "CompositeAlarm"],
            )
        ),
    )
    for page in pages:
        for alarm in [*page.get("MetricAlarms", []), *page.get("CompositeAlarms", [])]:
            description = alarm.get("AlarmDescription", "")
            link = RUNBOOK.search(description)
            alarms.append(
                {
                    "name": alarm["AlarmName"],
                    "since": _iso(alarm.get("StateUpdatedTimestamp")),
                    "description": RUNBOOK.sub("", description).strip(),
                    "runbook": link.group(1) if link else None,
                }
            )
    return {
        "stage": stage.name,
        "stack": stage.stack_name,
        "queues": queues,
        "groups": groups,
        "alarms": alarms,
    }


def render_status(data: dict[str, Any], out: TextIO) -> None:
    out.write(f"stage {data['stage']!r} ({data['stack']})\n\n")
    rows = [
        [q["queue"], _count(q["waiting"]), _count(q["in_flight"]), _age(q["oldest_age_s"])]
        for q in data["queues"]
    ]
    _table(out, ["queue", "waiting", "in flight", "oldest waiting"], rows, right=(1, 2, 3))
    out.write("\n")
    rows = [[g["group"], _count(g["running"]), _count(g["desired"])] for g in data["groups"]]
    _table(out, ["worker group", "running", "desired"], rows, right=(1, 2))
    out.write("\n")
    if not data["alarms"]:
        out.write("alarms in ALARM: none\n")
        return
    out.write(f"alarms in ALARM: {len(data['alarms'])}\n")
    for alarm in data["alarms"]:
        out.write(f"  {alarm['name']} (since {alarm['since']})\n    {alarm['description']}\n")
        if alarm["runbook"]:
            out.write(f"    runbook: {alarm['runbook']}\n")


# -- failures ------------------------------------------------------------------------------------


def failures_query(*, task: str | None, limit: int) -> str:
    where = f'| filter task = "{safe_value(task, "task name")}"\n' if task else ""
    return (
        "fields @timestamp, task_id, task, exc_type, exc_message, fingerprint\n"
        + where
        + "| stats count(*) as failures, min(@timestamp) as first_seen, max(@timestamp) as last_seen,"
        " latest(task_id) as example_task_id, latest(exc_message) as example_message"
        " by fingerprint, task, exc_type\n"
        f"| sort failures desc\n| limit {limit}"
    )


def failures_data(
    stage: Stage, *, insights: Insights, start: datetime, end: datetime, task: str | None, limit: int
) -> dict[str, Any]:
    group = stage.output("FailedTasksLogGroup", needed_for="failure records")
    result = insights.run(
        log_groups=[group],
        query=failures_query(task=task, limit=limit),
        start=start.timestamp(),
        end=end.timestamp(),
        what="failures",
    )
    rows = [
        {
            "fingerprint": row.get("fingerprint", ""),
            "task": row.get("task", ""),
            "exc_type": row.get("exc_type", ""),
            "failures": int(float(row.get("failures") or 0)),
            "first_seen": row.get("first_seen", ""),
            "last_seen": row.get("last_seen", ""),
            "example_task_id": row.get("example_task_id", ""),
            "example_message": row.get("example_message", ""),
        }
        for row in result.rows
    ]
    return {"stage": stage.name, "since": _iso(start), "until": _iso(end), "task": task, "fingerprints": rows}


def render_failures(data: dict[str, Any], out: TextIO) -> None:
    scope = f" of {data['task']}" if data["task"] else ""
    out.write(f"failures{scope} in stage {data['stage']!r}, {data['since']} to {data['until']}\n\n")
    if not data["fingerprints"]:
        out.write("no failures\n")
        return
    rows = [
        [
            r["failures"],
            r["fingerprint"],
            r["task"],
            r["exc_type"],
            r["first_seen"],
            r["last_seen"],
            r["example_task_id"],
        ]
        for r in data["fingerprints"]
    ]
    _table(
        out,
        ["count", "fingerprint", "task", "exception", "first seen", "last seen", "example id"],
        rows,
        right=(0,),
    )
    out.write(
        "\n`celery-fleet show -s STAGE ID` shows one failure;"
        " `celery-fleet replay -s STAGE --fingerprint FP` replays them.\n"
    )


# -- show ----------------------------------------------------------------------------------------


def show_data(
    stage: Stage, *, insights: Insights, task_id: str, start: datetime, end: datetime
) -> dict[str, Any]:
    task_id = safe_value(task_id, "task id")
    match = f'(task_id = "{task_id}" or replay_of = "{task_id}")'
    events = insights.run(
        log_groups=[stage.output("WorkerLogGroup", needed_for="task events")],
        query=f'filter celery_fleet = "task_event" and {match}\n'
        "| fields @timestamp, event, task_id, task, queue, worker, retries, runtime_s, queue_wait_s,"
        " exc_type,"
        " exc_message, replay_of\n| sort @timestamp asc\n| limit 1000",
        start=start.timestamp(),
        end=end.timestamp(),
        what="task events",
    ).rows
    failures = insights.run(
        log_groups=[stage.output("FailedTasksLogGroup", needed_for="failure records")],
        query=f"filter {match}\n| fields @timestamp, event, task_id, exc_type, exc_message, fingerprint,"
        " kept_message, args, kwargs, traceback\n| sort @timestamp asc\n| limit 100",
        start=start.timestamp(),
        end=end.timestamp(),
        what="failure records",
    ).rows
    replays: list[dict[str, str]] = []
    if stage.outputs.get("ReplayLogGroup"):
        replays = insights.run(
            log_groups=[stage.outputs["ReplayLogGroup"]],
            query=f'filter audit = "replay" and @message like "{task_id}"\n'
            "| fields @timestamp, replay_id, requested_by, selection, dry_run, count\n| sort @timestamp asc"
            "\n| limit 100",
            start=start.timestamp(),
            end=end.timestamp(),
            what="replays",
        ).rows
        # Dry runs are audited too, but sent nothing.
        replays = [row for row in replays if row.get("dry_run", "").lower() not in {"true", "1"}]
    history = [
        {**{k: v for k, v in row.items() if k != "@ptr"}, "time": row.get("@timestamp", "")} for row in events
    ] + [
        {
            "time": row.get("@timestamp", ""),
            "event": "replayed",
            "replay_id": row.get("replay_id", ""),
            "requested_by": row.get("requested_by", ""),
            "selection": row.get("selection", ""),
        }
        for row in replays
    ]
    history.sort(key=lambda item: item["time"])
    return {
        "stage": stage.name,
        "task_id": task_id,
        "events": history,
        "failures": [{k: v for k, v in row.items() if k != "@ptr"} for row in failures],
    }


def render_show(data: dict[str, Any], out: TextIO) -> None:
    out.write(f"task {data['task_id']} in stage {data['stage']!r}\n\n")
    if not data["events"] and not data["failures"]:
        out.write("no events in this window (widen it with --since)\n")
        return
    for event in data["events"]:
        if event["event"] == "replayed":
            detail = f"by {event['requested_by']} ({event['selection']})"
        else:
            attempt = event.get("task_id", "")
            detail = " ".join(
                part
                for part in (
                    event.get("task", ""),
                    f"queue={event['queue']}" if event.get("queue") else "",
                    f"retries={event['retries']}" if event.get("retries") not in (None, "", "0") else "",
                    f"runtime={event['runtime_s']}s" if event.get("runtime_s") else "",
                    f"{event['exc_type']}: {event.get('exc_message', '')}" if event.get("exc_type") else "",
                    f"(attempt {attempt}, replays {event['replay_of']})" if event.get("replay_of") else "",
                )
                if part
            )
        out.write(f"{event['time']}  {event['event']:<20} {detail}\n")
    for failure in data["failures"]:
        out.write(f"\nfailure record {failure.get('@timestamp', '')} ({failure.get('event', '')})\n")
        for key in ("task_id", "exc_type", "exc_message", "fingerprint", "kept_message", "args", "kwargs"):
            if failure.get(key):
                out.write(f"  {key}: {failure[key]}\n")
        if failure.get("traceback"):
            out.write("  traceback:\n")
            out.write("".join(f"    {line}\n" for line in failure["traceback"].splitlines()))


# -- replay --------------------------------------------------------------------------------------


def replay_query(
    *, task_ids: Sequence[str], fingerprint: str | None, task: str | None, query: str | None
) -> tuple[str, str]:
    """The Logs Insights query choosing the failure records to replay, and the selection as said."""
    if query is not None:
        return query, f"query: {query}"
    clauses, said = [], []
    if task_ids:
        ids = ", ".join(f'"{safe_value(i, "task id")}"' for i in task_ids)
        clauses.append(f"task_id in [{ids}]")
        said.append(f"task ids: {', '.join(task_ids)}")
    if fingerprint:
        clauses.append(f'fingerprint = "{safe_value(fingerprint, "fingerprint")}"')
        said.append(f"fingerprint {fingerprint}")
    if task:
        clauses.append(f'task = "{safe_value(task, "task name")}"')
        said.append(f"task {task}")
    if not clauses:
        raise CliError("choose what to replay: --task-id, --fingerprint, --task (with --since) or --query")
    fields = "| fields @timestamp, task_id, task, queue, kept_message\n| limit 10000"
    text = f"filter {' and '.join(clauses)}\n{fields}"
    return text, "; ".join(said)


def candidates_from(rows: Iterable[dict[str, str]]) -> tuple[list[dict[str, str]], list[str]]:
    """One candidate per task id (its latest record with a kept message), and the ids kept nowhere."""
    latest: dict[str, dict[str, str]] = {}
    unkept: set[str] = set()
    for row in sorted(rows, key=lambda r: r.get("@timestamp", "")):
        task_id = row.get("task_id", "")
        if not task_id:
            continue
        if row.get("kept_message"):
            latest[task_id] = {"task_id": task_id, "kept_key": row["kept_message"]}
            unkept.discard(task_id)
        elif task_id not in latest:
            unkept.add(task_id)
    return list(latest.values()), sorted(unkept)


def replay_data(
    stage: Stage,
    *,
    insights: Insights,
    invoke: Callable[[dict[str, Any]], dict[str, Any]],
    identity: str,
    start: datetime,
    end: datetime,
    selection: tuple[str, str],
    dry_run: bool,
    force: bool,
    rate_per_s: float,
    progress: TextIO | None,
) -> dict[str, Any]:
    group = stage.output("FailedTasksLogGroup", needed_for="choosing failures")
    stage.output("ReplayFunctionName", needed_for="replay")
    query, said = selection
    rows = insights.run(
        log_groups=[group], query=query, start=start.timestamp(), end=end.timestamp(), what="failure records"
    ).rows
    if rows and not {"task_id", "kept_message"} <= set().union(*(row.keys() for row in rows)):
        raise CliError(
            "the query's results need the fields task_id and kept_message (`| fields task_id, kept_message`)"
        )
    candidates, unkept = candidates_from(rows)
    replay_id = str(uuid.uuid4())
    totals: Counter[tuple[str, str]] = Counter()
    answer: dict[str, Any] = {
        "already_replayed": [],
        "not_kept": list(unkept),
        "invalid": [],
        "failed": [],
        "replayed": {},
    }
    pending = list(candidates)
    done = 0
    while pending:
        batch, pending = pending[:REPLAY_BATCH], pending[REPLAY_BATCH:]
        report = invoke(
            {
                "candidates": batch,
                "selection": said,
                "requested_by": identity,
                "dry_run": dry_run,
                "force": force,
                "rate_per_s": rate_per_s,
                "replay_id": replay_id,
            }
        )
        if "error" in report:
            raise CliError(f"the replay function refused the request: {report['error']}")
        for item in report["by_task_and_queue"]:
            totals[(item["task"], item["queue"])] += item["count"]
        for key in ("already_replayed", "not_kept", "invalid", "failed"):
            answer[key].extend(report[key])
        answer["replayed"].update(report["replayed"])
        # Handed back when the invocation ran out of time: they go in the next one.
        pending = list(report["remaining"]) + pending
        done += len(batch) - len(report["remaining"])
        if progress is not None and (pending or done > REPLAY_BATCH):
            progress.write(f"\rreplay: {done:,} of {len(candidates):,} looked at…")
            progress.flush()
    if progress is not None and done > REPLAY_BATCH:
        progress.write("\n")
    return {
        "stage": stage.name,
        "replay_id": replay_id,
        "requested_by": identity,
        "selection": said,
        "dry_run": dry_run,
        "force": force,
        "records": len(rows),
        "count": sum(totals.values()),
        "by_task_and_queue": [
            {"task": task, "queue": queue, "count": count} for (task, queue), count in sorted(totals.items())
        ],
        **answer,
    }


def render_replay(data: dict[str, Any], out: TextIO) -> None:
    verb = "would replay" if data["dry_run"] else "replayed"
    suffix = " (dry run: nothing was sent)" if data["dry_run"] else ""
    out.write(f"{verb} {data['count']} task(s) in stage {data['stage']!r}{suffix}\n")
    out.write(f"selection: {data['selection']}\n")
    if data["by_task_and_queue"]:
        out.write("\n")
        rows = [[item["task"], item["queue"], item["count"]] for item in data["by_task_and_queue"]]
        _table(out, ["task", "queue", "messages"], rows, right=(2,))
    notes = [
        ("already replayed (--force replays them again)", data["already_replayed"]),
        ("no kept message (keeping off, or past retention)", data["not_kept"]),
        ("kept message unreadable", data["invalid"]),
        ("could not be sent (broker unreachable): try again", data["failed"]),
    ]
    for label, ids in notes:
        if ids:
            shown = ", ".join(ids[:5]) + (f" and {len(ids) - 5} more" if len(ids) > 5 else "")
            out.write(f"{label}: {len(ids)}: {shown}\n")
    if not data["dry_run"] and data["replayed"]:
        out.write(f"replay id {data['replay_id']} (audited as requested by {data['requested_by']})\n")
        for original, new in list(data["replayed"].items())[:10]:
            out.write(f"  {original} -> {new}\n")
        if len(data["replayed"]) > 10:
            out.write(f"  … {len(data['replayed']) - 10} more (--json lists all)\n")


# -- helpers -------------------------------------------------------------------------------------


def _iso(value: Any) -> str:
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat(timespec="seconds")
    return "" if value is None else str(value)


def _count(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m" if hours else f"{minutes}m {secs:02d}s" if minutes else f"{secs}s"


def _table(out: TextIO, header: list[str], rows: list[list[Any]], *, right: tuple[int, ...] = ()) -> None:
    cells = [header, *[[str(cell) for cell in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    for row in cells:
        parts = [
            cell.rjust(w) if i in right else cell.ljust(w)
            for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        ]
        out.write("  ".join(parts).rstrip() + "\n")
    if not rows:
        out.write("(none)\n")


def dumps(data: Any) -> str:
    return json.dumps(data, indent=2, sort_keys=False, default=str) + "\n"
