"""The broker URL, from the variables the stack gives every worker container.

Standard library only, like `celery_fleet.contract`: importing it loads no Celery.
"""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import quote

from celery_fleet.contract.worker_env import (
    BROKER_AUTH_TOKEN_ENV,
    BROKER_HOST_ENV,
    BROKER_PORT_ENV,
    BROKER_URL_ENV,
)

MAX_PORT = 65535


class BrokerConfigError(ValueError):
    """The environment does not say where the broker is."""


def broker_url_from_env(environ: Mapping[str, str]) -> str:
    """The Celery broker URL from `environ`.

    `CELERY_FLEET_BROKER_URL` wins when set. Otherwise host, port and AUTH token give
    `rediss://:TOKEN@HOST:PORT/0?ssl_cert_reqs=required`: TLS, with the server's certificate and host
    name verified (ElastiCache in-transit encryption), the token URL-quoted since Secrets Manager
    tokens may hold `@`, `/` or `:`.
    """
    url = environ.get(BROKER_URL_ENV, "").strip()
    if url:
        return url
    values = {name: environ.get(name, "").strip() for name in _STACK_VARIABLES}
    missing = [name for name, value in values.items() if not value]
    if missing:
        raise BrokerConfigError(
            f"broker not configured: {', '.join(missing)} not set. The worker service sets "
            f"{', '.join(_STACK_VARIABLES)}; for a local run set {BROKER_URL_ENV}=redis://localhost:6379/0."
        )
    port = values[BROKER_PORT_ENV]
    if not port.isdigit() or not 0 < int(port) <= MAX_PORT:
        raise BrokerConfigError(f"{BROKER_PORT_ENV}={port!r} is not a TCP port (1-{MAX_PORT}).")
    token = quote(values[BROKER_AUTH_TOKEN_ENV], safe="")
    return f"rediss://:{token}@{values[BROKER_HOST_ENV]}:{int(port)}/0?ssl_cert_reqs=required"


_STACK_VARIABLES = (BROKER_HOST_ENV, BROKER_PORT_ENV, BROKER_AUTH_TOKEN_ENV)
