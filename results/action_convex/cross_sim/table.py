"""Each policy's simulated return in each simulator beside the simulator's best cosine, from run.sh's JSON.
Run from the repository root: python results/action_convex/cross_sim/table.py > results/action_convex/cross_sim/table.md
(or with DIR POLICIES WORLD_MODELS, comma-separated names, for another folder of POLICY_in_WM.json files)"""
import json
import sys
from pathlib import Path

D = Path(sys.argv[1] if len(sys.argv) > 1 else "results/action_convex/cross_sim")
POLS = tuple(sys.argv[2].split(",")) if len(sys.argv) > 2 else ("round3", "convex_nolevel", "convex_nolevel_all")
WMS = tuple(sys.argv[3].split(",")) if len(sys.argv) > 3 else ("shipped", "nolevel", "nolevel_all")
print("| policy | " + " | ".join(f"in `{w}`: return (policy - best cosine; paired)" for w in WMS) + " |")
print("|---|" + "---|" * len(WMS))
for p in POLS:
    cells = []
    for w in WMS:
        d = json.loads((D / f"{p}_in_{w}.json").read_text())
        r, bc = d["returns"]["policy (greedy)"], d["best_cosine"]
        m = d["policy_minus_best"][bc]
        cells.append(f"{r['mean']:.4f} ({m['mean']:+.4f} ± {m['stderr']:.4f} vs {bc})")
    print(f"| {p} | " + " | ".join(cells) + " |")
