"""The policies' LR paths, simulated against real: for each policy and configured LR (x0.1 / x1 / x10 of the
default), the median LR / base LR after decisions 4, 8, 12, 16 and 20 in the simulator (run.sh's JSON: median
over 256 episodes from observation 1 of the runs configured there) beside the median over the real validation
runs (results/selection/runs: python_docs and gettext_catalogs, seeds 0-1; base = the peak LR of cosine's run
in the same cell). Run from the repository root: python results/sim_regimes/lr_paths.py > .../lr_paths.md"""
import json
from pathlib import Path

import numpy as np

from lrpilot.app.evaluate import safe_name

D, RUNS = Path("results/sim_regimes"), Path("results/selection/runs")
SEL = json.loads(Path("results/selection/selection.json").read_text())["candidates"]
NAMES = {"round3": "simple_round3", "round0": "simple_round0", "round1": "simple_round1", "round2": "simple_round2"}
MULTS, TASKS, SHOW = ("0.1", "1", "10"), ("python_docs", "gettext_catalogs"), (3, 7, 11, 15, 19)
LR_BINS = ((0, 0.3), (0.3, 1), (1, 3), (3, 10), (10, 30), (30, 1e9))  # LR / default LR, the replays' interval buckets


def interval_cells(d_real, d_sim, s, task) -> list[str]:
    """Per task of TASKS, "real, simulated (intervals)": the mean change of normalised val over the intervals
    selected by s (a mask like d_real), real and simulated; "-" where the task has none (the replays' tables)."""
    return [f"{d_real[s & (task == t)].mean():+.5f}, {d_sim[s & (task == t)].mean():+.5f} ({(s & (task == t)).sum()})"
            if (s & (task == t)).any() else "-" for t in TASKS]


def candidate(p):
    """results/selection's entry of the policy named p here."""
    return SEL[NAMES.get(p, p)]


def lrs(curves):
    return np.array([c["lr"] for c in curves if c["lr"] is not None and c["iter"] % 100 == 0], float)


def real_path(ctrl, m, tasks=TASKS):
    paths = []
    for t in tasks:
        cell = RUNS / t / f"lr_x{m}"
        base = max(lrs(json.loads(f.read_text())).max() for f in cell.glob("cosine/seed*/curves.json"))
        paths += [lrs(json.loads(f.read_text())) / base for f in sorted((cell / safe_name(ctrl)).glob("seed*/curves.json"))]
    return np.median(np.stack(paths), axis=0)


if __name__ == "__main__":
    print("| policy | configured LR | simulated median LR / base after decisions " + ", ".join(str(k + 1) for k in SHOW)
          + " | real (4 runs) | mean abs log10(real / simulated) over the 20 decisions |")
    print("|---|---|---|---|---|")
    gap, above = {m: [] for m in MULTS}, {m: [] for m in MULTS}
    for f in sorted(D.glob("*_in_shipped.json")):
        p = f.stem.split("_in_")[0]
        sim = json.loads(f.read_text())["by_lr_mult"]
        for m in MULTS:
            s = np.array(sim[m]["policy_lr_rel"]["median"])
            r = real_path(candidate(p)["controller"], m)
            g = float(np.mean(np.abs(np.log10(r / s))))
            gap[m].append(g)
            above[m].append(float(np.mean(np.log10(r / s))) > 0)
            print(f"| {p} | x{m} | " + " ".join(f"{s[k]:.2f}" for k in SHOW) + " | " + " ".join(f"{r[k]:.2f}" for k in SHOW)
                  + f" | {g:.2f} |")
    print()
    print("* mean over the policies of the mean abs log10 gap: " + ", ".join(f"x{m} {np.mean(g):.2f} decades" for m, g in gap.items()))
    print("* policies whose real LR path lies above the simulated one (mean log10 ratio > 0): "
          + ", ".join(f"x{m} {sum(a)} of {len(a)}" for m, a in above.items()))
