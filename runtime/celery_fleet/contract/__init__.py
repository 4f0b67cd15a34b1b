"""Names shared by the worker package, the Lambdas and the CDK stacks.

This subpackage imports nothing beyond the standard library: the Lambdas bundle it, and the stacks
import it at synth, neither of which has Celery.
"""
