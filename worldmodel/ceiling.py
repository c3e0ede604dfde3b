"""The real-vs-real noise ceiling of the within-group Spearman, from replays of the ranked runs.

A group's runs each have their own seed, so their ranking by final val is partly the seeds'. A
replay (`lrpilot.collect.replay`) trains a run again with the same task, config, base LR and
recorded actions and another seed; ranking a group's replays against its originals measures how
much of the ranking a second seed keeps: the most a simulator, which cannot know the seed, can be
expected to reach against one seed's finals (up to the simulator's own noise, which the same
ranking against the replays shows). Pearson's reliability gives a perfect predictor of the
seed-free final about sqrt(real_vs_replay) against one seed (`perfect_predictor`, approximate for
ranks).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import numpy as np

from lrpilot.trajectories import Trajectories
from lrpilot.worldmodel.fidelity import final_val, mean_se, spearman


def replay_finals(replays: Trajectories) -> dict[str, float]:
    """{original file name: the replay's final normalised val} of replay runs (their `replay_of`)."""
    for m, f in zip(replays.meta, replays.files):
        if "replay_of" not in m:
            raise ValueError(f"{f}: not a replay (no 'replay_of' in its metadata); pass the directories that "
                             "`lrpilot.collect.replay` wrote")
    return {m["replay_of"]: float(v) for m, v in zip(replays.meta, final_val(replays))}


def noise_ceiling(groups: Sequence[np.ndarray], files: Sequence[str], real: np.ndarray, sim: np.ndarray,
                  replayed: dict[str, float], min_size: int = 3) -> dict:
    """On the groups with >= min_size replayed runs (only those runs): within-group Spearman of the
    replays' finals against the originals' (the ceiling), of `sim` (R,) against each and against
    their mean, and the per-group gap ceiling - sim. `real`, `sim`: (R,) final normalised val by
    run, `files` the runs' file names, `groups` their run indices."""
    rr, rs, rm, gap, diffs, n_runs = [], [], [], [], [], 0
    for g in groups:
        g = np.array([i for i in g if Path(files[i]).name in replayed])
        if len(g) < min_size:
            continue
        rep = np.array([replayed[Path(files[i]).name] for i in g])
        a, b = spearman(rep, real[g]), spearman(sim[g], real[g])
        rr.append(a)
        rs.append(b)
        rm.append(spearman(sim[g], (real[g] + rep) / 2))
        gap.append(a - b)
        diffs.extend(rep - real[g])
        n_runs += len(g)
    ceiling = mean_se(rr)
    d = np.array(diffs)
    return {"n_groups": len(rr), "n_runs": n_runs,
            "real_vs_replay": ceiling,
            "perfect_predictor": math.sqrt(ceiling["mean"]) if ceiling["mean"] and ceiling["mean"] > 0 else None,
            "sim_vs_real": mean_se(rs), "sim_vs_mean_of_seeds": mean_se(rm), "ceiling_minus_sim": mean_se(gap),
            "seed_sd": float(np.std(d, ddof=1) / math.sqrt(2)) if len(d) > 1 else None,
            "seed_mad": float(np.median(np.abs(d))) if len(d) else None}
