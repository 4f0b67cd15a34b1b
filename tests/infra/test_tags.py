"""Stage tags: the user's reach every resource, the stage's own survive, and no resource passes 50."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from infra.config.aws import MAX_TAGS_PER_RESOURCE, OWN_TAGS, STAGE_TAG
from tests.support.synth import config_with, synth


def _tag_keys(resource: dict[str, Any]) -> list[str] | None:
    tags = resource.get("Properties", {}).get("Tags")
    if isinstance(tags, list):
        return [tag["Key"] for tag in tags if isinstance(tag, dict) and "Key" in tag]
    if isinstance(tags, dict):
        return list(tags)
    return None


def test_the_most_user_tags_allowed_keep_every_resource_within_the_limit(tmp_path: Path) -> None:
    tags = {f"team-{i}": f"value {i}" for i in range(MAX_TAGS_PER_RESOURCE - len(OWN_TAGS))}
    stage = synth(config_with("dev", {"aws": {"tags": tags}}), tmp_path, nag=False)
    counts: dict[str, int] = {}
    for which in ("stateful", "stateless"):
        for logical_id, resource in stage.template(which).to_json()["Resources"].items():
            keys = _tag_keys(resource)
            if keys is None:
                continue
            assert set(keys) - set(OWN_TAGS) == set(tags), logical_id
            assert STAGE_TAG in keys, logical_id
            counts[logical_id] = len(keys)
    assert counts
    # The fullest resource (a created subnet) is exactly at the limit: OWN_TAGS is neither short nor
    # padded.
    assert max(counts.values()) == MAX_TAGS_PER_RESOURCE
