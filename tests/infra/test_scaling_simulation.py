"""The scaling policies as synthesized, driven by queue traces (tools.scaling_response.simulate).

The simulation reads each group's policies from the prod template (poll interval, from-zero steps,
target, surplus window and steps, cooldowns, idle period) and plays minute-by-minute traces through
them, with ECS stopping only workers that hold no scale-in protection.
"""

from __future__ import annotations

import math

import pytest

from tests.support.synth import Synthesized
from tools.scaling_response import GroupScaling, Simulation, groups_from_template, response, simulate

TASK_S = 2.0


@pytest.fixture(scope="module")
def groups(prod: Synthesized) -> dict[str, GroupScaling]:
    return {group.name: group for group in groups_from_template(prod.template("stateless").to_json())}


def drained_at(run: Simulation) -> int:
    return next(step.minute for step in run.steps if step.minute > 0 and step.waiting == 0)


def test_a_burst_of_one_and_a_half_million_tasks_never_exceeds_max_tasks(
    groups: dict[str, GroupScaling],
) -> None:
    default = groups["default"]
    run = simulate(default, [1_500_000] + [0] * 219, task_s=TASK_S)

    assert run.most_workers == default.max_tasks
    assert max(step.desired for step in run.steps) == default.max_tasks
    assert run.interrupted_tasks == 0
    # 40 workers x 8 processes at 2 s a task: 9,600 tasks a minute, about 160 minutes.
    assert 150 <= drained_at(run) <= 175
    assert run.steps[-1].running == default.min_tasks


def test_a_trickle_after_a_burst_gets_the_size_it_needs_within_fifteen_minutes(
    groups: dict[str, GroupScaling],
) -> None:
    default = groups["default"]
    trickle_per_minute = 60  # one task a second, each 2 s: about 2 in flight, one worker's work
    run = simulate(default, [200_000] + [trickle_per_minute] * 89, task_s=TASK_S)
    needed = math.ceil(
        trickle_per_minute / default.backlog_per_task + trickle_per_minute * TASK_S / 60 / default.processes
    )

    drained = drained_at(run)
    after = [step for step in run.steps if step.minute >= drained + 15]
    assert after
    assert {step.running for step in after} == {max(needed, default.min_tasks)}
    # The trickle is served: nothing piles up while the fleet shrinks.
    assert all(step.waiting <= trickle_per_minute for step in run.steps if step.minute >= drained)
    assert run.interrupted_tasks == 0


def test_a_sawtooth_scales_out_and_back_in_on_every_tooth(groups: dict[str, GroupScaling]) -> None:
    default = groups["default"]
    tooth = [50_000] + [0] * 39
    run = simulate(default, tooth * 4, task_s=TASK_S)

    assert run.most_workers <= default.max_tasks
    for start in range(0, 160, 40):
        running = [step.running for step in run.steps if start <= step.minute < start + 40]
        assert max(running) > default.min_tasks + 10
        assert running[-1] == default.min_tasks
    assert run.interrupted_tasks == 0


def test_an_idle_group_stays_at_min_tasks(groups: dict[str, GroupScaling]) -> None:
    for group in groups.values():
        run = simulate(group, [0] * 60, task_s=TASK_S)

        assert {step.desired for step in run.steps} == {group.min_tasks}
        assert run.stopped_workers == 0


def test_a_group_at_zero_requests_its_first_worker_within_one_poll(groups: dict[str, GroupScaling]) -> None:
    bulk = groups["bulk"]
    assert bulk.min_tasks == 0
    run = simulate(bulk, [1] + [0] * 29, task_s=TASK_S)

    assert run.steps[0].desired == 1
    assert run.steps[-1].desired == 0
    assert run.interrupted_tasks == 0


@pytest.mark.parametrize("name", ["default", "bulk"])
def test_the_printed_response_meets_issue_10s_goal_at_one_minute_resolution(
    groups: dict[str, GroupScaling], name: str
) -> None:
    # prod publishes per minute: the first scaling request at most 70 s after the first task.
    assert response(groups[name]).first_request_worst_s <= 70


def test_the_printed_response_meets_issue_10s_goal_at_ten_second_resolution(
    prod_high_resolution: Synthesized,
) -> None:
    template = prod_high_resolution.template("stateless").to_json()

    for group in groups_from_template(template):
        assert group.poll_interval_s == 10
        # At most 20 s from the first queued task to the first scaling request.
        assert response(group).first_request_worst_s <= 20


def test_ten_second_alarm_windows_simulate_as_the_same_minutes(
    groups: dict[str, GroupScaling], prod_high_resolution: Synthesized
) -> None:
    template = prod_high_resolution.template("stateless").to_json()
    for fast in groups_from_template(template):
        slow = groups[fast.name]
        assert (fast.surplus_period_s, fast.idle_period_s) == (10, 10)
        assert (fast.surplus_minutes, fast.idle_minutes) == (slow.surplus_minutes, slow.idle_minutes)
        trace = [200_000] + [60] * 89
        assert (
            simulate(fast, trace, task_s=TASK_S).steps[-1].running
            == simulate(slow, trace, task_s=TASK_S).steps[-1].running
        )
