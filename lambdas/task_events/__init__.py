"""Task-event ingest Lambda: worker task-event lines in, EMF metrics and failed-task records out."""
