"""celery-fleet's CDK constructs and the typed stage configuration they are built from."""
