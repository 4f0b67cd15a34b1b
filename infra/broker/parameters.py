"""The broker's parameter group: names and values, checked against ElastiCache's documentation.

A wrong parameter name passes synth and fails only at deploy, so every name here is pinned by
tests/infra/test_broker_parameters.py against the families ElastiCache documents:
https://docs.aws.amazon.com/AmazonElastiCache/latest/dg/ParameterGroups.Engine.html
(sections "Valkey 8.x parameter changes", "Valkey 7.2 parameter changes", "Redis OSS 7 parameter
changes" and "Redis OSS 2.8.x ... list parameters"; list-compress-depth and list-max-ziplist-size /
list-max-listpack-size are modifiable and take effect without a reboot).
"""

from __future__ import annotations

# `noeviction`: Celery's `_kombu.binding.*` keys route messages to queues; an evicted binding makes
# published tasks vanish without an error. With noeviction a full broker refuses writes loudly instead.
MAXMEMORY_POLICY = "noeviction"

# Compress every list node except the head and tail (depth 1): producers LPUSH at the head and
# consumers BRPOP at the tail, so neither pays for decompression, while the queued middle (almost all
# of a backlog) is LZF-compressed. Measured 2.6x less memory per task (bench/broker_memory.py).
LIST_COMPRESS_DEPTH = 1

# -5 means list nodes of up to 64 KB: larger nodes compress better (more repetition per node). The
# measured gain over the default 8 KB (-2) is a further 20 %, at the cost of touching 64 KB per push or
# pop at the ends, which stay uncompressed.
LIST_NODE_SIZE = -5


def parameter_group_family(engine: str, engine_version: str) -> str:
    """The CacheParameterGroupFamily for an engine and major.minor version, e.g. valkey8, redis7."""
    major = engine_version.split(".")[0]
    return f"{engine}{major}"


# The list node-size parameter kept its pre-7 name in ElastiCache's Redis OSS 7 family; the Valkey
# families name it after the listpack encoding.
_LIST_NODE_SIZE_NAME = {
    "redis7": "list-max-ziplist-size",
    "valkey7": "list-max-listpack-size",
    "valkey8": "list-max-listpack-size",
}


def parameter_values(family: str) -> dict[str, str]:
    """The parameters set on the broker's group for `family`."""
    return {
        "maxmemory-policy": MAXMEMORY_POLICY,
        "list-compress-depth": str(LIST_COMPRESS_DEPTH),
        _LIST_NODE_SIZE_NAME[family]: str(LIST_NODE_SIZE),
    }


def redis_server_settings() -> dict[str, str]:
    """The same settings as redis-server config directives, for benchmarks and tests on a local server."""
    return {
        "maxmemory-policy": MAXMEMORY_POLICY,
        "list-compress-depth": str(LIST_COMPRESS_DEPTH),
        "list-max-listpack-size": str(LIST_NODE_SIZE),
    }
