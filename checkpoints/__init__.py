"""The one place that saves and restores world models and policies (see `checkpoints.store`)."""

from lrpilot.checkpoints.store import (
    FORMAT_VERSION,
    KINDS,
    Checkpoint,
    CheckpointError,
    exists,
    fingerprint,
    load,
    pretrained,
    save,
)

__all__ = ["FORMAT_VERSION", "KINDS", "Checkpoint", "CheckpointError", "exists", "fingerprint", "load", "pretrained", "save"]
