"""Generators of the project's derived documents (config reference, alarm inventory)."""
