"""Adversarial configs: thousands of malformed values through the loader, never a traceback.

Every shipped stage file is mutated key by key (wrong types, extremes, huge and control-character
strings, tables where scalars go and back, unknown and missing keys), and random damage is done to
the TOML text itself. Each result must be a valid config or a ConfigError whose every line names a key
path; a valid one must then size (or fail sizing with SizingError) and pass or fail the plan check with
ConfigError. Anything else is a traceback a user would see. Seeded, so a failure reproduces.
"""

from __future__ import annotations

import copy
import datetime
import random
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from infra.broker import SizingError, size_broker
from infra.config import (
    CONFIG_DIR,
    ConfigError,
    StageConfig,
    config_path,
    load_stage_config,
    parse_stage_config,
)
from infra.config.plan import check_broker_plan
from infra.config.workers import WorkerGroupConfig

STAGES = sorted(CONFIG_DIR.glob("*.toml"))

NASTY: list[Any] = [
    "",
    " ",
    "x" * 10_000,
    "\x00",
    "\u202edlrow",
    "${AWS::Region}",
    "../../etc/passwd",
    "a\nb",
    "0",
    "true",
    "-1",
    -1,
    0,
    1,
    2**63 - 1,
    -(2**63),
    1.5,
    -0.0,
    float("inf"),
    float("-inf"),
    float("nan"),
    True,
    False,
    [],
    [None.__class__.__name__],
    [1, 2, 3],
    [True, 2],
    [[[[[]]]]],
    ["a"] * 1000,
    {},
    {"x": 1},
    {"": ""},
    datetime.date(1979, 5, 27),
    datetime.datetime(1979, 5, 27, 7, 32, tzinfo=datetime.UTC),
    datetime.time(7, 32),
]


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """Every key and list index of a parsed TOML document, tables included."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield (*prefix, key)
            yield from _paths(value, (*prefix, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield (*prefix, index)
            yield from _paths(value, (*prefix, index))


def _model_paths(model: type[BaseModel], prefix: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    """Every key the models accept, set in the file or not (a group stands for all groups)."""
    for name, field in model.model_fields.items():
        yield (*prefix, name)
        annotation = field.annotation
        for inner in (annotation, *getattr(annotation, "__args__", ())):
            if isinstance(inner, type) and issubclass(inner, BaseModel):
                yield from _model_paths(inner, (*prefix, name))
        if name == "groups":
            yield from _model_paths(WorkerGroupConfig, (*prefix, name, "default"))


def _set(doc: Any, path: tuple[Any, ...], value: Any) -> Any:
    out = copy.deepcopy(doc)
    node = out
    for part in path[:-1]:
        if isinstance(node, dict) and not isinstance(node.get(part), (dict, list)):
            node[part] = {}
        node = node[part]
    node[path[-1]] = value
    return out


def _delete(doc: Any, path: tuple[Any, ...]) -> Any:
    out = copy.deepcopy(doc)
    node = out
    for part in path[:-1]:
        node = node[part]
    del node[path[-1]]
    return out


def _mutations(doc: dict[str, Any], rng: random.Random) -> Iterator[dict[str, Any]]:
    paths = list(_paths(doc))
    for path in [*paths, *_model_paths(StageConfig)]:
        for value in NASTY:
            yield _set(doc, path, value)
    for path in paths:
        yield _delete(doc, path)
        if isinstance(path[-1], str):
            # The same value under a near-miss key.
            yield _set(_delete(doc, path), (*path[:-1], path[-1] + "_"), 1)
    sections = [p for p in paths if len(p) == 1]
    for section in sections:
        yield (
            _set(doc, (*section, "unknown_key"), rng.choice(NASTY))
            if isinstance(doc[section[0]], dict)
            else doc
        )
    # Group names and tag keys are user-chosen: collide, empty, huge, odd characters.
    for name in ["", "-", "a" * 300, "Bulk", "bulk-", "bu--lk", "\x00", "default\x06\x163", "unacked"]:
        groups = doc.get("workers", {}).get("groups", {})
        if groups:
            yield _set(doc, ("workers", "groups"), {**groups, name: next(iter(groups.values()))})
        yield _set(doc, ("aws",), {"tags": {name: name}})
    for _ in range(300):
        mutated = doc
        for _ in range(rng.randint(2, 5)):
            current = list(_paths(mutated))
            if not current:
                break
            mutated = _set(mutated, rng.choice(current), rng.choice(NASTY))
        yield mutated


def _problems(raw: Any) -> list[str] | StageConfig:
    """The config, or the problems ConfigError reports; any other exception propagates."""
    try:
        return parse_stage_config(raw, source="fuzz.toml")
    except ConfigError as exc:
        return exc.problems


def _check(raw: Any) -> None:
    result = _problems(raw)
    if isinstance(result, StageConfig):
        _check_plan(result)
        return
    assert result, raw
    for problem in result:
        assert isinstance(problem, str), raw
        assert problem.strip(), raw
        assert len(problem) < 2_000, problem[:200]
        assert ": " in problem, problem


def _check_plan(config: StageConfig) -> None:
    try:
        sizing = size_broker(config.broker)
    except SizingError:
        return
    try:
        check_broker_plan(config, sizing)
    except ConfigError:
        return


@pytest.mark.parametrize("stage", STAGES, ids=[p.stem for p in STAGES])
def test_malformed_values_never_raise_anything_but_config_error(stage: Path) -> None:
    doc = tomllib.loads(stage.read_text(encoding="utf-8"))
    rng = random.Random(f"celery-fleet:{stage.stem}")
    count = 0
    for raw in _mutations(doc, rng):
        _check(raw)
        count += 1
    assert count > 1_000


def test_damaged_toml_text_never_raises_anything_but_config_error(tmp_path: Path) -> None:
    rng = random.Random("celery-fleet:text")
    sources = [p.read_bytes() for p in STAGES]
    blobs: list[bytes] = [b"", b"\xff\xfe\x00", b"[" * 5_000, b"a = " + b"[" * 5_000, b"\x00" * 10]
    for _ in range(300):
        text = bytearray(rng.choice(sources))
        for _ in range(rng.randint(1, 8)):
            at = rng.randrange(len(text))
            action = rng.randrange(3)
            if action == 0:
                del text[at : at + rng.randint(1, 20)]
            elif action == 1:
                text[at:at] = rng.choice([b"=", b"[", b"]", b'"', b"\n", b"{", b"\xc3", b"1e999", b"nan"])
            else:
                text[at] = rng.randrange(256)
        blobs.append(bytes(text))
    path = tmp_path / "fuzz.toml"
    for blob in blobs:
        path.write_bytes(blob)
        try:
            config = load_stage_config(path)
        except ConfigError as exc:
            problems = exc.problems
        else:
            _check_plan(config)
            continue
        assert problems
        assert all(isinstance(p, str) for p in problems)


def test_a_directory_or_unreadable_path_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"cannot be read: Is a directory"):
        load_stage_config(tmp_path)


def test_bytes_that_are_not_utf8_are_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "latin1.toml"
    path.write_bytes('name = "caf\u00e9"\n'.encode("latin-1"))
    with pytest.raises(ConfigError, match=r"not UTF-8 text \(byte 11\): TOML files are UTF-8"):
        load_stage_config(path)


def test_a_path_with_a_nul_byte_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"cannot be read: embedded null byte"):
        load_stage_config(Path("stage\x00.toml"))


@pytest.mark.parametrize("stage", ["../config/dev", "/etc/passwd", "dev.toml"])
def test_a_stage_is_only_a_shipped_stage_name(stage: str) -> None:
    with pytest.raises(ConfigError, match=r"stages available: dev, prod$"):
        config_path(stage=stage, config=None)
