"""Failed-message keeping and replay: the bucket workers keep messages in, the replay Lambda."""

from infra.replay.construct import FailedMessageReplay

__all__ = ["FailedMessageReplay"]
