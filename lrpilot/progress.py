"""Progress bars for long jobs (tqdm), or a silent stand-in when progress is off."""

from __future__ import annotations


class _NoBar:
    def update(self, n=1):
        pass

    def set_postfix(self, *a, **k):
        pass

    def close(self):
        pass


def progress_bar(total: int, enabled: bool, desc: str):
    """A tqdm bar over `total` units (not left on screen), or an object with the same methods
    that shows nothing."""
    if not enabled:
        return _NoBar()
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="it", leave=False, dynamic_ncols=True)
