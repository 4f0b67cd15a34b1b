"""The broker's parameter group: names and values, checked against ElastiCache's documentation.

A wrong parameter name passes synth and fails only at deploy, so the names here are pinned by
tests/infra/test_broker_parameters.py. Reference: "Engine specific parameters",
https://docs.aws.amazon.com/AmazonElastiCache/latest/dg/ParameterGroups.Engine.html
- `maxmemory-policy`: modifiable in every family, applied immediately; ElastiCache's default is
  `volatile-lru`.
- `list-compress-depth`: added in 3.2.4, modifiable (allowed 0 and up), applied immediately; none of
  the later sections (Redis OSS 7, Valkey 7.2, 8.0, 8.1, 8.2, 9.0) removes it, and each family inherits
  the parameters of the one before it.
- The list node size is NOT exposed: the page documents only `list-max-ziplist-size`, as
  "Modifiable: No" (and listed among the parameters removed in Redis OSS 7); `list-max-listpack-size`
  appears in no ElastiCache table. Nodes keep the engine default of 8 KB (-2), and the sizing model uses
  the figure measured with that default.
"""

from __future__ import annotations

# `noeviction`: Celery's `_kombu.binding.*` keys route messages to queues; an evicted binding makes
# published tasks vanish without an error. With noeviction a full broker refuses writes loudly instead.
MAXMEMORY_POLICY = "noeviction"

# Compress every list node except the head and tail (depth 1): producers LPUSH at the head and
# consumers BRPOP at the tail, so neither pays for decompression, while the queued middle (almost all
# of a backlog) is LZF-compressed. Measured 2.6x less memory per task (bench/broker_memory.py).
LIST_COMPRESS_DEPTH = 1

# Families whose parameter tables list both parameters above as modifiable.
FAMILIES = ("redis7", "valkey7", "valkey8", "valkey9")


def parameter_group_family(engine: str, engine_version: str) -> str:
    """The CacheParameterGroupFamily for an engine and major.minor version, e.g. valkey8, redis7."""
    family = f"{engine}{engine_version.split('.', maxsplit=1)[0]}"
    if family not in FAMILIES:
        raise ValueError(f"no parameter reference for family {family!r}; known: {', '.join(FAMILIES)}")
    return family


def parameter_values() -> dict[str, str]:
    """The parameters set on the broker's group (the same in every supported family)."""
    return {"maxmemory-policy": MAXMEMORY_POLICY, "list-compress-depth": str(LIST_COMPRESS_DEPTH)}
