"""Collection of real training trajectories (see lrpilot.collect.job; the trajectory files are lrpilot.trajectories)."""

from pathlib import Path


def shipped_dataset(name: str) -> Path:
    """A dataset shipped with the package: 'starter' (a directory of run files) or 'v2' (the packed
    dataset v2, or its run files in a source checkout)."""
    if name == "starter":
        return starter_dataset()
    if name == "v2":
        here = Path(__file__).parent / "data"
        for p in (here / "v2.parquet", here / "v2"):
            if p.exists() and (p.is_file() or any(p.glob("*.parquet"))):
                return p
        raise FileNotFoundError(f"dataset v2 is missing at {here / 'v2.parquet'}; reinstall lrpilot or pass --data DIR")
    raise KeyError(name)


def starter_dataset() -> Path:
    """The trajectory dataset shipped with the package."""
    p = Path(__file__).parent / "data" / "starter"
    if not p.is_dir():
        raise FileNotFoundError(f"the starter dataset is missing at {p}; reinstall lrpilot or pass --data DIR")
    return p
