"""configure's settings, its validation, and the broker URL from the environment."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import celery_fleet
import pytest
from celery import Celery
from celery_fleet import events
from celery_fleet.broker import BrokerConfigError, broker_url_from_env
from celery_fleet.heartbeat import ConsumingHeartbeat
from celery_fleet.limits import limit_problems

STACK_ENV = {
    "CELERY_FLEET_BROKER_HOST": "master.fleet.abc123.euw1.cache.amazonaws.com",
    "CELERY_FLEET_BROKER_PORT": "6379",
    "CELERY_FLEET_BROKER_AUTH_TOKEN": "s3cr:et/t@ken+",
}
LOCAL_URL = "redis://127.0.0.1:6399/0"


@pytest.fixture
def app() -> Iterator[Celery]:
    celery_app = Celery("settings-test", set_as_current=False)
    yield celery_app
    celery_app.close()


def configure(app: Celery, **kwargs: Any) -> celery_fleet.FleetSettings:
    kwargs.setdefault("environ", {"CELERY_FLEET_BROKER_URL": LOCAL_URL})
    return celery_fleet.configure(app, task_events=False, **kwargs)


def test_broker_url_from_the_stack_uses_tls_and_quotes_the_token() -> None:
    assert broker_url_from_env(STACK_ENV) == (
        "rediss://:s3cr%3Aet%2Ft%40ken%2B@master.fleet.abc123.euw1.cache.amazonaws.com:6379/0"
        "?ssl_cert_reqs=required"
    )


def test_broker_url_variable_wins_over_the_stack_variables() -> None:
    assert broker_url_from_env({**STACK_ENV, "CELERY_FLEET_BROKER_URL": LOCAL_URL}) == LOCAL_URL


def test_broker_url_error_names_every_missing_variable() -> None:
    with pytest.raises(BrokerConfigError) as caught:
        broker_url_from_env({"CELERY_FLEET_BROKER_HOST": "h"})
    assert str(caught.value).startswith(
        "broker not configured: CELERY_FLEET_BROKER_PORT, CELERY_FLEET_BROKER_AUTH_TOKEN not set."
    )
    assert "CELERY_FLEET_BROKER_URL=redis://localhost:6379/0" in str(caught.value)


def test_broker_url_rejects_a_port_that_is_not_one() -> None:
    with pytest.raises(BrokerConfigError, match=r"CELERY_FLEET_BROKER_PORT='6379x' is not a TCP port"):
        broker_url_from_env({**STACK_ENV, "CELERY_FLEET_BROKER_PORT": "6379x"})


def test_token_survives_kombu_url_parsing(app: Celery) -> None:
    configure(app, environ=STACK_ENV)
    with app.connection_for_write() as connection:
        assert connection.password == STACK_ENV["CELERY_FLEET_BROKER_AUTH_TOKEN"]
        assert connection.ssl == {"ssl_cert_reqs": __import__("ssl").CERT_REQUIRED}


def test_production_defaults(app: Celery) -> None:
    fleet = configure(app)
    conf = app.conf
    assert conf.broker_url == LOCAL_URL
    assert conf.task_acks_late is True
    assert conf.task_reject_on_worker_lost is True
    assert conf.worker_prefetch_multiplier == 1
    assert conf.task_time_limit == 3600
    assert conf.task_ignore_result is True
    assert conf.result_backend is None
    assert conf.task_track_started is False
    assert conf.worker_soft_shutdown_timeout == 90
    assert conf.worker_enable_soft_shutdown_on_idle is False
    assert conf.broker_connection_retry_on_startup is True
    assert conf.broker_connection_max_retries is None
    assert conf.worker_cancel_long_running_tasks_on_connection_loss is False
    assert conf.broker_pool_limit == 10
    assert fleet.soft_shutdown_timeout_s == 90
    # 600 s countdown + 3600 s run + 300 s margin.
    assert fleet.visibility_timeout_s == 4500
    assert fleet.max_delay_s == 900


def test_transport_options(app: Celery) -> None:
    configure(app)
    options = app.conf.broker_transport_options
    assert options["visibility_timeout"] == 4500
    assert options["health_check_interval"] == 10
    assert options["socket_keepalive"] is True
    assert options["socket_keepalive_options"][socket.TCP_KEEPIDLE] == 60
    assert options["socket_timeout"] == 10
    assert options["socket_connect_timeout"] == 5
    assert options["retry_on_timeout"] is True


def test_visibility_timeout_follows_the_declared_limits(app: Celery) -> None:
    fleet = configure(app, max_task_runtime_s=7200, max_countdown_s=0, visibility_margin_s=60)
    assert fleet.visibility_timeout_s == 7260
    assert app.conf.task_time_limit == 7200


def test_stack_runtime_sets_the_time_limit_when_the_app_declares_none(app: Celery) -> None:
    fleet = configure(
        app, environ={"CELERY_FLEET_BROKER_URL": LOCAL_URL, "CELERY_FLEET_MAX_TASK_RUNTIME_S": "1800"}
    )
    assert app.conf.task_time_limit == 1800
    assert fleet.visibility_timeout_s == 600 + 1800 + 300


def test_visibility_covers_the_stack_runtime_above_the_apps_own(app: Celery) -> None:
    env = {"CELERY_FLEET_BROKER_URL": LOCAL_URL, "CELERY_FLEET_MAX_TASK_RUNTIME_S": "7200"}
    fleet = configure(app, environ=env, max_task_runtime_s=600)
    # Another worker group's tasks may run 7200 s; this app's own are killed at 600 s.
    assert app.conf.task_time_limit == 600
    assert fleet.visibility_timeout_s == 600 + 7200 + 300
    assert fleet.max_delay_s == 900


GROUP_ENV = {
    "CELERY_FLEET_BROKER_URL": LOCAL_URL,
    "CELERY_FLEET_MAX_TASK_RUNTIME_S": "3600",
    "CELERY_FLEET_TIME_LIMIT_S": "1800",
    "CELERY_FLEET_SOFT_TIME_LIMIT_S": "1500",
}


def test_the_worker_groups_limits_become_the_apps(app: Celery) -> None:
    fleet = configure(app, environ=GROUP_ENV)
    assert app.conf.task_time_limit == 1800
    assert app.conf.task_soft_time_limit == 1500
    # Still sized for the longest group on the broker.
    assert fleet.visibility_timeout_s == 600 + 3600 + 300


def test_a_runtime_the_groups_limit_contradicts_is_refused(app: Celery) -> None:
    with pytest.raises(
        ValueError,
        match=r"max_task_runtime_s=600 contradicts CELERY_FLEET_TIME_LIMIT_S=1800, the worker group's",
    ):
        configure(app, environ=GROUP_ENV, max_task_runtime_s=600)


def test_a_soft_limit_above_the_hard_one_is_refused(app: Celery) -> None:
    with pytest.raises(
        ValueError, match=r"task_soft_time_limit=1500 exceeds the hard limit task_time_limit=600"
    ):
        configure(app, max_task_runtime_s=600, task_soft_time_limit=1500)


def test_limits_check_refuses_a_command_line_limit_the_app_overrides(app: Celery) -> None:
    configure(app, max_task_runtime_s=600)

    @app.task(name="settings_test.long")  # type: ignore[untyped-decorator]
    def long() -> None: ...

    problems = limit_problems(app.conf, [long], worker_time_limit=1800, worker_soft_time_limit=1500)
    assert problems[0] == (
        "the worker's --time-limit=1800 differs from the app's task_time_limit=600, which is what every "
        "task gets."
    )
    assert problems[1].startswith(
        "Soft time limit above the hard one for settings_test.long (soft 1500 s > hard 600 s)"
    )


def test_limits_check_accepts_the_groups_limits_on_both_sides(app: Celery) -> None:
    configure(app, environ=GROUP_ENV)

    @app.task(name="settings_test.within")  # type: ignore[untyped-decorator]
    def within() -> None: ...

    assert limit_problems(app.conf, [within], worker_time_limit=1800, worker_soft_time_limit=1500) == []


def test_stack_runtime_must_be_a_number(app: Celery) -> None:
    env = {"CELERY_FLEET_BROKER_URL": LOCAL_URL, "CELERY_FLEET_MAX_TASK_RUNTIME_S": "1h"}
    with pytest.raises(ValueError, match=r"CELERY_FLEET_MAX_TASK_RUNTIME_S='1h' is not a number of seconds"):
        configure(app, environ=env)


def test_soft_shutdown_follows_the_stop_timeout(app: Celery) -> None:
    assert configure(app, stop_timeout_s=60, shutdown_margin_s=15).soft_shutdown_timeout_s == 45


def test_keyword_overrides_a_setting(app: Celery) -> None:
    configure(app, worker_prefetch_multiplier=4, task_acks_late=False)
    assert app.conf.worker_prefetch_multiplier == 4
    assert app.conf.task_acks_late is False


def test_transport_option_overrides_merge_with_the_derived_ones(app: Celery) -> None:
    configure(app, broker_transport_options={"health_check_interval": 5, "visibility_timeout": 9000})
    options = app.conf.broker_transport_options
    assert options["health_check_interval"] == 5
    assert options["visibility_timeout"] == 9000
    assert options["socket_keepalive"] is True


def test_result_backend_keyword_keeps_results(app: Celery) -> None:
    configure(app, result_backend="redis://127.0.0.1:6399/1")
    assert app.conf.result_backend == "redis://127.0.0.1:6399/1"
    assert app.conf.task_ignore_result is False
    assert app.conf.task_track_started is True


def test_configure_wins_over_earlier_config_and_later_config_wins_over_it(app: Celery) -> None:
    app.config_from_object({"worker_prefetch_multiplier": 8, "task_acks_late": False})
    configure(app)
    assert app.conf.worker_prefetch_multiplier == 1
    assert app.conf.task_acks_late is True
    app.conf.worker_prefetch_multiplier = 2
    assert app.conf.worker_prefetch_multiplier == 2


def test_unknown_keyword_is_rejected(app: Celery) -> None:
    with pytest.raises(TypeError, match=r"unknown keyword\(s\) worker_prefetch_multiplyer"):
        configure(app, worker_prefetch_multiplyer=2)


def test_time_limit_above_the_declared_runtime_is_rejected(app: Celery) -> None:
    with pytest.raises(ValueError, match=r"task_time_limit=7200 exceeds max_task_runtime_s=3600.0: .* pass"):
        configure(app, task_time_limit=7200)


def test_visibility_timeout_below_the_limits_is_rejected(app: Celery) -> None:
    with pytest.raises(ValueError, match=r"visibility_timeout=3600 is below the longest run .* = 4200.0"):
        configure(app, broker_transport_options={"visibility_timeout": 3600})


def test_shutdown_margin_must_leave_a_soft_shutdown(app: Celery) -> None:
    with pytest.raises(ValueError, match=r"shutdown_margin_s=120 leaves no soft shutdown"):
        configure(app, shutdown_margin_s=120)


def test_missing_broker_is_reported_before_anything_is_applied(app: Celery) -> None:
    with pytest.raises(BrokerConfigError, match="CELERY_FLEET_BROKER_HOST"):
        configure(app, environ={})
    assert app.conf.task_acks_late is False


def test_heartbeat_step_is_added_once(app: Celery) -> None:
    configure(app, health_file="/tmp/a")
    fleet = configure(app, health_file="/tmp/b")
    steps = [step for step in app.steps["consumer"] if issubclass(step, ConsumingHeartbeat)]
    assert len(steps) == 1
    assert steps[0].path == "/tmp/b" == fleet.health_file


def test_healthcheck_false_adds_no_step(app: Celery) -> None:
    assert configure(app, healthcheck=False).health_file is None
    assert not [step for step in app.steps["consumer"] if issubclass(step, ConsumingHeartbeat)]


def test_package_import_does_not_import_celery() -> None:
    # The Lambdas import celery_fleet's stdlib parts without Celery installed.
    code = (
        "import sys, celery_fleet, celery_fleet.broker, celery_fleet.health, celery_fleet.retry;"
        "assert 'celery' not in sys.modules, sorted(m for m in sys.modules if m.startswith('celery'))"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_task_events_are_written_by_default(app: Celery, capfd: pytest.CaptureFixture[str]) -> None:
    celery_fleet.configure(app, environ={"CELERY_FLEET_BROKER_URL": LOCAL_URL}, healthcheck=False)
    try:

        @app.task(name="settings_test.add")  # type: ignore[untyped-decorator]
        def add(a: int, b: int) -> int:
            return a + b

        app.conf.task_always_eager = True
        result = add.delay(2, 3)
        assert result.get() == 5
        lines = [json.loads(line) for line in capfd.readouterr().out.splitlines() if line.startswith("{")]
        assert [line.get("task_id") for line in lines] == [result.id]
    finally:
        events.uninstall()


@pytest.mark.parametrize("option", ["global_keyprefix", "sep", "unacked_key", "unacked_index_key"])
def test_transport_options_that_move_the_publishers_keys_are_refused(option: str) -> None:
    app = Celery("keys")
    with pytest.raises(ValueError, match=rf"broker_transport_options {option} would move the keys"):
        configure(
            app,
            environ={"CELERY_FLEET_BROKER_URL": "redis://127.0.0.1:1/0"},
            broker_transport_options={option: "x"},
        )
