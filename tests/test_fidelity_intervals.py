"""The fidelity section's intervals: resamples of whole groups behind the action-effect and high-LR
cost ratios, whose real references rest on a few held-out groups (`worldmodel/fidelity.py`)."""

import math

import numpy as np
import pytest
from conftest import synthetic_trajectories

from lrpilot.worldmodel import fidelity
from lrpilot.worldmodel.responses import action_rows, fe_slope


def test_group_bootstrap_resamples_whole_clusters():
    cluster = np.repeat([7, 3, 5, 9], 5)  # 4 clusters of 5 rows, ids in any order
    seen = []

    def stat(rows, draw):
        assert len(rows) == 20 and len(np.unique(draw)) == 4
        for d in range(4):  # each draw is one whole cluster
            assert len(np.unique(cluster[rows[draw == d]])) == 1 and (draw == d).sum() == 5
        seen.append(len(np.unique(cluster[rows])))
        return float(len(np.unique(cluster[rows])))

    lo, hi = fidelity.group_bootstrap(cluster, stat, n_boot=200)
    assert 1 <= lo <= hi <= 4 and min(seen) < 4  # clusters are drawn with replacement
    assert fidelity.group_bootstrap(np.zeros(6), stat) is None  # one cluster: no interval
    assert fidelity.group_bootstrap(cluster, lambda rows, draw: float("nan"), n_boot=50) is None


def test_group_bootstrap_interval_covers_a_mean_at_its_standard_error():
    rng = np.random.default_rng(0)
    x = rng.normal(1.0, 1.0, size=400)
    lo, hi = fidelity.group_bootstrap(np.arange(400), lambda rows, _: x[rows].mean())
    se = x.std(ddof=1) / math.sqrt(400)
    assert lo < x.mean() < hi and (hi - lo) == pytest.approx(2 * 1.96 * se, rel=0.2)


def test_action_ratio_interval_is_exact_for_a_proportional_simulator():
    traj = synthetic_trajectories(n_runs=16, seed=2)
    for m in traj.meta:
        m["controller"] = {"name": "random_walk"}
    rows, x, y = action_rows(traj)
    run = np.array([r for r, _ in rows])
    cluster = run // 4  # 4 groups of 4 runs
    out = fidelity.action_intervals(run, cluster, x, y, 0.5 * y)
    assert out["ratio_ci95"] == pytest.approx([0.5, 0.5])
    lo, hi = out["real_ci95"]
    assert lo < -fe_slope(run, x, y)[0] < hi
    assert fidelity.action_intervals(run, cluster, x, y, None) == {"real_ci95": out["real_ci95"]}


def test_high_lr_cost_reports_its_groups_standard_errors_and_interval():
    traj = synthetic_trajectories(n_runs=16, seed=1)
    li, n = traj.spec.index("log_lr"), traj.spec.n_decisions
    high = np.array([r % 4 == 0 for r in range(16)])
    for r in range(16):
        m = traj.meta[r]
        m["group"] = r // 4
        m["controller"] = {"name": "cosine"}
        traj.obs[r, n // 2 + 1 :, li] = math.log10(40.0) if high[r] else (0.0 if r % 4 == 1 else -1.0)
    grps = fidelity.groups(traj)
    assert len(grps) == 4
    real = 0.5 + 0.1 * high + 0.01 * np.arange(16)
    sim = 0.5 + 0.05 * high + 0.01 * np.arange(16)
    h = fidelity.high_lr_cost(traj, real, sim, grps)
    dr = np.array([real[4 * g] - real[4 * g + 1] for g in range(4)])  # the high run against the one held within 0.5-2x
    assert h["n_groups"] == 4 and h["real"] == pytest.approx(dr.mean())
    assert h["real_stderr"] == pytest.approx(dr.std(ddof=1) / 2)
    assert h["ratio"] == pytest.approx((0.05 - 0.01) / (0.1 - 0.01))
    lo, hi = h["ratio_ci95"]
    assert lo <= h["ratio"] <= hi
    none = fidelity.high_lr_cost(traj, real, sim, [])
    assert none["n_groups"] == 0 and none["real"] is None and none["ratio"] is None and none["ratio_ci95"] is None
