"""Which level terms the rollout fit should move, chosen on training groups only (5-fold cross-validation by group).

Reads the round-0 simulation that `lrpilot worldmodel fit-rollout` left in OUT.state/round_0.npz (kept here as
sims_round0.npz: the median of 32 simulated
final vals of each training run it drew, from observation 1 under the real actions) and, for each layout of the
level terms, the within-group Spearman of sim + Psi . d with d fit on the other folds' groups (`rollout.cross_validated`),
on all drawn groups and on the paired (anneal-timing and drop: one seed per group) and unpaired ones apart.

    python results/rollout_fit/terms_cv.py --data starter V2_NO21_DROP $R --state results/rollout_fit/sims_round0.npz
"""
import dataclasses

from simulated import load

from lrpilot.worldmodel import rollout

sims = load("terms_cv")
t, sim, real, grps, sides, terms = sims.t, sims.sim, sims.real, sims.grps, sims.sides, sims.terms
print(f"{len(grps)} groups, {sum(len(g) for g in grps)} runs simulated ({sims.state})\n")
print("| level terms moved | " + " | ".join(f"{k} ({len(v)} groups)" for k, v in sides.items()) + " |")
print("|---|" + "---|" * len(sides))
print("| none (the simulation) | " + " | ".join(f"{rollout.spearman(sim, real, v):.3f}" for v in sides.values()) + " |")
for lt in ("kinks", "kinks_v"):
    lay = dataclasses.replace(terms, level_terms=lt)
    psi = rollout.psi_sums(t, lay)
    score = rollout.out_of_fold(sim, psi, real, grps)  # all groups' folds, then read per side
    print(f"| {lt} ({', '.join(lay.psi_names)}) | " + " | ".join(f"{rollout.spearman(score, real, v):.3f}" for v in sides.values()) + " |")
