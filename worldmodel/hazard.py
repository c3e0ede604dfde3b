"""An LR action's own risk of divergence (`WorldModelConfig.action_divergence`).

With `action_response` noop the transformer samples the no-op's continuation, so the chance that a
simulated step diverges is that of the LR held; the action acts through the linear term
(correction.py), which moves val but never diverges a run. On the random walks of the collected
runs the one-step divergence rate at x300 to x1000 of their default LR is 19% after a doubling, 3%
at the LR held and nil after a halving (results/upper_hinge/): most of what a doubling up there
costs. This module models that risk:

    hazard(z) = sigmoid(c0 + c1 z),    z = log10 absolute LR - the action term's kink (decades above it)

the one-step probability that a run at LR z diverges, fit by logistic maximum likelihood on the
decisions k >= 1 of the training runs whose actions do not depend on their state (random walks and
forks, `correction.EXOGENOUS`) that had not diverged at k, z read after action k (the LR of the
interval that ends at k + 1). The simulator adds the action's excess over holding: a step the
transformer did not diverge diverges with probability max(0, hazard(z after the action) -
hazard(z held)) (a halving never saves a run the transformer diverged), drawn from a uniform of its
own (episodes that share a key share it: common random numbers), and its mean_val moves to that
mixture of the corrected val and the divergence value.

Parameters: `params["action_hazard"]` = {"c": (2,)} (c0, c1), with a leading member axis for an
ensemble (the same fit for every member: it reads the data, not the transformer).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from lrpilot.trajectories import Trajectories
from lrpilot.worldmodel.correction import EXOGENOUS, ActionTerms, exogenous, log_base, log_params

RIDGE = 1e-4  # on (c0, c1): keeps the maximum likelihood finite where no run diverged at the highest z


def rows(traj: Trajectories, terms: ActionTerms) -> tuple[np.ndarray, np.ndarray]:
    """(z (n,), diverged (n,) bool): the decisions a hazard is fit on (module docstring)."""
    sp = traj.spec
    vi, li, ratio = sp.index("val"), sp.index("log_lr"), sp.divergence_ratio
    exo = exogenous(traj)
    r, k = np.nonzero((np.arange(sp.n_decisions)[None] >= 1) & (np.arange(sp.n_decisions)[None] < traj.length[:, None] - 1)
                      & (traj.actions >= 0) & exo[:, None])
    live = traj.obs[r, k, vi] < ratio
    r, k = r[live], k[live]
    lp = log_params(traj)[r].astype(np.float64)
    terms.check_log_params(lp, sp, "action_hazard")
    z = traj.obs[r, k + 1, li].astype(np.float64) + log_base(traj)[r] - terms.kink_at(lp)
    return z, traj.obs[r, k + 1, vi] >= ratio


def fit(traj: Trajectories, terms: ActionTerms, iters: int = 50) -> np.ndarray:
    """(2,) float32 (c0, c1) of the hazard on the training runs `traj` (Newton's method on the
    log-likelihood less RIDGE |c|^2 / 2). Raises ValueError when the terms have no kink or the rows
    hold no divergence, or no run that went on."""
    if terms.hinge is None:
        raise ValueError("action_hazard: z is read against the action term's kink: it needs action_hinge")
    z, y = rows(traj, terms)
    if not y.any() or y.all():
        raise ValueError(f"action_hazard: {len(y)} decisions of {' or '.join(EXOGENOUS)} runs, {int(y.sum())} diverged into the "
                         "next: a hazard needs both runs that diverged and runs that went on")
    X, c = np.stack([np.ones_like(z), z], 1), np.zeros(2)
    for _ in range(iters):
        p = 1.0 / (1.0 + np.exp(-(X @ c)))
        g = X.T @ (y - p) - RIDGE * c
        H = (X * (p * (1 - p))[:, None]).T @ X + RIDGE * np.eye(2)
        step = np.linalg.solve(H, g)
        c = c + step
        if np.abs(step).max() < 1e-9:
            break
    return c.astype(np.float32)


def excess(c, z_after, z_held):
    """The action's excess one-step probability of divergence over holding: max(0, hazard(z_after) -
    hazard(z_held)) (jax)."""
    h = lambda z: jax.nn.sigmoid(c[0] + c[1] * z)  # noqa: E731
    return jnp.clip(h(z_after) - h(z_held), 0.0, 1.0)
