"""A policy ensemble: K policy checkpoints (PPO seeds of one recipe) stacked in one checkpoint.

PPO's seeds of one recipe differ on real runs as much as recipes do (`results/drop_level/`: one seed
never raises a too-low LR, another climbs to the LR clip where its siblings hold). Deployed as one
controller (`policy.load(ENSEMBLE)`), the members read the same episode in one vmapped pass and their
choices make one action:

* "median" (the default): the median of the members' actions (greedy: each one's most probable),
  ordered by LR factor (even K: of the two middle ones, the smaller move). A member alone in a deep
  cut or a climb is outvoted, and the LR follows the middle member's course.
* "mean": the most probable action of the members' mixture (the mean of their action probabilities,
  each masked to the LR support). One member sure of its choice outweighs several that spread their
  probability over nearby actions, so a confident outlier can steer it (`results/policy_ensemble/`).

    lrpilot policy ensemble --members S0 S1 S2 --out ENSEMBLE

The checkpoint is an ordinary policy checkpoint whose parameters carry a leading member axis (K, ...)
and whose model_config names its members (`policy_members`: path, fingerprint and PPO seed of each).
"""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from lrpilot import checkpoints
from lrpilot.policy.network import lr_support
from lrpilot.worldmodel.model import WorldModelConfig

MEMBERS = "policy_members"  # model_config key of an ensemble checkpoint: one entry per member
COMBINE = "policy_combine"  # model_config key: how the members' choices make the action (COMBINES)
COMBINES = ("median", "mean")  # median of the members' actions (by LR factor) / argmax of their mean probabilities


def combine_rule(model_config: dict) -> str:
    """How an ensemble checkpoint combines its members (an ensemble saved before the rule was a
    choice: "mean")."""
    rule = model_config.get(COMBINE, "mean")
    if rule not in COMBINES:
        raise ValueError(f"policy ensemble: {COMBINE}={rule!r} in its checkpoint.json; expected one of {COMBINES}")
    return rule


def n_members(model_config: dict) -> int:
    """K for an ensemble checkpoint's model_config, 1 for a single policy's."""
    return len(model_config.get(MEMBERS) or ()) or 1


def mixture_logits(logits_KxA):
    """(K, A) members' (masked) logits -> (A,) log of the mean of their action probabilities."""
    logp_KxA = jax.nn.log_softmax(logits_KxA, axis=-1)
    return jax.scipy.special.logsumexp(logp_KxA, axis=0) - jnp.log(logits_KxA.shape[0])


def median_action(actions_K, factors) -> int:
    """The median of K members' actions (indices into the spec's `factors`, ascending): odd K its
    middle one; even K, of the two middle ones the one whose factor is nearer 1 (the smaller move)."""
    a = np.sort(np.asarray(actions_K).ravel())
    mid = len(a) // 2
    if len(a) % 2:
        return int(a[mid])
    lo, hi = int(a[mid - 1]), int(a[mid])
    return lo if abs(np.log(factors[lo])) <= abs(np.log(factors[hi])) else hi


def stack(paths, out, combine: str = "median", meta: dict | None = None) -> Path:
    """Saves the policy checkpoints at `paths` (>= 2; same spec, trunk and LR support; none itself an
    ensemble) as one ensemble checkpoint at `out` that combines its members by `combine` (COMBINES); its
    meta names the world model they were trained in (`world_models`, one per member, where they differ).
    A ValueError names the member and what differs."""
    paths = [Path(p) for p in paths]
    if combine not in COMBINES:
        raise ValueError(f"policy ensemble: combine={combine!r}; expected one of {COMBINES}")
    if len(paths) < 2:
        raise ValueError(f"a policy ensemble needs at least 2 member checkpoints, got {len(paths)}")
    first = checkpoints.load(paths[0], kind="policy")
    cks = [first] + [checkpoints.load(p, kind="policy", spec=first.spec) for p in paths[1:]]  # SpecMismatch names the field
    trunk0 = WorldModelConfig.from_dict(first.model_config["trunk"]).to_dict()  # defaults filled in
    support0 = lr_support(first.model_config)
    for p, ck in zip(paths, cks):
        if n_members(ck.model_config) > 1:
            raise ValueError(f"policy checkpoint {p} is itself an ensemble of {n_members(ck.model_config)}; give its members")
        trunk = WorldModelConfig.from_dict(ck.model_config["trunk"]).to_dict()
        diff = sorted(k for k in set(trunk) | set(trunk0) if trunk.get(k) != trunk0.get(k))
        if diff:
            raise ValueError(f"policy checkpoint {p}: its trunk differs from {paths[0]}'s in {diff} "
                             f"({[trunk.get(k) for k in diff]} against {[trunk0.get(k) for k in diff]}); members share one architecture")
        if (support := lr_support(ck.model_config)) != support0:
            raise ValueError(f"policy checkpoint {p}: LR support {support} differs from {paths[0]}'s {support0}; "
                             "members must mask the same actions")
    params = jax.tree.map(lambda *xs: np.stack([np.asarray(x) for x in xs]), *[ck.params for ck in cks])
    members = [{"path": str(p), "fingerprint": checkpoints.fingerprint(p), "seed": (ck.model_config.get("policy") or {}).get("seed")}
               for p, ck in zip(paths, cks)]
    model_config = {**first.model_config, MEMBERS: members, COMBINE: combine}
    wms = [ck.meta.get("world_model") for ck in cks]  # where each member was trained, as its checkpoint says
    trained_in = {} if None in wms else {"world_model": wms[0]} if len(set(wms)) == 1 else {"world_models": wms}
    return checkpoints.save(out, kind="policy", params=params, spec=first.spec, model_config=model_config,
                            meta={**(meta or {}), **trained_in, "ensemble_of": [m["path"] for m in members]})
