"""Finding a stage's resources from its stack outputs, and running Logs Insights queries.

Every AWS error an operator can act on becomes a `CliError` whose message says what to do; the
rest propagate as they are.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TextIO

from botocore.exceptions import (
    ClientError,
    CredentialRetrievalError,
    NoCredentialsError,
    NoRegionError,
    PartialCredentialsError,
    SSOError,
    TokenRetrievalError,
)

STACK_PREFIX = "CeleryFleet-"

_CREDENTIAL_CODES = frozenset(
    {
        "ExpiredToken",
        "ExpiredTokenException",
        "RequestExpired",
        "InvalidClientTokenId",
        "UnrecognizedClientException",
        "InvalidSignatureException",
        "SignatureDoesNotMatch",
    }
)


class CliError(Exception):
    """An error the operator can act on; its message is printed as is, exit status 1."""


class CredentialsError(CliError):
    pass


class StageNotFoundError(CliError):
    pass


class QueryTimeoutError(CliError):
    pass


def translate(exc: Exception, *, doing: str) -> Exception:
    """`exc` as a CliError when the operator can fix its cause, else `exc` itself."""
    if isinstance(
        exc,
        NoCredentialsError
        | PartialCredentialsError
        | CredentialRetrievalError
        | TokenRetrievalError
        | SSOError,
    ):
        return CredentialsError(
            f"no usable AWS credentials while {doing}: set AWS_PROFILE or run `aws sso login` ({exc})"
        )
    if isinstance(exc, NoRegionError):
        return CliError(f"no AWS region while {doing}: pass --region or set AWS_REGION")
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        code, message = error.get("Code", ""), error.get("Message", "")
        if code in _CREDENTIAL_CODES:
            return CredentialsError(
                f"AWS refused the credentials while {doing} ({code}: {message}). They have probably "
                "expired: refresh them (`aws sso login`, or new keys) and run the command again."
            )
        if code in {"AccessDenied", "AccessDeniedException"}:
            return CliError(f"not allowed while {doing}: {message}")
    return exc


def call(doing: str, function: Callable[..., Any], **kwargs: Any) -> Any:
    """`function(**kwargs)`, with errors the operator can act on translated."""
    try:
        return function(**kwargs)
    except Exception as exc:
        translated = translate(exc, doing=doing)
        if translated is exc:
            raise
        raise translated from None


@dataclass(frozen=True)
class Stage:
    """One deployed stage, as its stateless stack's outputs describe it."""

    name: str
    stack_name: str
    outputs: Mapping[str, str]

    def output(self, key: str, *, needed_for: str) -> str:
        value = self.outputs.get(key)
        if not value:
            raise CliError(
                f"stage {self.name!r}: stack {self.stack_name} has no output {key}, needed for {needed_for}. "
                "Deploy the stage with this version of celery-fleet (`npx cdk deploy --all`)"
                + (" with monitoring.keep_failed_messages = true" if key.startswith("Replay") else "")
                + "."
            )
        return value

    @property
    def queues(self) -> list[str]:
        return [q for q in self.outputs.get("Queues", "").split(",") if q]

    @property
    def worker_services(self) -> dict[str, str]:
        pairs = (
            item.split("=", 1) for item in self.outputs.get("WorkerServices", "").split(",") if "=" in item
        )
        return dict(pairs)


def stateless_stack_name(stage: str) -> str:
    return f"{STACK_PREFIX}{stage}-Stateless"


def load_stage(cloudformation: Any, stage: str) -> Stage:
    """The stage's outputs; a clear error naming the deployed stages when it does not exist."""
    stack_name = stateless_stack_name(stage)
    try:
        stacks = cloudformation.describe_stacks(StackName=stack_name)["Stacks"]
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") == "ValidationError":
            known = deployed_stages(cloudformation)
            region = cloudformation.meta.region_name
            raise StageNotFoundError(
                f"no stage {stage!r} in {region}: stack {stack_name} does not exist. "
                + (
                    f"Deployed stages here: {', '.join(known)}."
                    if known
                    else "No celery-fleet stage is deployed here."
                )
                + " Check -s and --region (or AWS_REGION)."
            ) from None
        raise translate(exc, doing=f"reading stack {stack_name}") from None
    except Exception as exc:
        raise translate(exc, doing=f"reading stack {stack_name}") from None
    outputs = {o["OutputKey"]: o.get("OutputValue", "") for o in stacks[0].get("Outputs", [])}
    return Stage(name=stage, stack_name=stack_name, outputs=outputs)


def deployed_stages(cloudformation: Any) -> list[str]:
    names: list[str] = []
    paginator = cloudformation.get_paginator("describe_stacks")
    for page in paginator.paginate():
        for stack in page["Stacks"]:
            name = stack["StackName"]
            if name.startswith(STACK_PREFIX) and name.endswith("-Stateless"):
                names.append(name[len(STACK_PREFIX) : -len("-Stateless")])
    return sorted(names)


@dataclass(frozen=True)
class QueryResult:
    rows: list[dict[str, str]]
    records_scanned: float
    elapsed_s: float


class Insights:
    """Runs Logs Insights queries, showing progress on `progress` while a query takes a while."""

    def __init__(
        self,
        logs: Any,
        *,
        timeout_s: float,
        progress: TextIO | None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        poll_s: float = 1.0,
        quiet_s: float = 2.0,
    ) -> None:
        self.logs = logs
        self.timeout_s = timeout_s
        self.progress = progress
        self.clock = clock
        self.sleep = sleep
        self.poll_s = poll_s
        self.quiet_s = quiet_s

    def run(
        self,
        *,
        log_groups: Sequence[str],
        query: str,
        start: float,
        end: float,
        what: str,
        limit: int = 10_000,
    ) -> QueryResult:
        started = self.clock()
        query_id = call(
            f"starting the {what} query",
            self.logs.start_query,
            logGroupNames=list(log_groups),
            startTime=int(start),
            endTime=int(end),
            queryString=query,
            limit=limit,
        )["queryId"]
        shown = False
        while True:
            response = call(f"reading the {what} query", self.logs.get_query_results, queryId=query_id)
            status = response.get("status")
            scanned = float(response.get("statistics", {}).get("recordsScanned", 0.0))
            elapsed = self.clock() - started
            if status == "Complete":
                if shown and self.progress is not None:
                    self.progress.write("\n")
                rows = [{f["field"]: f.get("value", "") for f in row} for row in response.get("results", [])]
                return QueryResult(rows=rows, records_scanned=scanned, elapsed_s=elapsed)
            if status in {"Failed", "Cancelled", "Timeout", "Unknown"}:
                raise CliError(f"the {what} query ended {status}: {query!r}")
            if elapsed >= self.timeout_s:
                with contextlib.suppress(ClientError):
                    self.logs.stop_query(queryId=query_id)
                raise QueryTimeoutError(
                    f"the {what} query did not finish within {self.timeout_s:.0f} s ({scanned:,.0f} records "
                    "scanned so far) and was stopped. Narrow the window (--since) or allow more (--timeout)."
                )
            if elapsed >= self.quiet_s and self.progress is not None:
                self.progress.write(f"\r{what}: {elapsed:.0f} s, {scanned:,.0f} records scanned…")
                self.progress.flush()
                shown = True
            self.sleep(self.poll_s)
