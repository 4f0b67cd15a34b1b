"""Every shipped stage synthesized once per session, as the alarm inventory does it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

from tools.alarm_inventory import stage_templates


@pytest.fixture(scope="session")
def templates() -> Mapping[str, Mapping[str, Mapping[str, Any]]]:
    """Stage name -> stack name -> template."""
    return stage_templates()
