"""The shared setup of this folder's scripts: a world-model checkpoint and its own held-out split of the shipped
data, as the simulator that `worldmodel.fidelity` ranks from prefix 1."""

import sys

from lrpilot import checkpoints
from lrpilot.app.checks import data_dirs, resolve_ckpt
from lrpilot.trajectories import load_dir
from lrpilot.worldmodel.env import SimEnv
from lrpilot.worldmodel.model import WorldModelConfig, build
from lrpilot.worldmodel.train import heldout_runs


def load_args(max_prefix: int = 1):
    """(ckpt name, samples S, SimEnv, its EnvParams with prefixes up to `max_prefix`, held-out Trajectories) from
    argv: CKPT [S]."""
    ckpt = sys.argv[1] if len(sys.argv) > 1 else "pretrained"
    S = int(sys.argv[2]) if len(sys.argv) > 2 else 8
    ck = checkpoints.load(resolve_ckpt(ckpt), kind="worldmodel")
    cfg = WorldModelConfig.from_dict(ck.model_config)
    env = SimEnv(*build(cfg, ck.spec))
    full = load_dir(data_dirs(["starter", "v2"]), ck.spec)
    traj = full.subset(heldout_runs(full, cfg))
    return ckpt, S, env, env.params(ck.params, traj, max_prefix=max_prefix), traj
