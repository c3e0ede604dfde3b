"""What a trajectory dataset covers: counts per corpus, explorer, model size and outcome, the
base-LR multipliers, the share at the small protocol's size.

Outcomes, from the observations (normalised val = val / initial val):
* diverged: the spec's divergence ended the run (a non-finite loss or val >= 1.5 x initial);
* stalled: not diverged, and the loss barely moved (best normalised val > 0.9) or rose again
  from its best by more than 0.02 by the end (an LR too high to keep improving);
* trained: the rest.
"""

from __future__ import annotations

import numpy as np

from lrpilot.trainers.config import SMALL
from lrpilot.trajectories import Trajectories

MULT_BINS = (1 / 30, 1 / 10, 1 / 3, 1, 3, 10, 30)


def outcome(traj: Trajectories, i: int) -> str:
    if traj.terminated[i]:
        return "diverged"
    v = traj.obs[i, : traj.length[i], traj.spec.index("val")]
    best, final = float(np.min(v[1:])) if len(v) > 1 else 1.0, float(v[-1])
    return "stalled" if best > 0.9 or final - best > 0.02 else "trained"


def is_small_protocol(cfg: dict) -> bool:
    """nanoGPT's CPU recipe: 4 layers x 128, block 64, batch 12, 2000 iterations."""
    return all(cfg.get(k) == getattr(SMALL, k) for k in ("n_layer", "n_embd", "block_size", "batch_size", "max_iters"))


def base_mult(meta: dict) -> float:
    """The configured base LR / the model's default LR (starter runs: / the family's 1e-3)."""
    return float(meta.get("base_lr_mult", 1.0))


def _count(keys) -> dict:
    out: dict = {}
    for k in keys:
        out[k] = out.get(k, 0) + 1
    return dict(sorted(out.items()))


def _mult_bin(m: float) -> str:
    if m < MULT_BINS[0] * (1 - 1e-9):
        return "x<0.0333"
    for lo, hi in zip(MULT_BINS[:-1], MULT_BINS[1:]):
        if m < hi * (1 + 1e-9):
            return f"x{lo:.3g}-{hi:.3g}"
    return f">x{MULT_BINS[-1]:g}"


_BIN_NAMES = ["x<0.0333"] + [f"x{lo:.3g}-{hi:.3g}" for lo, hi in zip(MULT_BINS[:-1], MULT_BINS[1:])] + [f">x{MULT_BINS[-1]:g}"]


def summary(traj: Trajectories, source: str = "", log=print) -> dict:
    """Counts of a loaded dataset, printed and returned (JSON-able)."""
    metas = traj.meta
    outcomes = [outcome(traj, i) for i in range(len(traj))]
    mults = np.array([base_mult(m) for m in metas]) if metas else np.zeros(0)
    sizes = [f"{m['config']['n_layer']}x{m['config']['n_embd']}" for m in metas]
    by_task_ctrl: dict = {}
    for m in metas:
        by_task_ctrl.setdefault(m["task"], {}).setdefault(m["controller"]["name"], 0)
        by_task_ctrl[m["task"]][m["controller"]["name"]] += 1
    info = {
        "runs": len(traj), "terminated": int(traj.terminated.sum()),
        "by_task": _count(m["task"] for m in metas), "by_task_controller": by_task_ctrl,
        "by_explorer": _count(m["controller"]["name"] for m in metas), "by_model_size": _count(sizes),
        "by_outcome": _count(outcomes),
        "by_base_lr_mult": {b: c for b in _BIN_NAMES if (c := sum(_mult_bin(x) == b for x in mults))},
        "base_lr_mult_range": [float(mults.min()), float(mults.max())] if len(mults) else None,
        "small_protocol_share": float(np.mean([is_small_protocol(m["config"]) for m in metas])) if metas else 0.0,
        "with_health_metrics": int(np.sum(np.isfinite(traj.raw["grad_norm_mean"][:, 1]))) if traj.raw else 0,
        "devices": sorted({m.get("device", "?") for m in metas}),
        "group_hours": sum({(m.get("family"), m.get("job_seed"), m.get("group")): m.get("group_wall_time", 0.0)
                            for m in metas}.values()) / 3600,
    }
    n = max(len(traj), 1)
    log(f"{len(traj)} runs{' in ' + source if source else ''} ({info['terminated']} terminated by divergence); "
        f"devices: {', '.join(info['devices'])}")
    ctrls = sorted({c for v in by_task_ctrl.values() for c in v})
    log(f"{'task':20s}" + "".join(f"{c:>18s}" for c in ctrls) + f"{'total':>8s}")
    for task, v in sorted(by_task_ctrl.items()):
        log(f"{task:20s}" + "".join(f"{v.get(c, 0):18d}" for c in ctrls) + f"{sum(v.values()):8d}")
    log("model sizes (layers x width): " + ", ".join(f"{k}: {c}" for k, c in info["by_model_size"].items()))
    log("outcomes: " + ", ".join(f"{k} {c} ({100 * c / n:.1f}%)" for k, c in info["by_outcome"].items()))
    if info["base_lr_mult_range"]:
        lo, hi = info["base_lr_mult_range"]
        log(f"base LR x default: {lo:.4g} to {hi:.4g}; " + ", ".join(f"{k}: {c}" for k, c in info["by_base_lr_mult"].items()))
    log(f"at the small protocol's size (4 x 128, block 64, batch 12, 2000 iterations): "
        f"{100 * info['small_protocol_share']:.1f}%; with training-health metrics: {info['with_health_metrics']}; "
        f"{info['group_hours']:.1f} hours of group wall time")
    return info


def final_val(traj: Trajectories) -> np.ndarray:
    """(R,) the last normalised val of each run (the divergence ratio for diverged runs)."""
    return traj.obs[np.arange(len(traj)), traj.length - 1, traj.spec.index("val")]


__all__ = ["summary", "outcome", "is_small_protocol", "base_mult", "final_val"]
