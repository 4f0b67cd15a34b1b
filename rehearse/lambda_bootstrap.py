"""Runs one Lambda function's handler in its own interpreter, as the Lambda runtime would.

Started with `python -I -S` (no site-packages): sys.path is the asset directory, then the directory
standing for the Lambda runtime and its layers. Standard library only until those are on sys.path.
Every AWS call the function makes through botocore is recorded for the IAM check.

argv: asset_dir runtime_dir handler events.json results.json calls.jsonl timeout_s budget_s
"""

from __future__ import annotations

import importlib
import json
import os
import sys
import time
import traceback
import uuid
from typing import Any


def _scalars(value: Any) -> bool:
    """A parameter the IAM check reads: a scalar, or a list of them (service names, alarm names)."""
    if isinstance(value, list):
        return all(isinstance(item, str | int | float) for item in value)
    return isinstance(value, str | int | float)


class Context:
    """The attributes of the Lambda context object the handlers here read."""

    def __init__(self, environ: dict[str, str], deadline: float) -> None:
        self.function_name = environ.get("AWS_LAMBDA_FUNCTION_NAME", "")
        self.function_version = "$LATEST"
        self.invoked_function_arn = environ.get("REHEARSAL_FUNCTION_ARN", "")
        self.memory_limit_in_mb = int(environ.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128"))
        self.aws_request_id = str(uuid.uuid4())
        self.log_group_name = environ.get("AWS_LAMBDA_LOG_GROUP_NAME", "")
        self.log_stream_name = environ.get("AWS_LAMBDA_LOG_STREAM_NAME", "")
        self._deadline = deadline

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.time()) * 1000))


def main() -> int:
    asset_dir, runtime_dir, handler_name, events_file, results_file, calls_file, timeout_s, budget_s = (
        sys.argv[1:9]
    )
    sys.path[:0] = [asset_dir, runtime_dir]
    # Only now is the runtime's SDK importable.
    import botocore.client  # noqa: PLC0415

    original = botocore.client.BaseClient._make_api_call
    calls = open(calls_file, "a")  # noqa: SIM115 - open for the life of the process

    def recording(self: Any, operation_name: str, api_params: dict[str, Any]) -> Any:
        calls.write(
            json.dumps(
                {
                    "service": self.meta.service_model.endpoint_prefix,
                    "operation": operation_name,
                    "params": {k: v for k, v in api_params.items() if _scalars(v)},
                }
            )
            + "\n"
        )
        calls.flush()
        return original(self, operation_name, api_params)

    botocore.client.BaseClient._make_api_call = recording
    results: list[dict[str, Any]] = []
    module_name, function_name = handler_name.rsplit(".", 1)
    try:
        handler = getattr(importlib.import_module(module_name), function_name)
    except BaseException:
        results.append({"init_error": traceback.format_exc()})
        with open(results_file, "w") as out:
            json.dump(results, out)
        print(traceback.format_exc(), file=sys.stderr)
        return 2
    with open(events_file) as source:
        events = json.load(source)
    for event in events:
        started = time.time()
        context = Context(dict(os.environ), started + min(float(timeout_s), float(budget_s)))
        try:
            results.append({"result": handler(event, context), "duration_s": time.time() - started})
        except BaseException as error:  # what Lambda reports as the invocation's error
            text = traceback.format_exc()
            print(text, file=sys.stderr)
            results.append({"error": f"{type(error).__name__}: {error}", "traceback": text})
        sys.stdout.flush()
    with open(results_file, "w") as out:
        json.dump(results, out, default=str)
    return 0


if __name__ == "__main__":
    sys.exit(main())
