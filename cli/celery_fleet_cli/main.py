"""`celery-fleet`: the command line for the person on call. `celery-fleet --help` explains it."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, TextIO

import boto3
from botocore.config import Config
from botocore.exceptions import ProfileNotFound

from celery_fleet_cli import commands
from celery_fleet_cli.aws import CliError, Insights, Stage, call, load_stage, translate

DESCRIPTION = """\
The operator's command for a deployed celery-fleet stage. It uses your AWS credentials (profile,
environment or SSO, as the AWS CLI does) and finds every resource from the stage's stack outputs.

  celery-fleet status   -s prod                      queues, workers and alarms on one screen
  celery-fleet failures -s prod --since 2h           the most frequent failures, by fingerprint
  celery-fleet show     -s prod TASK_ID              every event of one task, with its traceback
  celery-fleet replay   -s prod --fingerprint FP --dry-run
                                                     send failed tasks again, exactly as first sent
"""

REPLAY_EPILOG = """\
Choose failures by --task-id, --fingerprint, --task (within --since/--until), or any combination
(all must match), or by --query. Each kept message is replayed at most once: a second replay of the
same failure skips it unless --force. A replayed task gets a new id and carries the id of the task
it replays, which `celery-fleet show ORIGINAL_ID` follows. Every replay, dry or not, is audited in
the replay function's log group with your identity and the selection.
"""

ClientFactory = Callable[[str], Any]


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-s", "--stage", required=True, help="the stage's name, as in `-c stage=NAME`")
    common.add_argument("--region", help="AWS region of the stage (default: your AWS configuration)")
    common.add_argument("--profile", help="AWS profile to use (default: your AWS configuration)")
    common.add_argument("--json", action="store_true", help="print JSON for scripts instead of text")
    common.add_argument(
        "--timeout",
        type=float,
        default=120.0,
        metavar="SECONDS",
        help="give up a Logs Insights query after this long (120)",
    )

    parser = argparse.ArgumentParser(
        prog="celery-fleet", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    sub.add_parser(
        "status",
        parents=[common],
        help="queues, worker groups and alarms in ALARM",
        description="Per queue: tasks waiting, in flight and the oldest waiting task's age (latest minute); "
        "per "
        "worker group: running and desired workers; every alarm in ALARM with its runbook section.",
    )

    failures = sub.add_parser(
        "failures",
        parents=[common],
        help="top failure fingerprints with counts",
        description="The failure fingerprints (task, exception type, innermost application frame) seen in "
        "the "
        "window, most frequent first, with first and last time seen and an example task id.",
    )
    failures.add_argument(
        "--since", default="2h", help="start of the window: 30m, 2h, 7d or an ISO time (2h)"
    )
    failures.add_argument("--until", help="end of the window (now)")
    failures.add_argument("--task", help="only this task name")
    failures.add_argument("--limit", type=int, default=20, help="fingerprints shown at most (20)")

    show = sub.add_parser(
        "show",
        parents=[common],
        help="every event of one task, its failure record and traceback",
        description="Every event of a task (received, retried, failed, replayed, and the attempts that "
        "replay "
        "it), then its failure records with arguments as redacted and the traceback.",
    )
    show.add_argument("task_id", metavar="TASK_ID", help="the Celery task id")
    show.add_argument("--since", default="7d", help="how far back to look: 2h, 7d or an ISO time (7d)")
    show.add_argument("--until", help="end of the window (now)")

    replay = sub.add_parser(
        "replay",
        parents=[common],
        help="put failed tasks back on their queues, exactly as first sent",
        description="Put the kept messages of failed tasks back on their original queues, at a limited rate.",
        epilog=REPLAY_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    replay.add_argument(
        "--task-id", action="append", default=[], metavar="ID", help="a failed task's id (repeatable)"
    )
    replay.add_argument("--fingerprint", help="every failure with this fingerprint (see `failures`)")
    replay.add_argument("--task", help="every failure of this task name")
    replay.add_argument(
        "--query",
        help="a Logs Insights query over the failed-tasks log group; its results need task_id and "
        "kept_message",
    )
    replay.add_argument("--since", default="7d", help="failures since: 30m, 2h, 7d or an ISO time (7d)")
    replay.add_argument("--until", help="failures until (now)")
    replay.add_argument(
        "--dry-run",
        action="store_true",
        help="count what would be replayed, per task and queue; send nothing",
    )
    replay.add_argument(
        "--force", action="store_true", help="replay messages that were replayed before, again"
    )
    replay.add_argument(
        "--rate", type=float, default=10.0, metavar="PER_SECOND", help="messages sent per second at most (10)"
    )
    return parser


def main(
    argv: Sequence[str] | None = None,
    *,
    clients: ClientFactory | None = None,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
    now: datetime | None = None,
) -> int:
    """Run the command; returns the exit status (0 ok, 1 an error explained on stderr, 2 bad usage)."""
    out = stdout or sys.stdout
    err = stderr or sys.stderr
    args = build_parser().parse_args(argv)
    now = now or datetime.now(UTC)
    try:
        if clients is None:
            session = boto3.Session(profile_name=args.profile, region_name=args.region)
            clients = _session_clients(session)
        data, render = _run(args, clients, now=now, progress=None if args.json else err)
    except CliError as exc:
        err.write(f"celery-fleet: {exc}\n")
        return 1
    except Exception as exc:
        # A profile that does not exist, no region, credentials that cannot be loaded: said plainly.
        translated = translate(exc, doing=f"reaching AWS for stage {args.stage!r}")
        if translated is exc and not isinstance(exc, ProfileNotFound):
            raise
        err.write(f"celery-fleet: {translated}\n")
        return 1
    if args.json:
        out.write(commands.dumps(data))
    else:
        render(data, out)
    return 0


def _session_clients(session: boto3.Session) -> ClientFactory:
    made: dict[str, Any] = {}

    def client(name: str) -> Any:
        if name not in made:
            # A replay invocation runs up to 15 minutes; it is never retried (markers make a retry
            # harmless, but it would only wait again).
            config = (
                Config(read_timeout=910, retries={"total_max_attempts": 1})
                if name == "lambda"
                else Config(retries={"mode": "standard"})
            )
            made[name] = session.client(name, config=config)
        return made[name]

    return client


def _run(
    args: argparse.Namespace, clients: ClientFactory, *, now: datetime, progress: TextIO | None
) -> tuple[dict[str, Any], Callable[[dict[str, Any], TextIO], None]]:
    stage = load_stage(clients("cloudformation"), args.stage)
    insights = Insights(clients("logs"), timeout_s=args.timeout, progress=progress)
    if args.command == "status":
        return commands.status_data(stage, cloudwatch=clients("cloudwatch"), ecs=clients("ecs"), now=now), (
            commands.render_status
        )
    start = commands.parse_when(args.since, now=now)
    end = commands.parse_when(args.until, now=now) if args.until else now
    if start >= end:
        raise CliError(f"--since {args.since} is not before --until {args.until or 'now'}")
    if args.command == "failures":
        data = commands.failures_data(
            stage, insights=insights, start=start, end=end, task=args.task, limit=args.limit
        )
        return data, commands.render_failures
    if args.command == "show":
        data = commands.show_data(stage, insights=insights, task_id=args.task_id, start=start, end=end)
        return data, commands.render_show
    if args.rate <= 0 or args.rate > 1000:
        raise CliError(f"--rate {args.rate} must be above 0 and at most 1000 messages per second")
    selection = commands.replay_query(
        task_ids=args.task_id, fingerprint=args.fingerprint, task=args.task, query=args.query
    )
    identity = call("asking AWS who you are", clients("sts").get_caller_identity)["Arn"]
    data = commands.replay_data(
        stage,
        insights=insights,
        invoke=_invoker(clients("lambda"), stage),
        identity=identity,
        start=start,
        end=end,
        selection=selection,
        dry_run=args.dry_run,
        force=args.force,
        rate_per_s=args.rate,
        progress=progress,
    )
    return data, commands.render_replay


def _invoker(lambda_client: Any, stage: Stage) -> Callable[[dict[str, Any]], dict[str, Any]]:
    function = stage.output("ReplayFunctionName", needed_for="replay")

    def invoke(event: dict[str, Any]) -> dict[str, Any]:
        response = call(
            "starting the replay function",
            lambda_client.invoke,
            FunctionName=function,
            InvocationType="RequestResponse",
            Payload=json.dumps(event).encode(),
        )
        payload = json.loads(response["Payload"].read() or b"null")
        if response.get("FunctionError"):
            message = payload.get("errorMessage") if isinstance(payload, dict) else payload
            raise CliError(f"the replay function failed: {message}. Its log group has the details.")
        if not isinstance(payload, dict):
            raise CliError(f"the replay function answered {payload!r}")
        return payload

    return invoke


if __name__ == "__main__":
    sys.exit(main())
