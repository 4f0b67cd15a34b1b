"""Rehearse a stage on one machine: the synthesized cloud assembly run end to end on loopback.

`scripts/rehearse -c stage=NAME` synthesizes the stage, then runs what its templates say (the broker,
AWS APIs on moto, one task per ECS service, each Lambda from its asset) and prints PASS/FAIL checks.
Everything it starts is read from the cloud assembly, never from the CDK code.
"""
