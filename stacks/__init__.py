"""The stacks of one stage: they compose constructs and grant across them, and define nothing else."""
