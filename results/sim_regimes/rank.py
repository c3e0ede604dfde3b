"""How the simulator ranks the policy candidates regime by regime against their real validation runs.

For each policy and each regime (episodes from observation 1 of the runs configured at x0.1 / x1 / x10 of their
default LR, run.sh's JSON): its simulated return and its return minus cosine's at the configured LR (same
starts), beside the real runs at that multiplier (results/selection/selection.json: python_docs and
gettext_catalogs, seeds 0-1, small protocol; the mean over the two tasks of the best val, and of the policy's
margin over cosine, val units, lower is better). Spearman of the simulated return with minus the real mean
(1: the simulator orders the policies as real runs do), per regime and over the regimes' mean. Run from the
repository root: python results/sim_regimes/rank.py [DIR] > results/sim_regimes/rank.md (DIR: the folder of the
JSON reports, default this one; context/ for the episodes started from the validation runs' own context)."""
import json
import sys
from pathlib import Path

import numpy as np
from lr_paths import MULTS, TASKS, D, candidate  # beside this script

runs = sorted((Path(sys.argv[1]) if len(sys.argv) > 1 else D).glob("*_in_*.json"))
wms = sorted({p.stem.split("_in_")[1] for p in runs})


def real(p, m, key="best_val_loss"):
    cells = candidate(p)["cells"]
    return float(np.mean([cells[f"{t} x{m}"][key] for t in TASKS]))


def spearman(a, b):
    ra, rb = (np.argsort(np.argsort(x)).astype(float) for x in (a, b))
    return float(np.corrcoef(ra, rb)[0, 1])


for w in wms:
    sim = {p.stem.split("_in_")[0]: json.loads(p.read_text())["by_lr_mult"] for p in runs if p.stem.endswith(f"_in_{w}")}
    pols = sorted(sim, key=lambda p: candidate(p)["score"])
    print(f"## In `{w}`, {len(pols)} policies (ordered by their real validation mean)\n")
    print("| policy | " + " | ".join(f"x{m}: real best val, margin over cosine | x{m}: sim return, minus cosine x1" for m in MULTS) + " |")
    print("|---|" + "---|---|" * len(MULTS))
    for p in pols:
        cells = []
        for m in MULTS:
            r = sim[p][m]["returns"]
            cells += [f"{real(p, m):.4f}, {real(p, m, 'margin'):+.4f}",
                      f"{r['policy (greedy)']['mean']:.4f}, {r['policy (greedy)']['mean'] - r['cosine x1']['mean']:+.4f}"]
        print(f"| {p} | " + " | ".join(cells) + " |")
    print()
    for m in MULTS:
        ret = [sim[p][m]["returns"]["policy (greedy)"]["mean"] for p in pols]
        adv = [sim[p][m]["returns"]["policy (greedy)"]["mean"] - sim[p][m]["returns"]["cosine x1"]["mean"] for p in pols]
        marg = [real(p, m, "margin") for p in pols]
        agree = sum((a > 0) == (g < 0) for a, g in zip(adv, marg))
        best = pols[int(np.argmax(ret))]
        print(f"* x{m} ({sim[pols[0]][m]['n_runs']} start runs): Spearman {spearman(ret, [-real(p, m) for p in pols]):+.2f}; "
              f"the simulator's top policy {best} is real rank {sorted(pols, key=lambda p: real(p, m)).index(best) + 1} "
              f"of {len(pols)}; beats cosine in the simulator and in real runs alike for {agree} of {len(pols)}")
    mean_ret = [np.mean([sim[p][m]["returns"]["policy (greedy)"]["mean"] for m in MULTS]) for p in pols]
    best = pols[int(np.argmax(mean_ret))]
    print(f"* the regimes' mean return against the real validation mean: Spearman "
          f"{spearman(mean_ret, [-candidate(p)['score'] for p in pols]):+.2f}; the simulator's top policy {best} "
          f"is real rank {pols.index(best) + 1} of {len(pols)}\n")
