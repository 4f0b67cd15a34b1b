"""The publisher's environment: what is accepted, and errors that name the variable and its value."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import ModuleType

import pytest
from queue_depth.settings import Settings, SettingsError, load_settings

SECRET_ARN = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:broker-auth-AbCdEf"
LOCAL = {
    "QUEUES": "default,reports",
    "METRIC_NAMESPACE": "CeleryFleet/dev",
    "BROKER_URL": "redis://localhost/0",
}
IN_AWS = {
    "QUEUES": "default",
    "METRIC_NAMESPACE": "CeleryFleet/prod",
    "BROKER_HOST": "master.broker.abc123.euw1.cache.amazonaws.com",
    "BROKER_PORT": "6379",
    "BROKER_AUTH_SECRET_ARN": SECRET_ARN,
}


def with_(base: Mapping[str, str], **changes: str) -> dict[str, str]:
    return {**base, **changes}


def without(base: Mapping[str, str], *names: str) -> dict[str, str]:
    return {name: value for name, value in base.items() if name not in names}


def test_local_form_keeps_the_url_and_polls_once_a_minute() -> None:
    settings = load_settings(LOCAL)

    assert settings.queues == ("default", "reports")
    assert settings.metric_namespace == "CeleryFleet/dev"
    assert settings.broker_url == "redis://localhost/0"
    assert (settings.poll_interval_s, settings.high_resolution) == (60, False)


def test_aws_form_reads_host_port_and_secret_arn() -> None:
    settings = load_settings(IN_AWS)

    assert (settings.broker_host, settings.broker_port, settings.broker_auth_secret_arn) == (
        IN_AWS["BROKER_HOST"],
        6379,
        SECRET_ARN,
    )
    assert settings.broker_url is None


def test_queue_names_are_trimmed_and_may_hold_odd_ascii_characters() -> None:
    settings = load_settings(with_(LOCAL, QUEUES=" default , reports:eu/v2 (bulk) #1 "))

    assert settings.queues == ("default", "reports:eu/v2 (bulk) #1")


def test_ten_second_interval_means_high_resolution() -> None:
    settings = load_settings(with_(LOCAL, POLL_INTERVAL_S="10"))

    assert (settings.poll_interval_s, settings.high_resolution) == (10, True)


def test_settings_are_frozen() -> None:
    settings = load_settings(LOCAL)

    with pytest.raises(ValueError, match="frozen"):
        settings.queues = ("other",)


@pytest.mark.parametrize(
    ("environment", "message"),
    [
        (without(LOCAL, "QUEUES"), "QUEUES is not set"),
        (with_(LOCAL, QUEUES=" , "), "QUEUES=' , ': no queue named"),
        (with_(LOCAL, QUEUES="a,,b"), "QUEUES='a,,b': an empty queue name between commas"),
        (with_(LOCAL, QUEUES="a,b,a"), "QUEUES='a,b,a': a listed more than once"),
        (
            with_(LOCAL, QUEUES="default,tâches"),
            "QUEUES='default,tâches': queue 'tâches' cannot be a CloudWatch",
        ),
        (without(LOCAL, "METRIC_NAMESPACE"), "METRIC_NAMESPACE is not set"),
        (with_(LOCAL, METRIC_NAMESPACE="AWS/EC2"), "METRIC_NAMESPACE='AWS/EC2': not a CloudWatch namespace"),
        (
            with_(LOCAL, POLL_INTERVAL_S="7"),
            "POLL_INTERVAL_S='7': must be a whole number of seconds that divides 60",
        ),
        (with_(LOCAL, POLL_INTERVAL_S="ten"), "POLL_INTERVAL_S='ten': must be a whole number"),
        (
            with_(LOCAL, BROKER_URL="amqp://guest@rabbit//"),
            "BROKER_URL='amqp://guest@rabbit//': not a redis://",
        ),
        (with_(IN_AWS, BROKER_PORT="70000"), "BROKER_PORT='70000': not a TCP port"),
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

    assert message in str(raised.value)


def test_every_bad_variable_is_named_at_once() -> None:
    with pytest.raises(SettingsError) as raised:
        load_settings(with_(LOCAL, QUEUES="a,,b", POLL_INTERVAL_S="7"))

    assert "QUEUES='a,,b'" in str(raised.value)
    assert "POLL_INTERVAL_S='7'" in str(raised.value)


def test_a_rejected_broker_url_does_not_show_its_password() -> None:
    with pytest.raises(SettingsError) as raised:
        load_settings(with_(LOCAL, BROKER_URL="http://:s3cr3t-t0ken@broker:6379/0"))

    assert "s3cr3t-t0ken" not in str(raised.value)
    assert "BROKER_URL='http://:***@broker:6379/0'" in str(raised.value)


def test_a_cold_start_with_a_bad_environment_fails_naming_the_variable(
    cold_start: Callable[[Mapping[str, str]], ModuleType], aws: None
) -> None:
    with pytest.raises(SettingsError, match="POLL_INTERVAL_S='45'"):
        cold_start(with_(LOCAL, POLL_INTERVAL_S="45"))


def test_the_log_lines_carry_the_service_the_stack_names(
    cold_start: Callable[[Mapping[str, str]], ModuleType], aws: None
) -> None:
    module = cold_start(with_(LOCAL, POWERTOOLS_SERVICE_NAME="queue-depth-publisher"))

    assert module.logger.service == "queue-depth-publisher"


def test_the_model_reads_variables_by_their_names() -> None:
    assert {field.alias for field in Settings.model_fields.values()} == {
        "QUEUES",
        "METRIC_NAMESPACE",
        "BROKER_URL",
        "BROKER_HOST",
        "BROKER_PORT",
        "BROKER_AUTH_SECRET_ARN",
        "POLL_INTERVAL_S",
        "WORKER_GROUPS",
    }


def test_worker_groups_that_are_not_json_name_the_variable() -> None:
    with pytest.raises(SettingsError, match="WORKER_GROUPS: not JSON"):
        load_settings(with_(LOCAL, WORKER_GROUPS="[{oops"))


def test_worker_groups_unset_start_no_workers() -> None:
    assert load_settings(LOCAL).worker_groups == ()
