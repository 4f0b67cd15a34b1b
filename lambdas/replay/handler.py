"""Replay Lambda: started by `celery-fleet replay`, inside the VPC where the broker is reachable.

Event (validated; a bad one is answered with an error and changes nothing):
    candidates     [{"task_id", "kept_key"}], at most MAX_CANDIDATES: the failures to replay
    selection      what the operator asked for, as they typed it (for the audit line)
    requested_by   the operator's identity (the CLI sends its sts:GetCallerIdentity ARN)
    dry_run, force, rate_per_s, replay_id

Environment (replay.environment's names; validated at cold start, a bad value fails the init with a
message naming it): FAILED_MESSAGES_BUCKET; BROKER_URL (local runs, tests), or BROKER_HOST,
BROKER_PORT and BROKER_AUTH_SECRET_ARN (TLS, AUTH token from Secrets Manager); POWERTOOLS_SERVICE_NAME,
the `service` of every log line (read by Powertools' Logger).

Every invocation writes one audit line (`"audit": "replay"`): who, which selection, dry or not,
how many per task name and queue, and each original task id with its replay's id.
"""

from __future__ import annotations

import os
import time
from typing import Any

import boto3
import redis
from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.typing import LambdaContext
from botocore.config import Config
from broker_access.client import tls_options
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .logic import Candidate, ReplayOptions, replay
from .settings import Settings, load_settings
from .store import S3Store

MAX_CANDIDATES = 1000
# Kept back from the function's timeout for the answer and the audit line.
FINISH_MARGIN_S = 10.0
BROKER_TIMEOUT_S = 5.0


class CandidateModel(BaseModel):
    model_config = ConfigDict(extra="forbid")
    task_id: str = Field(min_length=1, max_length=512)
    kept_key: str = Field(min_length=1, max_length=1024)


class ReplayEvent(BaseModel):
    model_config = ConfigDict(extra="forbid")
    candidates: list[CandidateModel] = Field(max_length=MAX_CANDIDATES)
    selection: str = Field(default="", max_length=4096)
    requested_by: str = Field(default="", max_length=2048)
    dry_run: bool = True
    force: bool = False
    rate_per_s: float = Field(default=10.0, gt=0, le=1000)
    replay_id: str = Field(default="", max_length=128)


# Its service from POWERTOOLS_SERVICE_NAME, which the stack sets.
logger = Logger()
settings: Settings = load_settings(os.environ)
s3 = boto3.client(
    "s3", config=Config(connect_timeout=5, read_timeout=30, retries={"mode": "standard", "max_attempts": 3})
)


def broker_client() -> redis.Redis:
    timeouts: dict[str, Any] = {
        "socket_connect_timeout": BROKER_TIMEOUT_S,
        "socket_timeout": BROKER_TIMEOUT_S,
    }
    if settings.broker_url is not None:
        return redis.Redis.from_url(settings.broker_url, **timeouts)
    return redis.Redis(ssl=True, **tls_options(settings), **timeouts)


@logger.inject_lambda_context(log_event=False)
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    """Replay (or count, dry) the event's candidates; answers what it did."""
    try:
        request = ReplayEvent.model_validate(event)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors(include_url=False)[:5]
        )
        logger.warning("replay request rejected", extra={"problems": problems})
        return {"error": f"invalid replay request: {problems}"}
    deadline = time.monotonic() + context.get_remaining_time_in_millis() / 1000 - FINISH_MARGIN_S
    options = ReplayOptions(
        dry_run=request.dry_run,
        force=request.force,
        rate_per_s=request.rate_per_s,
        requested_by=request.requested_by,
        replay_id=request.replay_id,
    )
    with broker_client() as client:
        report = replay(
            [Candidate(c.task_id, c.kept_key) for c in request.candidates],
            store=S3Store(s3, settings.bucket),
            broker=client,
            options=options,
            deadline=deadline,
        )
    answer = report.as_dict()
    logger.info(
        "replay audit",
        extra={
            "audit": "replay",
            "replay_id": request.replay_id,
            "requested_by": request.requested_by,
            "selection": request.selection,
            "dry_run": request.dry_run,
            "force": request.force,
            "rate_per_s": request.rate_per_s,
            "candidates": len(request.candidates),
            **answer,
        },
    )
    return answer
