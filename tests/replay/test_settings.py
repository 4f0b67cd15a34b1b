"""The replay function's environment: what is accepted, and errors that name the variable and its value.

The same idiom as the queue-depth publisher's (broker_access.settings): the two in-VPC Lambdas read
the broker's variables with one model and fail a cold start with the same kind of message.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Iterator, Mapping
from types import ModuleType

import boto3
import pytest
import redis
from aws_lambda_powertools.utilities import parameters
from moto import mock_aws
from replay.settings import Settings, SettingsError, load_settings

from tests.replay.conftest import BUCKET, REGION

SECRET_ARN = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:broker-auth-AbCdEf"
LOCAL = {"FAILED_MESSAGES_BUCKET": BUCKET, "BROKER_URL": "redis://localhost/0"}
IN_AWS = {
    "FAILED_MESSAGES_BUCKET": BUCKET,
    "BROKER_HOST": "master.broker.abc123.euw1.cache.amazonaws.com",
    "BROKER_PORT": "6379",
    "BROKER_AUTH_SECRET_ARN": SECRET_ARN,
}
VARIABLES = ("FAILED_MESSAGES_BUCKET", "BROKER_URL", "BROKER_HOST", "BROKER_PORT", "BROKER_AUTH_SECRET_ARN")

ColdStart = Callable[[Mapping[str, str]], ModuleType]


def with_(environment: Mapping[str, str], **changes: str) -> dict[str, str]:
    return {**environment, **changes}


def without(environment: Mapping[str, str], *names: str) -> dict[str, str]:
    return {name: value for name, value in environment.items() if name not in names}


def test_the_local_form_is_accepted() -> None:
    settings = load_settings(LOCAL)

    assert (settings.bucket, settings.broker_url) == (BUCKET, "redis://localhost/0")


def test_the_aws_form_is_accepted() -> None:
    settings = load_settings(IN_AWS)

    assert (settings.broker_host, settings.broker_port, settings.broker_auth_secret_arn) == (
        IN_AWS["BROKER_HOST"],
        6379,
        SECRET_ARN,
    )
    assert settings.broker_url is None


@pytest.mark.parametrize(
    ("environment", "message"),
    [
        (without(LOCAL, "FAILED_MESSAGES_BUCKET"), "FAILED_MESSAGES_BUCKET is not set"),
        (with_(LOCAL, FAILED_MESSAGES_BUCKET="Failed_Messages"), "FAILED_MESSAGES_BUCKET='Failed_Messages'"),
        (with_(LOCAL, FAILED_MESSAGES_BUCKET="ab"), "FAILED_MESSAGES_BUCKET='ab': not an S3 bucket name"),
        (with_(IN_AWS, BROKER_PORT="tls"), "BROKER_PORT='tls': not a TCP port"),
        (without(IN_AWS, "BROKER_AUTH_SECRET_ARN"), "broker not configured: BROKER_AUTH_SECRET_ARN not set"),
        (without(LOCAL, "BROKER_URL"), "BROKER_HOST, BROKER_PORT, BROKER_AUTH_SECRET_ARN not set"),
        (with_(IN_AWS, BROKER_URL="redis://localhost"), "BROKER_URL is set together with BROKER_HOST"),
    ],
)
def test_a_bad_environment_is_rejected_naming_the_variable_and_value(
    environment: dict[str, str], message: str
) -> None:
    with pytest.raises(SettingsError) as raised:
        load_settings(environment)

    assert str(raised.value).startswith("invalid replay environment: ")
    assert message in str(raised.value)


def test_a_rejected_broker_url_does_not_show_its_password() -> None:
    with pytest.raises(SettingsError) as raised:
        load_settings(with_(LOCAL, BROKER_URL="http://:s3cr3t-t0ken@broker:6379/0"))

    assert "s3cr3t-t0ken" not in str(raised.value)
    assert "BROKER_URL='http://:***@broker:6379/0'" in str(raised.value)


def test_the_model_reads_variables_by_their_names() -> None:
    assert {field.alias for field in Settings.model_fields.values()} == set(VARIABLES)


@pytest.fixture
def cold_start(monkeypatch: pytest.MonkeyPatch) -> Iterator[ColdStart]:
    """Import `replay.handler` afresh with the given Lambda environment (and moto), as a cold start does."""
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": REGION,
    }.items():
        monkeypatch.setenv(name, value)

    def start(environment: Mapping[str, str]) -> ModuleType:
        for name in (*VARIABLES, "POWERTOOLS_SERVICE_NAME"):
            monkeypatch.delenv(name, raising=False)
        for name, value in environment.items():
            monkeypatch.setenv(name, value)
        sys.modules.pop("replay.handler", None)
        parameters.clear_caches()  # type: ignore[no-untyped-call]
        return importlib.import_module("replay.handler")

    with mock_aws():
        yield start
    sys.modules.pop("replay.handler", None)
    parameters.clear_caches()  # type: ignore[no-untyped-call]


def test_a_cold_start_with_a_bad_environment_fails_naming_the_variable(cold_start: ColdStart) -> None:
    with pytest.raises(SettingsError, match="BROKER_PORT='0': not a TCP port"):
        cold_start(with_(IN_AWS, BROKER_PORT="0"))


def test_the_log_lines_carry_the_service_the_stack_names(cold_start: ColdStart) -> None:
    module = cold_start(with_(LOCAL, POWERTOOLS_SERVICE_NAME="replay"))

    assert module.logger.service == "replay"


def test_the_aws_form_connects_with_tls_verification_and_the_secret_token(cold_start: ColdStart) -> None:
    secrets = boto3.client("secretsmanager", region_name=REGION)
    arn = secrets.create_secret(Name="broker-auth", SecretString="first-token-0123456789")["ARN"]
    module = cold_start(with_(IN_AWS, BROKER_AUTH_SECRET_ARN=arn, BROKER_PORT="6380"))

    # Built, not connected: there is no TLS broker on this machine.
    pool = module.broker_client().connection_pool

    kwargs = pool.connection_kwargs
    assert issubclass(pool.connection_class, redis.SSLConnection)
    assert (kwargs["host"], kwargs["port"]) == (IN_AWS["BROKER_HOST"], 6380)
    assert kwargs["password"] == "first-token-0123456789"
    assert (kwargs["ssl_cert_reqs"], kwargs["ssl_check_hostname"]) == ("required", True)
