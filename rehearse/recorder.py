"""The `sitecustomize` of the interpreter rehearsed tasks run: records their AWS calls for the IAM check.

Installed into that interpreter's site-packages as sitecustomize.py. When REHEARSAL_AWS_CALLS names a
file, every botocore call the process (or a pool child it forks) makes is appended to it as one
JSON line. botocore is patched when the process first imports it, so a process that makes no AWS
call (the health check) pays nothing. Standard library only.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import json
import os
import sys
from typing import Any


def _scalars(value: Any) -> bool:
    if isinstance(value, list):
        return all(isinstance(item, str | int | float) for item in value)
    return isinstance(value, str | int | float)


def _patch(module: Any, path: str) -> None:
    original = module.BaseClient._make_api_call

    def recording(self: Any, operation_name: str, api_params: dict[str, Any]) -> Any:
        line = {
            "service": self.meta.service_model.endpoint_prefix,
            "operation": operation_name,
            "params": {k: v for k, v in api_params.items() if _scalars(v)},
        }
        # One write of one short line with O_APPEND: lines of forked children do not interleave.
        with open(path, "a") as calls:
            calls.write(json.dumps(line) + "\n")
        return original(self, operation_name, api_params)

    module.BaseClient._make_api_call = recording


class _BotocoreHook(importlib.abc.MetaPathFinder):
    def __init__(self, path: str) -> None:
        self.path = path

    def find_spec(self, name: str, import_path: Any, target: Any = None) -> Any:
        if name != "botocore.client":
            return None
        sys.meta_path.remove(self)
        spec = importlib.machinery.PathFinder.find_spec(name, import_path)
        if spec is None or spec.loader is None:
            return spec
        loader: Any = spec.loader
        execute = loader.exec_module

        def exec_module(module: Any) -> None:
            execute(module)
            _patch(module, self.path)

        loader.exec_module = exec_module
        return spec


if os.environ.get("REHEARSAL_AWS_CALLS"):
    sys.meta_path.insert(0, _BotocoreHook(os.environ["REHEARSAL_AWS_CALLS"]))
