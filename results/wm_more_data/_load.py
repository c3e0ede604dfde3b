"""Shared by this folder's scripts: a world-model checkpoint, the shipped data (starter + the packed
dataset v2) read under its spec, and its own split (held-out and training runs)."""
from types import SimpleNamespace

import jax
import numpy as np

from lrpilot import checkpoints
from lrpilot.app.worldmodel_cmd import resolve_ckpt
from lrpilot.trajectories import load_dir
from lrpilot.worldmodel import responses as R
from lrpilot.worldmodel.env import SimEnv
from lrpilot.worldmodel.model import WorldModelConfig, build
from lrpilot.worldmodel.train import heldout_runs, training_runs


def load(ckpt: str):
    """(checkpoint, SimEnv, all runs, held-out run indices, training run indices)."""
    ck = checkpoints.load(resolve_ckpt(ckpt), kind="worldmodel")
    cfg = WorldModelConfig.from_dict(ck.model_config)
    model, ser = build(cfg, ck.spec)
    full = load_dir(["collect/data/starter", "collect/data/v2.parquet"], ck.spec)
    return ck, SimEnv(model, ser), full, heldout_runs(full, cfg), training_runs(full, cfg)


def walks(ck, env, full, idx, samples: int) -> SimpleNamespace:
    """The random-walk decisions of the runs `idx` that fidelity's action effect reads (k >= n/2) and
    the simulator's one step from each real prefix under the action taken: traj, rows ((run, k)),
    x (the action's log2 factor), y (the real change of val), run, v0 (val at k), params, key and
    taken (the simulated mean change of val), all (rows,) but traj, params and key."""
    traj = full.subset(idx)
    rows, x, y = R.action_rows(traj)
    vi = ck.spec.index("val")
    v0 = np.array([traj.obs[r, k, vi] for r, k in rows])
    params, key = env.params(ck.params, traj, max_prefix=1), jax.random.key(0)
    taken = R.sim_next(env, params, traj, rows, samples, key) - v0
    return SimpleNamespace(traj=traj, rows=rows, x=x, y=y, run=np.array([r for r, _ in rows]), v0=v0, params=params,
                           key=key, taken=taken)
