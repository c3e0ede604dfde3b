"""What a linear rollout fit can still move, on training groups only (5-fold cross-validation by group).

Reads a simulation `lrpilot worldmodel fit-rollout` left in OUT.state/round_R.npz (kept here as sims_round1.npz:
the shipped world model's median of 32 simulated final vals of each training run the command drew, from
observation 1 under the real actions) and scores, for each set of columns summed over a run's decisions, the
within-group Spearman of sim + X . d with d fit on the other folds' groups (`rollout.out_of_fold`): the shipped level
terms (`kinks`), the action term's columns that the real actions fix (phi without a x val and a x train), the LR in
effect by quarter of the run, and its interaction with the task (which the simulator cannot know at observation 1)
or the vocabulary size (which it could be told).

    python results/rollout_fit/levers.py --data starter V2_NO21_DROP $R --state results/rollout_fit/sims_round1.npz
"""
import numpy as np
from simulated import load

from lrpilot.worldmodel import rollout
from lrpilot.worldmodel.correction import log_base, log_params

sims = load("levers")
t, sim, real, grps, sides, terms = sims.t, sims.sim, sims.real, sims.grps, sims.sides, sims.terms

sp, n = t.spec, t.actions.shape[1]
obs = t.obs[:, :n].astype(np.float64)
lb, lp = log_base(t)[:, None].astype(np.float64), log_params(t)[:, None].astype(np.float64)
act = np.log2(np.asarray(sp.actions))[np.clip(t.actions, 0, None)]
taken = np.arange(n)[None, :] < (t.length[:, None] - 1)
cols = (terms.features(sp, act, obs, lb, lp) * taken[..., None]).sum(1)  # (R, n_terms) summed over the decisions
names = terms.names()
psi = cols[:, terms.n_phi:]
prog = obs[..., sp.index("progress")]
M = obs[..., sp.index("log_lr")] + lb - terms.kink_at(lp) + 1  # decades above x1 of the collected runs' default LR


def total(x):
    return (x * taken).sum(1)[:, None]


quarters = [(prog >= lo) & (prog < hi) for lo, hi in ((0, .25), (.25, .5), (.5, .75), (.75, 1.01))]
by_q = np.concatenate([total(M * q) for q in quarters] + [total(M * M * q) for q in quarters], 1)
task_names = sorted({str(m["task"]) for m in t.meta})
task = np.eye(len(task_names))[[task_names.index(str(m["task"])) for m in t.meta]]
vocab = np.log(np.array([float(m.get("vocab_size", np.nan)) for m in t.meta]))[:, None]
vocab -= np.nanmean(vocab)
exact = [j for j, nm in enumerate(names[: terms.n_phi]) if "val" not in nm and "train" not in nm]

rows = [("none (the simulation)", None), (f"`kinks` ({', '.join(terms.psi_names)})", psi)]
rows += [(f"`kinks` + {names[j]}", np.concatenate([psi, cols[:, j : j + 1]], 1)) for j in exact]
rows += [("`kinks` + every phi column the actions fix", np.concatenate([psi, cols[:, exact]], 1)),
         ("`kinks` + M, M^2 by quarter of the run", np.concatenate([psi, by_q], 1)),
         ("`kinks` + M x task (8 tasks)", np.concatenate([psi, total(M) * task], 1)),
         ("`kinks` + M, M^2 x log vocabulary size", np.concatenate([psi, total(M) * vocab, total(M * M) * vocab], 1))]
print(f"{len(grps)} groups, {sum(len(g) for g in grps)} runs simulated ({sims.state}); M: decades above x1 of the default LR\n")
print("| columns moved | " + " | ".join(f"{k} ({len(v)} groups)" for k, v in sides.items()) + " |")
print("|---|" + "---|" * len(sides))
for label, X in rows:
    score = sim if X is None else rollout.out_of_fold(sim, X, real, grps)
    print(f"| {label} | " + " | ".join(f"{rollout.spearman(score, real, v):.3f}" for v in sides.values()) + " |")
