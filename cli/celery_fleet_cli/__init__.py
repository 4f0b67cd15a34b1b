"""`celery-fleet`: the operator's command for a deployed celery-fleet stage (see `celery-fleet --help`)."""
