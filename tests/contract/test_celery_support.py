"""The Celery internals celery_fleet relies on: each one checked at install, against the real Celery.

Deleting an internal from the installed Celery (restored after each test) stands for a release that
renamed it.
"""

from __future__ import annotations

import ast
import importlib
import logging
import re
import tomllib
from collections.abc import Iterator
from pathlib import Path

import billiard
import celery
import celery_fleet
import kombu
import pytest
from billiard.einfo import ExceptionInfo
from celery import Celery
from celery.worker.request import Request
from celery_fleet import events
from celery_fleet.celery_support import (
    INTERNALS,
    SUPPORTED_CELERY,
    Internal,
    UnsupportedCeleryError,
    check_celery,
    supported,
    unwrap_pool_exception,
)
from celery_fleet.contract.worker_env import BROKER_URL_ENV

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "runtime" / "celery_fleet"
# Private members of celery_fleet's own objects that one of its modules uses on another's.
OWN_PRIVATE = {"_failed"}
VERSIONS = f"{celery.__version__} (billiard {billiard.__version__}, kombu {kombu.__version__})"


@pytest.fixture
def app() -> Iterator[Celery]:
    celery_app = Celery("support-test", set_as_current=False)
    yield celery_app
    events.uninstall()
    celery_app.close()


def _delete(monkeypatch: pytest.MonkeyPatch, internal: Internal) -> None:
    """Remove `internal` from the installed Celery, where it is defined (a base class, a module)."""
    module_name, _, attributes = internal.path.partition(":")
    owner: object = importlib.import_module(module_name)
    *parents, last = attributes.split(".")
    for name in parents:
        owner = getattr(owner, name)
    if isinstance(owner, type):
        owner = next(cls for cls in owner.__mro__ if last in vars(cls))
    monkeypatch.delattr(owner, last)


def test_the_installed_celery_has_every_internal() -> None:
    assert [internal.name for internal in INTERNALS if not internal.present()] == []
    check_celery()


@pytest.mark.parametrize("internal", INTERNALS, ids=lambda internal: internal.name)
def test_a_missing_internal_is_named_in_the_error(
    monkeypatch: pytest.MonkeyPatch, internal: Internal
) -> None:
    _delete(monkeypatch, internal)

    with pytest.raises(UnsupportedCeleryError) as caught:
        check_celery()

    assert f"missing from it: {internal.name} ({internal.why})" in str(caught.value)


