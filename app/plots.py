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
    """Three panels for one task: train loss, val loss (means over seeds) and the LR of seed 0; an x
    marks where a run stopped before the end (divergence, or its controller ending it)."""
    plt = _plt()
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.5))
    style = _styles(list(curves))
    end = max((cv[-1]["iter"] for sets in curves.values() for cv in sets if cv), default=0)
    for label, sets in curves.items():
        for ax, key in zip(axes[:2], ("train_loss", "val_loss")):
            x, y = _mean_curve(sets, key)
            if len(x):
                ax.plot(x, y, marker=".", label=label, **style[label])
            for cv in sets:  # a run that stopped early (diverged, or ended by its controller): an x where it stopped
                pts = [p for p in cv if p.get(key) is not None]
                if pts and pts[-1]["iter"] < end:
                    ax.plot([pts[-1]["iter"]], [pts[-1][key]], marker="x", markersize=9, mew=2, color=style[label]["color"])
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


def fan_charts(samples: dict, path: Path, context: int, n_runs: int = 6) -> None:
    """Real val loss, the context, and quantile bands of sampled futures under the real actions."""
    plt = _plt()
    traj = samples["traj"]
    runs, vals = samples["samples"][context]
    pick = np.linspace(0, len(runs) - 1, min(n_runs, len(runs))).astype(int)
    cols = 3
    rows = -(-len(pick) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 3.6 * rows), squeeze=False)
    for ax, j in zip(axes.flat, pick):
        r = runs[j]
        L = traj.length[r]
        truth = traj.val_loss[r, :L]
        v0 = truth[0]
        ax.plot(np.arange(L), truth, "k-", lw=1.5, label="real")
        ax.plot(np.arange(context), truth[:context], "o", color="C0", ms=4, label="context")
        fut = vals[j] * v0  # (M, H)
        ks = context + np.arange(fut.shape[1])
        ok = ks < L
        q = np.nanpercentile(fut[:, ok], [10, 25, 50, 75, 90], axis=0)
        ax.fill_between(ks[ok], q[0], q[4], color="C1", alpha=0.2, label="10-90%")
        ax.fill_between(ks[ok], q[1], q[3], color="C1", alpha=0.35, label="25-75%")
        ax.plot(ks[ok], q[2], color="C1", lw=1.5, label="median")
        m = traj.meta[r]
        ax.set_title(f"{m['task']} {m['config']['n_layer']}x{m['config']['n_embd']} {m['controller']['name']}", fontsize=9)
        ax.set_xlabel("decision k")
        ax.set_ylabel("val loss (nats)")
        ax.grid(alpha=0.3)
        twin = ax.twinx()
        twin.step(np.arange(L), 10 ** traj.obs[r, :L, traj.spec.index("log_lr")], where="pre", color="C2", lw=0.8, alpha=0.7)
        twin.set_yscale("log")
        twin.tick_params(labelsize=7, colors="C2")
    for ax in list(axes.flat)[len(pick):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7)
    fig.suptitle(f"world-model forecasts of held-out runs from {context} observations (green: LR / base LR)")
    fig.tight_layout(rect=(0, 0, 1, 0.96))
    _save(fig, path)


def trajectory_sample(traj, path: Path | None, n: int = 24, axes=None) -> None:
    """Val loss / initial val loss and the absolute LR of a random sample of `n` runs (into `axes`
    when given, else a figure saved at `path`)."""
    plt = _plt()
    rng = np.random.default_rng(0)
    idx = rng.choice(len(traj), size=min(n, len(traj)), replace=False)
    fig = None
    if axes is None:
        fig, axes = plt.subplots(1, 2, figsize=(13, 4.5))
    for i in idx:
        m, L = traj.meta[i], traj.length[i]
        T = m["config"]["max_iters"]
        x = np.arange(L) / traj.spec.n_decisions * T
        vi, li = traj.spec.index("val"), traj.spec.index("log_lr")
        line, = axes[0].plot(x, traj.obs[i, :L, vi] * 1.0, lw=1)
        lr = m["base_lr"] * 10 ** traj.obs[i, :L, li]
        axes[1].step(x, lr, where="pre", lw=1, color=line.get_color())
    axes[0].set_title("val loss / initial val loss")
    axes[1].set_title("LR (absolute) of the interval before each decision")
    axes[1].set_yscale("log")
    axes[0].set_title(f"val loss / initial val loss ({len(idx)} of {len(traj)} runs)")
    for ax in axes:
        ax.set_xlabel("iteration")
        ax.grid(alpha=0.3)
    if fig is not None:
        _save(fig, path)


