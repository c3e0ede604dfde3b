"""The noise ceiling of the within-group Spearman on the replayed held-out groups, beside the world model's.

For every held-out group with replays (`replay_heldout.py`): the Spearman of the replays' final normalised val
against the originals' (real vs real), and of the world model's simulated median from prefix 1 under the real
actions (8 samples, common keys, the yardstick's key: the same draws as `lrpilot worldmodel eval --samples 8
--seed 0`) against the originals', against the replays' and against their mean. Prints a table per group and
writes OUT/ceiling.json.

    python results/noise_ceiling/ceiling.py --data starter V2_BEFORE_TIMING $R --replays results/noise_ceiling/replays \
        --out results/noise_ceiling [--ckpt checkpoints/pretrained/worldmodel]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import jax
import numpy as np
from replay_heldout import heldout  # this directory's script (on sys.path when run as a script)

from lrpilot.app.checks import data_dirs
from lrpilot.io import write_json
from lrpilot.trajectories import load_dir
from lrpilot.worldmodel import fidelity
from lrpilot.worldmodel.ceiling import noise_ceiling, replay_finals
from lrpilot.worldmodel.env import SimEnv
from lrpilot.worldmodel.model import build
from lrpilot.worldmodel.train import group_key

BUCKETS = (0.0, 0.01, 0.02, 0.05, 0.1, 0.3, np.inf)


def concordance(grps, files, real, sim, rep) -> list[dict]:
    """Within-group pairs of replayed runs, by how far apart their original finals are: the share the world
    model and the replays order as the originals."""
    d, cs, cr = [], [], []
    for g in grps:
        g = [i for i in g if files[i] in rep]
        for a in range(len(g)):
            for b in range(a + 1, len(g)):
                i, j = g[a], g[b]
                s = np.sign(real[i] - real[j])
                d.append(abs(real[i] - real[j]))
                cs.append(np.sign(sim[i] - sim[j]) == s)
                cr.append(np.sign(rep[files[i]] - rep[files[j]]) == s)
    d, cs, cr = np.array(d), np.array(cs), np.array(cr)
    out = []
    for lo, hi in zip(BUCKETS[:-1], BUCKETS[1:]):
        m = (d >= lo) & (d < hi)
        if m.any():
            out.append({"lo": lo, "hi": float(hi) if np.isfinite(hi) else 9.99, "pairs": int(m.sum()),
                        "sim": float(cs[m].mean()), "replay": float(cr[m].mean())})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ckpt", default="checkpoints/pretrained/worldmodel")
    ap.add_argument("--data", nargs="+", required=True)
    ap.add_argument("--replays", nargs="+", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--samples", type=int, default=8)
    args = ap.parse_args()
    ck, cfg, held = heldout(args.ckpt, args.data)
    model, ser = build(cfg, ck.spec)
    rep = replay_finals(load_dir(data_dirs(args.replays, "--replays"), ck.spec))
    keep = [g for g in fidelity.groups(held) if sum(Path(held.files[i]).name in rep for i in g) >= 3]
    traj = held.subset(np.concatenate(keep))
    grps = fidelity.groups(traj)
    env = SimEnv(model, ser)
    params = env.params(ck.params, traj, max_prefix=1)
    k_sim, _ = jax.random.split(jax.random.key(0))  # fidelity.fidelity's key for seed 0
    sim = np.nanmedian(fidelity.sim_final(env, params, traj, args.samples, k_sim), axis=1)
    real = fidelity.final_val(traj)
    files = [Path(f).name for f in traj.files]
    nc = noise_ceiling(grps, files, real, sim, rep)
    rows = []
    print("| group | task | model | iters | runs | real spread | replay - real (median abs) | real vs replay | "
          "world model vs real | vs replay |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for g in grps:
        g = np.array([i for i in g if files[i] in rep])
        m = traj.meta[g[0]]
        r = np.array([rep[files[i]] for i in g])
        row = {"group": group_key(m, traj.files[g[0]]), "task": m["task"], "n_layer": m["config"]["n_layer"],
               "n_embd": m["config"]["n_embd"], "max_iters": m["config"]["max_iters"], "runs": len(g),
               "spread": float(np.ptp(real[g])), "seed_mad": float(np.median(np.abs(r - real[g]))),
               "real_vs_replay": fidelity.spearman(r, real[g]), "sim_vs_real": fidelity.spearman(sim[g], real[g]),
               "sim_vs_replay": fidelity.spearman(sim[g], r)}
        rows.append(row)
        print(f"| {row['group']} | {row['task']} | {row['n_layer']}x{row['n_embd']} | {row['max_iters']} | {len(g)} | "
              f"{row['spread']:.3f} | {row['seed_mad']:.3f} | {row['real_vs_replay']:.2f} | {row['sim_vs_real']:.2f} | "
              f"{row['sim_vs_replay']:.2f} |")
    pairs = concordance(grps, files, real, sim, rep)
    print("| real difference of a pair's final vals | pairs | world model orders them as the originals | replays do |")
    print("|---|---|---|---|")
    for p in pairs:
        print(f"| {p['lo']:.2f}-{p['hi']:.2f} | {p['pairs']} | {p['sim']:.2f} | {p['replay']:.2f} |")
    print(json.dumps(nc, indent=1))
    write_json(Path(args.out) / "ceiling.json", {"checkpoint": args.ckpt, "samples": args.samples, "noise_ceiling": nc,
                                                 "pairs": pairs, "groups": rows})


if __name__ == "__main__":
    main()