def test_the_error_says_the_installed_versions_and_the_supported_range(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delattr(Request, "_already_revoked")

    with pytest.raises(UnsupportedCeleryError) as caught:
        check_celery()

    assert str(caught.value) == (
        f"celery_fleet cannot run on the installed Celery {VERSIONS}: it relies on this internal, missing "
        "from it: celery.worker.request.Request._already_revoked (tells a revoked or terminated task from "
        "a lost worker). celery_fleet supports celery>=5.7,<5.8: pip install 'celery[redis]>=5.7,<5.8'."
    )


def test_configure_refuses_a_celery_without_an_internal_before_changing_the_app(
    app: Celery, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delattr(Request, "on_failure")

    with pytest.raises(UnsupportedCeleryError, match=r"celery\.worker\.request\.Request\.on_failure"):
        celery_fleet.configure(app, environ={BROKER_URL_ENV: "redis://127.0.0.1:1/0"}, task_events=False)
    assert app.conf.task_acks_late is False


def test_the_emitter_refuses_to_install_on_a_celery_without_an_internal(
    app: Celery, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delattr(Request, "_already_cancelled")

    with pytest.raises(UnsupportedCeleryError, match=r"Request\._already_cancelled"):
        events.install(app, key=b"k")


def test_a_complete_celery_outside_the_range_is_only_warned_about(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(celery, "__version__", "5.8.0")

    with caplog.at_level(logging.WARNING, logger="celery_fleet"):
        check_celery()

    assert "the installed Celery 5.8.0" in caplog.text
    assert f"outside the supported celery{SUPPORTED_CELERY}" in caplog.text


def test_configure_checks_and_warns_once_even_with_task_events(
    app: Celery, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(celery, "__version__", "5.8.0")

    with caplog.at_level(logging.WARNING, logger="celery_fleet"):
        celery_fleet.configure(
            app, environ={BROKER_URL_ENV: "redis://127.0.0.1:1/0"}, healthcheck=False, task_events=True
        )
    events.uninstall()

    assert caplog.text.count("outside the supported celery") == 1


@pytest.mark.parametrize(
    ("version", "expected"),
    [("5.7.0", True), ("5.7.12", True), ("5.7.1rc1", True), ("5.8.0", False), ("5.6.2", False),
     ("6.0.0", False), ("5.10.0", False), ("nonsense", False)],
)  # fmt: skip
def test_the_supported_range_is_the_5_7_series(version: str, expected: bool) -> None:
    assert supported(version) is expected


def test_the_package_requires_the_range_the_check_supports() -> None:
    project = tomllib.loads((ROOT / "runtime" / "pyproject.toml").read_text(encoding="utf-8"))["project"]

    celery_requirements = [r for r in project["dependencies"] if re.match(r"celery\b", r)]

    assert celery_requirements == [f"celery[redis]{SUPPORTED_CELERY}"]


def test_the_tested_and_shipped_celery_pins_are_in_the_supported_range() -> None:
    pins = {
        path: re.findall(r"^celery\[redis\]==(\S+)", (ROOT / path).read_text(encoding="utf-8"), re.MULTILINE)
        for path in ("requirements-dev.txt", "sample_app/requirements.txt")
    }

    assert all(versions and all(supported(v) for v in versions) for versions in pins.values()), pins
    assert supported(celery.__version__)


def test_a_pool_exception_is_unwrapped_from_billiards_real_wrapper() -> None:
    error = KeyError("lost")
    try:
        raise error
    except KeyError:
        info = ExceptionInfo()

    assert type(info.exception).__name__ == "ExceptionWithTraceback"
    assert unwrap_pool_exception(info.exception) is error
    assert unwrap_pool_exception(error) is error


def _sources() -> Iterator[tuple[str, ast.AST]]:
    for path in sorted(PACKAGE.rglob("*.py")):
        yield str(path.relative_to(ROOT)), ast.parse(path.read_text(encoding="utf-8"))


def _private_name(node: ast.AST) -> str | None:
    """The private attribute `node` reads on an object not its own (`x._a`, `getattr(x, "_a")`)."""
    if isinstance(node, ast.Attribute):
        own = isinstance(node.value, ast.Name) and node.value.id in ("self", "cls")
        name: object = None if own else node.attr
    elif (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id in ("getattr", "hasattr", "setattr", "delattr")
        and len(node.args) >= 2
        and isinstance(node.args[1], ast.Constant)
    ):
        name = node.args[1].value
    else:
        return None
    return name if isinstance(name, str) and name.startswith("_") and not name.startswith("__") else None


def test_every_private_attribute_the_package_reads_on_celery_objects_is_checked() -> None:
    checked = {internal.name.rsplit(".", 1)[1] for internal in INTERNALS}
    used = {
        (name, path)
        for path, tree in _sources()
        for node in ast.walk(tree)
        if (name := _private_name(node)) is not None
    }

    assert {(name, path) for name, path in used if name not in checked | OWN_PRIVATE} == set()


def test_celery_classes_are_matched_by_name_or_path_only_through_the_checked_internals() -> None:
    paths = {internal.path for internal in INTERNALS}
    by_name = []
    by_path = []
    for path, tree in _sources():
        if path.endswith("celery_support.py"):
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Compare) and any(
                isinstance(side, ast.Attribute) and side.attr == "__name__"
                for side in (node.left, *node.comparators)
            ):
                by_name.append(path)
            if (
                isinstance(node, ast.Constant)
                and isinstance(node.value, str)
                and re.fullmatch(r"(celery|kombu|billiard)(\.\w+)+:\w+(\.\w+)*", node.value)
            ):
                by_path.append((path, node.value))

    assert by_name == []
    assert [(path, value) for path, value in by_path if value not in paths] == []
