"""Each construct alone in a bare Stack with minimal typed inputs (tests/support/bare.py)."""
