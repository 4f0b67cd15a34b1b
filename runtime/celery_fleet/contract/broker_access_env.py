"""The broker's environment variables, as an in-VPC Lambda reads them and as the stack sets them.

Standard library only: the stack imports it at synth (infra/lambda_code.py; `Broker.lambda_environment`
sets the names), the Lambdas at cold start (broker_access.settings reads them).
"""

from __future__ import annotations

from typing import Final

# A redis://, rediss:// or unix:// URL used as is: local runs and tests. The stack never sets it.
BROKER_URL: Final = "BROKER_URL"
# The broker's primary endpoint, its port, and the Secrets Manager secret holding its AUTH token.
BROKER_HOST: Final = "BROKER_HOST"
BROKER_PORT: Final = "BROKER_PORT"
BROKER_AUTH_SECRET_ARN: Final = "BROKER_AUTH_SECRET_ARN"

# What the stack sets on every in-VPC Lambda.
STACK_SETS: Final = frozenset({BROKER_HOST, BROKER_PORT, BROKER_AUTH_SECRET_ARN})
# Every broker variable the Lambdas read.
READS: Final = STACK_SETS | {BROKER_URL}
