"""Per-step spread of the round-3 ensemble's members on val, under the lambda-0 policy's sampled
rollouts, by the LR / base LR at the step: the scale a halt threshold (PolicyConfig.halt_spread) is set on.
Then the same spread under schedules that move to a fixed multiple of the base LR and hold it (x1/16 to
x64): where the data thin out (the far ends of the LR range), independent members should disagree more."""
import dataclasses
import sys

import jax
import jax.numpy as jnp
import numpy as np

from lrpilot import checkpoints
from lrpilot.policy.network import PolicyConfig, build
from lrpilot.policy.ppo import make_rollout
from lrpilot.policy.train import load_world_model
from lrpilot.trajectories import load_dir
from lrpilot.worldmodel.env import SimEnv, schedule_policy
from lrpilot.worldmodel.model import WorldModelConfig

pol_path = sys.argv[1] if len(sys.argv) > 1 else "results/pessimism/round3_lambda0"
wm_path = sys.argv[2] if len(sys.argv) > 2 else "results/simple_v2/round_3/worldmodel"  # usage: [POLICY [WORLD_MODEL]]
data = ["collect/data/starter", "collect/data/v2"] + [f"results/simple_v2/round_{i}/data" for i in range(4)]
wm_ck, wm_cfg, wm, ser = load_world_model(wm_path)
traj = load_dir(data, wm_ck.spec)
env = SimEnv(wm, ser)
ep = env.params(jax.tree.map(jnp.asarray, wm_ck.params), traj, 5, 1.0)
ck = checkpoints.load(pol_path, kind="policy", spec=wm_ck.spec)
net = build(dataclasses.replace(WorldModelConfig.from_dict(ck.model_config["trunk"]), ensemble=1), ck.spec)
params = jax.tree.map(jnp.asarray, ck.params)
n = 128
r0 = make_rollout(net, env, PolicyConfig(n_envs=n))(params, ep, jax.random.key(0), n)
spread = np.asarray(r0.spread)  # first written as the reward difference of this rollout with pessimism 1.0: the same
act = np.asarray(r0.active)
s = spread[act]
print(f"{pol_path}: {act.sum()} steps of {n} episodes; spread of val (normalised): mean {s.mean():.4f}, "
      "quantiles 50/75/90/95/99: " + " ".join(f"{q:.4f}" for q in np.quantile(s, [.5, .75, .9, .95, .99])))
log2f = np.log2(np.asarray(wm_ck.spec.actions))
lr = np.cumsum(np.where(act, log2f[np.asarray(r0.action)], 0.0), 1)  # log2 LR change from the episode's start
for lo, hi in ((-99, -1), (-1, 1), (1, 3), (3, 99)):
    m = act & (lr >= lo) & (lr < hi)
    if m.sum():
        print(f"  LR x2^[{lo},{hi}) from the start: {m.sum()} steps, mean spread {spread[m].mean():.4f}")
ret = lambda ro: np.where(np.asarray(ro.active), np.asarray(ro.reward), 0).sum(1)
print(f"  episode return {ret(r0).mean():.4f}, spread summed over an episode {np.where(act, spread, 0).sum(1).mean():.4f}")


def held_spread(mult: float, n_envs: int = 128):
    """Per-step spread (n_envs, n) and active mask under the schedule that moves to mult x base and holds it."""
    act_fn = schedule_policy(wm_ck.spec, lambda k: jnp.float32(mult))

    def one(key):
        k0, k1 = jax.random.split(key)
        _, st = env.reset(k0, ep)

        def body(st, kk):
            ka, ks = jax.random.split(kk)
            _, st2, _, _, _, info = env.step(ks, st, act_fn(ka, st), ep)
            return st2, (info["spread"], ~st.done, st2.lr_rel)  # the LR the predicted interval trains at

        return jax.lax.scan(body, st, jax.random.split(k1, wm_ck.spec.n_decisions))[1]

    sp, active, lr = jax.jit(jax.vmap(one))(jax.random.split(jax.random.key(1), n_envs))
    return np.asarray(sp), np.asarray(active), np.asarray(lr)


print("  held at a multiple of the base LR (128 episodes each; steps where the LR has reached it):")
for mult in (1 / 16, 1 / 4, 1.0, 4.0, 16.0, 64.0):
    sp, active, lr = held_spread(mult)
    at = active & (np.abs(np.log2(lr / mult)) < 0.5)
    print(f"    x{mult:g}: {at.sum()} steps, mean spread {sp[at].mean():.4f}" if at.sum() else f"    x{mult:g}: never reached")
