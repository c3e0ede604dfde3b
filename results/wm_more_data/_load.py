"""Shared by this folder's scripts: a world-model checkpoint, the shipped data (starter + the packed
dataset v2) read under its spec, and its own split (held-out and training runs)."""
from lrpilot import checkpoints
from lrpilot.app.worldmodel_cmd import resolve_ckpt
from lrpilot.trajectories import load_dir
from lrpilot.worldmodel.env import SimEnv
from lrpilot.worldmodel.model import WorldModelConfig, build
from lrpilot.worldmodel.train import split_runs, training_runs


def load(ckpt: str):
    """(checkpoint, SimEnv, all runs, held-out run indices, training run indices)."""
    ck = checkpoints.load(resolve_ckpt(ckpt), kind="worldmodel")
    cfg = WorldModelConfig.from_dict(ck.model_config)
    model, ser = build(cfg, ck.spec)
    full = load_dir(["collect/data/starter", "collect/data/v2.parquet"], ck.spec)
    _, ho = split_runs(full, cfg.heldout_frac, cfg.seed)
    return ck, SimEnv(model, ser), full, ho, training_runs(full, cfg)
