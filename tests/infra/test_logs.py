"""Log retention: the days the config accepts are exactly those CDK can express."""

from __future__ import annotations

from infra.config.common import LOG_RETENTION_DAYS
from infra.logs import _BY_DAYS


def test_every_accepted_retention_maps_to_a_cdk_value_and_back() -> None:
    assert tuple(_BY_DAYS) == LOG_RETENTION_DAYS
