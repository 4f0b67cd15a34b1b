#!/usr/bin/env python3
"""celery-fleet's CDK app: `npx cdk synth -c stage=NAME` (default dev) or `-c config=PATH`."""

from __future__ import annotations

import sys
from pathlib import Path

from aws_cdk import App, Validations
from cdk_nag import AwsSolutionsChecks

from infra.broker import SizingError
from infra.config import ConfigError, config_path, load_stage_config
from stacks.stage import build_stage
from tools import cost


def main() -> int:
    app = App()
    try:
        path = config_path(stage=app.node.try_get_context("stage"), config=app.node.try_get_context("config"))
        config = load_stage_config(path)
        stage = build_stage(app, config)
    except (ConfigError, SizingError) as exc:
        print(f"celery-fleet: {exc}", file=sys.stderr)
        return 1
    # cdk-nag runs as a policy-validation plugin: synth fails on any finding not acknowledged in code.
    Validations.of(app).add_plugins(AwsSolutionsChecks(app))
    print(stage.summary(config), file=sys.stderr)
    assembly = app.synth()
    prices = app.node.try_get_context("prices")
    try:
        estimate = cost.estimate(
            config,
            {stack.stack_name: stack.template for stack in assembly.stacks},
            cost.load_prices(Path(prices) if prices else None),
        )
        print(cost.summary_line(estimate), file=sys.stderr)
    except cost.CostError as exc:
        # The estimate is advice: a price the table lacks must not stop a synth.
        print(f"  cost: no estimate ({exc})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
