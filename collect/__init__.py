"""Collection of real training trajectories (see lrpilot.collect.job; the trajectory files are lrpilot.trajectories)."""

from pathlib import Path


def starter_dataset() -> Path:
    """The trajectory dataset shipped with the package."""
    p = Path(__file__).parent / "data" / "starter"
    if not p.is_dir():
        raise FileNotFoundError(f"the starter dataset is missing at {p}; reinstall lrpilot or pass --data DIR")
    return p
