"""PNG plots of loss curves and LR schedules (matplotlib, no display needed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lrpilot.io import atomic_path


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    _plt().close(fig)


def _mean_curve(curve_sets: list[list[dict]], key: str, protocol_only: bool = True):
    """Mean over seeds of `key` at the iterations every seed has."""
    per_seed = [{p["iter"]: p[key] for p in cv if (p.get("protocol", True) or not protocol_only) and p.get(key) is not None}
                for cv in curve_sets]
    common = sorted(set.intersection(*(set(d) for d in per_seed))) if per_seed else []
    return np.array(common), np.array([np.mean([d[i] for d in per_seed]) for i in common])


def _styles(labels) -> dict:
    """A distinct colour per label (tab20 beyond 10 labels); learned policies drawn thicker."""
    plt = _plt()
    cmap = plt.get_cmap("tab10" if len(labels) <= 10 else "tab20")
    return {lab: {"color": cmap(i % cmap.N), "linewidth": 2.6 if lab.startswith("policy") else 1.3}
            for i, lab in enumerate(labels)}


def loss_and_lr(task: str, curves: dict[str, list[list[dict]]], path: Path, title: str = "") -> None:
    """Three panels for one task: train loss, val loss (means over seeds) and the LR of seed 0."""
    plt = _plt()
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.5))
    style = _styles(list(curves))
    for label, sets in curves.items():
        for ax, key in zip(axes[:2], ("train_loss", "val_loss")):
            x, y = _mean_curve(sets, key)
            if len(x):
                ax.plot(x, y, marker=".", label=label, **style[label])
        lr_pts = [(p["iter"], p.get("effective_lr") or p["lr"]) for p in sets[0] if p.get("lr")]
        if lr_pts:
            axes[2].step(*zip(*lr_pts), where="pre", label=label, **style[label])
    for ax, name in zip(axes, ("train loss (nats/char)", "val loss (nats/char)", "LR at evaluations (seed 0)")):
        ax.set_xlabel("iteration")
        ax.set_title(name)
        ax.grid(alpha=0.3)
    axes[1].set_ylim(top=min(axes[1].get_ylim()[1], _ylim_top(curves)))
    axes[0].set_ylim(top=min(axes[0].get_ylim()[1], _ylim_top(curves)))
    axes[2].set_yscale("log")
    axes[2].legend(fontsize=7, loc="best")
    fig.suptitle(title or task)
    _save(fig, path)


def _ylim_top(curves) -> float:
    """Clips the initial-loss spike so that the end of the curves is readable."""
    vals = [p["val_loss"] for sets in curves.values() for cv in sets for p in cv if p.get("val_loss") and p["iter"] > 0]
    return float(np.percentile(vals, 90)) * 1.05 if vals else np.inf


def lr_schedules(curves_by_label: dict[str, list[dict]], path: Path, title: str) -> None:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4))
    style = _styles(list(curves_by_label))
    for label, cv in curves_by_label.items():
        pts = [(p["iter"], p.get("effective_lr") or p["lr"]) for p in cv if p.get("lr")]
        if pts:
            ax.step(*zip(*pts), where="pre", label=label, **style[label])
    ax.set_yscale("log")
    ax.set_xlabel("iteration")
    ax.set_ylabel("LR")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    _save(fig, path)
