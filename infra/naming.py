"""Construct IDs from user-chosen names (worker groups, queries)."""

from __future__ import annotations


def pascal(name: str) -> str:
    """`bulk-import` -> `BulkImport`: a stable construct ID part for a config name."""
    return "".join(part.capitalize() for part in name.replace("_", "-").split("-"))
