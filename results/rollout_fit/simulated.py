"""The runs a `fit-rollout` simulation (OUT.state/round_R.npz) covered, read back for the scripts beside this file.

    sims = simulated.load()    # parses --data DIR... --state NPZ [--ckpt C]
    sims.t, sims.sim, sims.real, sims.grps, sims.sides, sims.terms
"""
import argparse
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from lrpilot import checkpoints
from lrpilot.app.checks import data_dirs, resolve_ckpt
from lrpilot.trajectories import Trajectories, load_dir
from lrpilot.worldmodel import fidelity
from lrpilot.worldmodel.correction import ActionTerms, layout, paired_groups
from lrpilot.worldmodel.model import WorldModelConfig


def by_name(full: Trajectories, files, who: str) -> Trajectories:
    """The runs of `full` named as `files` (a simulation's), in that order: matched by file name, since the data
    directories (V2_NO21_DROP) may live anywhere; run names are unique across the data."""
    idx = {Path(f).name: i for i, f in enumerate(full.files)}
    if len(idx) != len(full.files):
        raise SystemExit(f"{who}: two runs of --data share a file name")
    return full.subset(np.array([idx[Path(f).name] for f in files]))


def load(who: str) -> SimpleNamespace:
    """The simulated runs (t, aligned with the state's medians `sim`), their real final vals, the groups whose runs
    were all simulated, those groups split by pairing (`sides`: all, paired = one seed per group, unpaired) and the
    checkpoint's term layout."""
    p = argparse.ArgumentParser(prog=who)
    p.add_argument("--data", nargs="+", required=True)
    p.add_argument("--state", required=True)
    p.add_argument("--ckpt", default="pretrained")
    a = p.parse_args()
    ck = checkpoints.load(resolve_ckpt(a.ckpt), kind="worldmodel")
    terms = layout(ActionTerms.of(WorldModelConfig.from_dict(ck.model_config)), np.asarray(ck.params["action_linear"]["w"]))
    full = load_dir(data_dirs(a.data), ck.spec)
    z = np.load(a.state)
    t = by_name(full, z["files"], who)
    sim, real = z["med"], fidelity.final_val(t)
    grps = [g for g in fidelity.groups(t) if np.isfinite(sim[g]).all()]
    paired = paired_groups(t) >= 0
    sides = {"all": grps, "paired (one seed per group)": [g for g in grps if paired[g].all()],
             "unpaired": [g for g in grps if not paired[g].any()]}
    return SimpleNamespace(state=a.state, t=t, sim=sim, real=real, grps=grps, sides=sides, terms=terms)
