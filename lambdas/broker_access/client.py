"""The broker as the stack gives it: TLS to its endpoint, certificate and host name verified, with the
AUTH token read from Secrets Manager (through Powertools' cache, so a rotated token is picked up
within AUTH_TOKEN_MAX_AGE_S, without a cold start)."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities import parameters
from celery_fleet.contract import broker_access_env as env

from .settings import STACK_FORM, BrokerSettings, SettingsError

AUTH_TOKEN_MAX_AGE_S = 300


def tls_options(settings: BrokerSettings) -> dict[str, Any]:
    """redis-py connection options for the stack's broker: host, port, AUTH token, TLS verification.

    The caller picks the TLS connection class (`ssl=True` on redis.Redis, or an SSLConnection class).
    """
    host, port, secret_arn = settings.broker_host, settings.broker_port, settings.broker_auth_secret_arn
    if host is None or port is None or secret_arn is None:
        # Settings refuse a partial broker at cold start; this is BROKER_URL's form.
        raise SettingsError(f"the broker is given by {env.BROKER_URL}, not by {STACK_FORM}")
    return {
        "host": host,
        "port": port,
        "password": parameters.get_secret(secret_arn, max_age=AUTH_TOKEN_MAX_AGE_S),
        "ssl_cert_reqs": "required",
        "ssl_check_hostname": True,
    }
