"""What both in-VPC Lambdas (queue_depth, replay) share to reach the broker: the names of its
environment variables, their validation, and the TLS client options.

Bundled beside each of them (infra/lambda_code.py, `shared=`), importable as `broker_access`.
"""
