"""Checks every command runs on its arguments before any work: a bad argument costs nothing."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def out_dir(path: str | os.PathLike, flag: str = "--out") -> Path:
    """`path` as an output directory: created if absent, refused (naming `flag`) when it is a
    file or cannot be written."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise ValueError(f"{flag} {path}: exists and is not a directory; give a directory")
    try:
        p.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=p, prefix=".write-test-"):
            pass
    except OSError as e:
        raise ValueError(f"{flag} {path}: cannot write there ({e.strerror or e})") from None
    return p


def positive(value, flag: str, allow_zero: bool = False):
    """`value` when > 0 (or >= 0), else a ValueError naming `flag`."""
    if value is not None and (value < 0 or (value == 0 and not allow_zero)):
        raise ValueError(f"{flag} must be {'>= 0' if allow_zero else 'positive'}, got {value}")
    return value


def data_dirs(arg: list[str], flag: str = "--data") -> list[str]:
    """Trajectory sources as given: 'starter' and 'v2' are the datasets shipped with the package;
    every other entry must exist (a file or directory), else a ValueError naming it."""
    from lrpilot.collect import shipped_dataset

    out = [str(shipped_dataset(a)) if a in ("starter", "v2") else a for a in arg]
    missing = [a for a in out if not Path(a).exists()]
    if missing:
        raise ValueError(f"{flag}: no such trajectory file or directory: {', '.join(missing)}")
    return out


def resolve_ckpt(path: str, kind: str = "worldmodel") -> str:
    """'pretrained' -> the shipped checkpoint of `kind`; anything else is a path."""
    from lrpilot import checkpoints

    return str(checkpoints.pretrained(kind)) if path == "pretrained" else path


def out_parent(path: str | os.PathLike, flag: str = "--out") -> Path:
    """`path` for a checkpoint directory written later: its parent must be a writable directory,
    and `path` itself must not be a plain file."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise ValueError(f"{flag} {path}: exists and is not a directory; give a checkpoint directory")
    out_dir(p.parent if str(p.parent) else ".", flag)
    return p
