"""Parameter names are pinned: ElastiCache rejects an unknown name only at deploy time."""

from __future__ import annotations

import pytest

from infra.broker.parameters import FAMILIES, parameter_group_family, parameter_values
from infra.config.broker import ENGINE_VERSIONS

# Every name below is listed as modifiable for these families on the "Engine specific parameters"
# page cited in infra/broker/parameters.py. Adding a parameter means checking it there first.
DOCUMENTED_MODIFIABLE = {"maxmemory-policy", "list-compress-depth"}


def test_only_documented_modifiable_parameters_are_set() -> None:
    assert set(parameter_values()) <= DOCUMENTED_MODIFIABLE


def test_the_list_node_size_is_not_set_because_elasticache_does_not_expose_it() -> None:
    assert not {"list-max-ziplist-size", "list-max-listpack-size"} & set(parameter_values())


def test_values_are_noeviction_and_compress_depth_one() -> None:
    assert parameter_values() == {"maxmemory-policy": "noeviction", "list-compress-depth": "1"}


@pytest.mark.parametrize(
    ("engine", "version", "family"),
    [
        ("valkey", "9.0", "valkey9"),
        ("valkey", "8.2", "valkey8"),
        ("valkey", "7.2", "valkey7"),
        ("redis", "7.1", "redis7"),
    ],
)
def test_family_follows_engine_major_version(engine: str, version: str, family: str) -> None:
    assert parameter_group_family(engine, version) == family


def test_every_allowed_engine_version_has_a_documented_family() -> None:
    for engine, versions in ENGINE_VERSIONS.items():
        for version in versions:
            assert parameter_group_family(engine, version) in FAMILIES
