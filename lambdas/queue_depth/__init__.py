"""Queue-depth publisher Lambda: Celery's Redis queue depths and ages as CloudWatch metrics."""
