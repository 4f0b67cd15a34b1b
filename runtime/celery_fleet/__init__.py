"""Production settings, task-send stamps and a consuming health check for Celery workers.

`celery_fleet.configure(app)` is the one call a Celery app makes. Nothing here imports Celery at
package import time: the Lambdas bundle this package for its stdlib-only `contract` names, and they
have no Celery.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from celery_fleet.broker import broker_url_from_env
    from celery_fleet.celery_support import UnsupportedCeleryError
    from celery_fleet.reserve import BrokerFullError
    from celery_fleet.retry import RETRY_EXTERNAL
    from celery_fleet.settings import FleetSettings, configure

__all__ = [
    "RETRY_EXTERNAL",
    "BrokerFullError",
    "FleetSettings",
    "UnsupportedCeleryError",
    "broker_url_from_env",
    "configure",
]

# Public name -> module that defines it; loaded on first access only.
_LAZY = {
    "configure": "celery_fleet.settings",
    "FleetSettings": "celery_fleet.settings",
    "broker_url_from_env": "celery_fleet.broker",
    "BrokerFullError": "celery_fleet.reserve",
    "RETRY_EXTERNAL": "celery_fleet.retry",
    "UnsupportedCeleryError": "celery_fleet.celery_support",
}


def __getattr__(name: str) -> Any:
    module_name = _LAZY.get(name)
    if module_name is None:
        raise AttributeError(f"module 'celery_fleet' has no attribute {name!r}")
    value = getattr(importlib.import_module(module_name), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])
