"""A sample Celery app run by celery-fleet: an API-like task fanning out to sub-tasks, a flaky one."""
