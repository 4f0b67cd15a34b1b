"""The worker's environment contract: every name in it is read by the worker side, and the runtime
reads no celery_fleet variable it does not name.

The readers are exercised as a worker runs them (configure, the emitter's install, the health
check) on an environment that records every name looked up in it.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import celery_fleet
import pytest
from celery import Celery
from celery_fleet import events, health, keep, protection
from celery_fleet.contract import worker_env

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "runtime" / "celery_fleet"
STACK_ENV = {
    worker_env.BROKER_HOST_ENV: "master.fleet.example.cache.amazonaws.com",
    worker_env.BROKER_PORT_ENV: "6379",
    worker_env.BROKER_AUTH_TOKEN_ENV: "token",
}


class RecordingEnviron(dict[str, str]):
    """An environment that remembers every name looked up in it, found or not."""

    def __init__(self, values: dict[str, str]) -> None:
        super().__init__(values)
        self.looked_up: set[str] = set()

    def __getitem__(self, key: str) -> str:
        self.looked_up.add(key)
        return super().__getitem__(key)

    def __contains__(self, key: object) -> bool:
        if isinstance(key, str):
            self.looked_up.add(key)
        return super().__contains__(key)

    def get(self, key: str, default: Any = None) -> Any:
        self.looked_up.add(key)
        return super().get(key, default)

    def pop(self, key: str, default: Any = None) -> Any:
        self.looked_up.add(key)
        return super().pop(key, default)


@pytest.fixture
def read_by_the_runtime(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[set[str]]:
    """The names a worker's celery_fleet looks up in its environment, from start to health check."""
    environ = RecordingEnviron(dict(STACK_ENV))
    # The emitter reads its key from the process environment (and removes it from there).
    process_environ = RecordingEnviron({})
    monkeypatch.setattr(os, "environ", process_environ)
    app = Celery("worker-env-test", set_as_current=False)
    try:
        celery_fleet.configure(app, environ=environ)
        health.main(["--file", str(tmp_path / "beat")], environ)
        yield environ.looked_up | process_environ.looked_up
    finally:
        events.uninstall()
        keep.uninstall()
        protection.uninstall()
        app.close()


def test_every_name_in_the_contract_is_read_by_the_worker_side(read_by_the_runtime: set[str]) -> None:
    assert set(worker_env.READ_BY_CELERY_FLEET) - read_by_the_runtime == set()


def test_the_runtime_reads_no_celery_fleet_variable_the_contract_does_not_name(
    read_by_the_runtime: set[str],
) -> None:
    ours = {name for name in read_by_the_runtime if name.startswith("CELERY_FLEET_")}

    assert ours - worker_env.ALL == set()


def test_the_variable_read_by_celery_is_read_by_billiard() -> None:
    # billiard reads it once, at import: a fresh interpreter shows what it made of it.
    script = "import billiard.common as c; print(c.REMAP_SIGTERM, c.TERM_SIGNAME)"
    env = {**os.environ, worker_env.REMAP_SIGTERM_ENV: worker_env.REMAP_SIGTERM_VALUE}

    result = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True
    )

    assert result.stdout.split() == [worker_env.REMAP_SIGTERM_VALUE, worker_env.REMAP_SIGTERM_VALUE]
    assert set(worker_env.READ_BY_CELERY) == {worker_env.REMAP_SIGTERM_ENV}


def test_each_name_is_listed_once_and_every_group_is_in_the_whole() -> None:
    names = [*worker_env.READ_BY_CELERY_FLEET, *worker_env.READ_BY_CELERY]

    assert len(names) == len(set(names)) == len(worker_env.ALL)
    assert worker_env.SECRETS | worker_env.SET_BY_ECS <= worker_env.ALL


def _code_strings(tree: ast.AST) -> Iterator[str]:
    """The string constants of `tree` that are not docstrings."""
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            yield node.value


def test_only_the_contract_spells_a_variable_name() -> None:
    spelled = {
        (str(path.relative_to(ROOT)), text)
        for path in PACKAGE.rglob("*.py")
        if path != PACKAGE / "contract" / "worker_env.py"
        for text in _code_strings(ast.parse(path.read_text(encoding="utf-8")))
        if any(name in text for name in worker_env.ALL)
    }

    assert spelled == set()