def dataset_summary(traj, path: Path, n_sample: int = 24) -> None:
    """A dataset's coverage: final normalised val against the base-LR multiplier, by model size
    (x: diverged), and a sample of val curves and LRs."""
    from lrpilot.collect.summary import base_mult, final_val, outcome

    plt = _plt()
    fig, axes = plt.subplots(1, 3, figsize=(19, 4.8))
    sizes = sorted({(m["config"]["n_layer"], m["config"]["n_embd"]) for m in traj.meta})
    cmap = plt.get_cmap("viridis", max(len(sizes), 2))
    fv = final_val(traj)
    for j, size in enumerate(sizes):
        idx = [i for i, m in enumerate(traj.meta) if (m["config"]["n_layer"], m["config"]["n_embd"]) == size]
        label = f"{size[0]}x{size[1]}"
        for kind, marker in (("trained", "o"), ("stalled", "s"), ("diverged", "x")):
            sel = [i for i in idx if outcome(traj, i) == kind]
            if sel:
                axes[0].scatter([base_mult(traj.meta[i]) for i in sel], fv[sel], s=14, marker=marker, color=cmap(j),
                                alpha=0.7, label=label)
                label = None  # one legend entry per size
    axes[0].set_xscale("log")
    axes[0].set_xlabel("configured base LR / the model's default LR")
    axes[0].set_ylabel("final val / initial val")
    axes[0].set_title(f"coverage of {len(traj)} runs (o trained, s stalled, x diverged)")
    axes[0].legend(fontsize=7, title="layers x width", title_fontsize=7)
    trajectory_sample(traj, None, n_sample, axes=axes[1:])
    for ax in axes:
        ax.grid(alpha=0.3)
    _save(fig, path)


def fidelity_groups(details: dict, path: Path, max_groups: int = 12) -> None:
    """Per held-out group: simulated (median, from prefix 1 under the real actions) vs real final
    normalised val of its runs, with the LR-regression baseline."""
    from lrpilot.worldmodel.fidelity import spearman

    plt = _plt()
    grps = details["groups"][:max_groups]
    if not grps:
        return
    cols = min(4, len(grps))
    rows = -(-len(grps) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 3.6 * rows), squeeze=False)
    real, sim, reg, traj = details["real"], details["sim"], details["regression"], details["traj"]
    for ax, g in zip(axes.flat, grps):
        ax.scatter(real[g], sim[g], s=18, label=f"world model (rho {spearman(sim[g], real[g]):.2f})")
        ax.scatter(real[g], reg[g], s=12, marker="^", alpha=0.6, label=f"LR regression (rho {spearman(reg[g], real[g]):.2f})")
        lo, hi = float(min(real[g].min(), sim[g].min())), float(max(real[g].max(), sim[g].max()))
        ax.plot([lo, hi], [lo, hi], "k--", lw=0.8)
        m = traj.meta[g[0]]
        ax.set_title(f"{m['task']} {m['config']['n_layer']}x{m['config']['n_embd']}, {len(g)} runs", fontsize=9)
        ax.set_xlabel("real final val / initial")
        ax.set_ylabel("simulated")
        ax.legend(fontsize=6)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(grps):]:
        ax.axis("off")
    fig.suptitle("held-out groups: simulated vs real final val under the real actions (from the first observation)")
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    _save(fig, path)
