"""Helpers shared by the test suite: real redis-server processes, stage configs, synthesized templates."""
