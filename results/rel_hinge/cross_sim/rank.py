"""How each simulator ranks the policy candidates against their real validation runs: each policy's simulated
return (run.sh's JSON) beside its mean best val on the validation set of real runs (results/selection/
selection.json: python_docs and gettext_catalogs, base LR x0.1 / x1 / x10, seeds 0-1, small protocol), and the
Spearman correlation of the simulated return with minus the real mean (1: the simulator orders the policies
as real runs do). Run from the repository root: python results/rel_hinge/cross_sim/rank.py > .../rank.md"""
import json
from pathlib import Path

import numpy as np

D = Path("results/rel_hinge/cross_sim")
SEL = json.loads(Path("results/selection/selection.json").read_text())["candidates"]
NAMES = {"round3": "simple_round3", "round0": "simple_round0", "round1": "simple_round1", "round2": "simple_round2"}
WMS = ("shipped", "kink30")
pols = sorted({p.name.split("_in_")[0] for p in D.glob("*_in_*.json")})
real = {p: SEL[NAMES.get(p, p)]["score"] for p in pols}


def ranks(x):
    return np.argsort(np.argsort(x)).astype(float)  # no ties among these returns


print("| policy | real validation mean best val (lower is better) | " + " | ".join(f"return in `{w}`" for w in WMS) + " |")
print("|---|---|" + "---|" * len(WMS))
ret = {w: {} for w in WMS}
for p in sorted(pols, key=real.get):
    cells = []
    for w in WMS:
        f = D / f"{p}_in_{w}.json"
        if f.exists():
            ret[w][p] = json.loads(f.read_text())["returns"]["policy (greedy)"]["mean"]
        cells.append(f"{ret[w][p]:.4f}" if p in ret[w] else "-")
    print(f"| {p} | {real[p]:.4f} | " + " | ".join(cells) + " |")
print()
for w in WMS:
    ps = sorted(ret[w])
    rho = np.corrcoef(ranks([ret[w][p] for p in ps]), ranks([-real[p] for p in ps]))[0, 1]
    best = max(ps, key=ret[w].get)
    print(f"* `{w}`: Spearman of the simulated return with minus the real mean over {len(ps)} policies: {rho:+.2f}; "
          f"its top policy: {best} (real rank {sorted(ps, key=real.get).index(best) + 1} of {len(ps)})")
