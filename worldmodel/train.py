"""Training the world model on a trajectory dataset.

Runs are split into training and held-out sets by run group (runs that share a task and a
configuration stay together), never by step. The model is trained with the digit-weighted
cross-entropy on stochastic observation symbols only; the held-out loss is logged every
`eval_every` steps and the best parameters are kept.

Augmentation: each time a run is drawn, its stochastic observations (val, train; not the
first row nor a divergence row) are jittered by N(0, obs_noise) before discretization. The
jitter is on the scale of the evaluation noise, so it removes little information, but a few
hundred runs can then no longer be memorised through their noise digits. History masking
(`history_mask` = q): the model reads each past observation's loss digits as PAD with
probability q (it still predicts them): it must then forecast from the LR it was given and the
run's context, not only by continuing the curve it sees. Auxiliary loss (`aux_weight` = w): a
regression head on the trunk predicts each interval's change of val, at the position from which
val's first digit is predicted, and w times its squared error (in units of the changes' std) is
added: a low-variance signal for the small effect of an action, which the digits' cross-entropy
alone did not pick up (README, Simulator fidelity). Scheduled sampling (`own_draws` = q): each past
observation is, with probability q, read as the model's own draw (`own_draws` below): the simulator
reads its own draws from observation 1 on, where a model trained on real histories alone had never
read one. `action_response` other than "model": after
selection, a linear one-step action response is fit against the selected model (correction.py).
Training state (parameters, optimizer state, step, best held-out loss) is checkpointed so that an
interrupted run resumes.
"""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

import lrpilot
from lrpilot import checkpoints
from lrpilot.spec import EnvSpec
from lrpilot.trainers import harness
from lrpilot.trajectories import Trajectories, group_key
from lrpilot.worldmodel.env import quantile_sample
from lrpilot.worldmodel.model import WorldModelConfig, build, weighted_loss


def split_runs(traj: Trajectories, heldout_frac: float, seed: int = 0, val_frac: float = 0.0):
    """Indices (train, held-out), or with val_frac > 0 (train, validation, held-out); a deterministic
    hash of each run's group decides its side (the held-out groups do not depend on val_frac)."""
    keys = [group_key(m, f) for m, f in zip(traj.meta, traj.files)]
    u = np.array([int(hashlib.sha256(f"{seed}:{k}".encode()).hexdigest()[:8], 16) / 2**32 for k in keys])
    held = u < heldout_frac
    if val_frac > 0:
        val = (u >= heldout_frac) & (u < heldout_frac + val_frac)
        if not val.any() or held.all() or not held.any():
            raise ValueError(f"{len(set(keys))} run groups: too few for a train/validation/held-out split "
                             f"(heldout_frac {heldout_frac}, val_frac {val_frac})")
        return np.flatnonzero(~held & ~val), np.flatnonzero(val), np.flatnonzero(held)
    if held.all() or not held.any():  # tiny datasets: keep at least one run on each side
        order = np.argsort(u)
        held = np.zeros(len(u), bool)
        held[order[: max(1, int(round(heldout_frac * len(u))))]] = True
    return np.flatnonzero(~held), np.flatnonzero(held)


def training_runs(traj: Trajectories, cfg: WorldModelConfig) -> np.ndarray:
    """Indices of the runs a model with `cfg` trained on (its validation groups out when it selects on fidelity)."""
    return split_runs(traj, cfg.heldout_frac, cfg.seed, cfg.val_frac if cfg.select == "fidelity" else 0.0)[0]


def heldout_runs(traj: Trajectories, cfg: WorldModelConfig) -> np.ndarray:
    """Indices of the runs a model with `cfg` held out (never trained or selected on): its fidelity yardstick."""
    return split_runs(traj, cfg.heldout_frac, cfg.seed)[-1]


def encode(traj: Trajectories, cfg: WorldModelConfig) -> tuple[np.ndarray, np.ndarray]:
    ser = cfg.serializer(traj.spec)
    seq = ser.encode_episodes(traj.obs, traj.actions, traj.length, traj.static)
    return seq, ser.loss_weights(seq, cfg.loss_decay)


@dataclasses.dataclass
class TrainResult:
    params: dict
    log: list
    best_heldout: float
    n_train: int
    n_heldout: int
    meta: dict = dataclasses.field(default_factory=dict)


def train(traj: Trajectories, cfg: WorldModelConfig, out: str | Path | None = None, log=print,
          progress: bool = True, meta: dict | None = None, only_member: int | None = None,
          init_params: dict | None = None) -> TrainResult | None:
    """Trains (or resumes) a world model; saves the selected parameters at `out`. `init_params`
    (a trained model's parameters, e.g. the previous SimPLe round's) replace the random
    initialisation: see `warm_params`. An ensemble
    (cfg.ensemble = K > 1) trains K members one after the other (member i: seed + i, a bootstrap of
    the training groups; each saved at OUT.members/<i>, so a rerun skips finished members) and
    saves them stacked on a leading member axis in one checkpoint. `only_member=i` trains member i
    alone and returns None (members can then train in parallel processes; a run without it
    stacks them)."""
    if cfg.ensemble == 1:
        return _train_member(traj, cfg, out, log, progress, meta, init_params=init_params)
    one = dataclasses.replace(cfg, ensemble=1)
    if only_member is not None:
        if not 0 <= only_member < cfg.ensemble or out is None:
            raise ValueError(f"--member must be in [0, {cfg.ensemble}) and needs --out, got {only_member}")
        path = Path(f"{out}.members") / str(only_member)
        if checkpoints.exists(path):
            log(f"[worldmodel] member {only_member}: finished before ({path})")
        else:
            _train_member(traj, one, path, log, progress, meta, member=only_member, init_params=init_params)
        return None
    results = []
    for i in range(cfg.ensemble):
        path = None if out is None else Path(f"{out}.members") / str(i)
        if path is not None and checkpoints.exists(path):
            ck = checkpoints.load(path, kind="worldmodel", spec=traj.spec)
            same_config(one, ck.model_config, path)
            results.append(TrainResult(ck.params, ck.meta["log"], ck.meta["best_heldout_loss"], ck.meta["n_train_runs"],
                                       ck.meta["n_heldout_runs"], ck.meta))
            log(f"[worldmodel] member {i}: finished before, loaded from {path}")
            continue
        log(f"[worldmodel] member {i} of {cfg.ensemble}")
        results.append(_train_member(traj, one, path, log, progress, meta, member=i, init_params=init_params))
    params = jax.tree.map(lambda *xs: np.stack(xs), *[r.params for r in results])
    best = float(np.mean([r.best_heldout for r in results]))
    if out is not None:
        checkpoints.save(out, kind="worldmodel", params=params, spec=traj.spec, model_config=cfg.to_dict(),
                         meta={**{k: v for k, v in results[0].meta.items() if k not in ("log", "best_step", "best_heldout_loss",
                                                                                        "best_val_spearman")},
                               "best_heldout_loss": best, "members": [
                                   {k: r.meta.get(k) for k in ("best_step", "best_heldout_loss", "best_val_spearman")}
                                   for r in results]})
        log(f"[worldmodel] saved the {cfg.ensemble}-member ensemble at {out}")
    return TrainResult(params, [r.log for r in results], best, results[0].n_train, results[0].n_heldout, {})


ARCHITECTURE = ("n_layer", "d_model", "n_head", "base", "digits", "select", "val_frac")
"""WorldModelConfig fields of a training state's "architecture" identity (as first recorded)."""
NOT_IDENTITY = ARCHITECTURE + ("steps", "eval_every", "patience", "select_after", "ensemble",  # how long: a resume may extend it
                                "action_response", "action_level", "action_level_terms", "action_convex", "action_hinge",
                                "action_hinge_params", "action_hinge_offsets", "action_divergence",
                                "action_fit")
"""WorldModelConfig fields outside a training state's "training" identity (the action term is fit after training)."""


def same_config(cfg: WorldModelConfig, saved: dict, path) -> None:
    """A finished member at `path` belongs to this run only if its saved config is `cfg`; fields added
    since it was saved read as their defaults (a new field's default is the behaviour before it)."""
    old = WorldModelConfig.from_dict(saved)
    diffs = [f"{f.name}: checkpoint has {getattr(old, f.name)!r}, expected {getattr(cfg, f.name)!r}"
             for f in dataclasses.fields(cfg) if getattr(old, f.name) != getattr(cfg, f.name)]
    if diffs:
        raise checkpoints.CheckpointError(f"{path}: a member of another world-model configuration ({'; '.join(diffs)}); "
                                          "remove it or train with its configuration")


def change_targets(ser, obs_RxKxF, length_R, per_interval: bool = False):
    """The auxiliary loss's targets: `at(obs_BxKxF, length_B)` -> (change of val over each interval
    k -> k+1 (B, n), where it is defined (B, n): both rows recorded and neither diverged), and the
    std of those changes on the training runs (its unit): one number, or with `per_interval` one
    per interval k (n,), so that late, small changes weigh as much as the early drops."""
    vi, ratio = ser.spec.index("val"), ser.spec.divergence_ratio

    def at(obs, length):
        v = obs[:, :, vi]
        ok = (jnp.arange(1, v.shape[1])[None] < length[:, None]) & (v[:, 1:] < ratio) & (v[:, :-1] < ratio)
        ok = ok & jnp.isfinite(v[:, 1:]) & jnp.isfinite(v[:, :-1])
        return jnp.where(ok, v[:, 1:] - v[:, :-1], 0.0), ok

    tgt, ok = at(jnp.asarray(obs_RxKxF), jnp.asarray(length_R))
    tgt, ok = np.asarray(tgt), np.asarray(ok)
    sd = max(float(np.std(tgt[ok])), 1e-6) if ok.any() else 1.0
    if per_interval:  # intervals with fewer than 10 changes fall back to the global std
        sd = np.array([max(float(np.std(tgt[ok[:, k], k])), 1e-6) if ok[:, k].sum() >= 10 else sd for k in range(tgt.shape[1])],
                      np.float32)
    return at, sd


def own_draws(model, params, ser, key, seq_BxS, length_B, q: float):
    """Scheduled sampling, two-pass (Mihaylova & Martins 2019): observation j of a run (1 <= j <= length - 2,
    so that a later observation reads it) is, with probability q, replaced in the model's input by the model's
    own draw of its stochastic fields, sampled as the simulator samples (`env.quantile_sample`: one uniform
    per value, carried through its digits) from the teacher-forced prediction with no gradient, one pass per
    digit (digit d given the value's drawn digits before it; earlier observations as read in that pass, their
    later digits still real: a second digit is 1/base of its value). Returns (the sequence as read (B, S), drawn (B, S): True
    at a drawn value's digits); the targets stay the real symbols."""
    spec, D, n = ser.spec, ser.digits, ser.spec.n_decisions
    fields = [i for i, f in enumerate(spec.fields) if not f.deterministic]
    pos_JxFxD = jnp.asarray([[[ser.obs_pos(j) + f * D + d for d in range(D)] for f in fields] for j in range(1, n + 1)])
    k_pick, k_u = jax.random.split(key)
    B = seq_BxS.shape[0]
    pick_BxJ = jax.random.bernoulli(k_pick, q, (B, n)) & (jnp.arange(1, n + 1)[None] < length_B[:, None] - 1)
    u = 1.0 - jax.random.uniform(k_u, (B * n * len(fields),))
    draw = jax.vmap(lambda lg, u_: quantile_sample(None, lg, u_))
    p, s = jax.lax.stop_gradient(params), seq_BxS
    for d in range(D):
        lg = model.apply({"params": p}, s)[0][:, pos_JxFxD[..., d] - 1]  # (B, n, F, base): predicting digit d
        sym, u = draw(lg.reshape(-1, lg.shape[-1]), u)
        s = s.at[:, pos_JxFxD[..., d]].set(jnp.where(pick_BxJ[..., None], sym.reshape(pick_BxJ.shape + (-1,)),
                                                     s[:, pos_JxFxD[..., d]]))
    drawn = jnp.zeros(s.shape, bool).at[:, pos_JxFxD].set(jnp.broadcast_to(pick_BxJ[:, :, None, None], (B,) + pos_JxFxD.shape))
    return s, drawn


def bootstrap(traj: Trajectories, idx: np.ndarray, seed: int) -> np.ndarray:
    """`idx` resampled by run group with replacement (as many groups as there are)."""
    keys = np.array([group_key(traj.meta[i], traj.files[i]) for i in idx])
    uniq = np.unique(keys)
    pick = np.random.default_rng(seed).choice(len(uniq), len(uniq), replace=True)
    return np.concatenate([idx[keys == uniq[j]] for j in pick])


FITTED_TERMS = ("action_linear", "action_hazard")  # fit after training (correction.py, hazard.py), not trained
WARM_FIELDS = ("n_layer", "d_model", "n_head", "base", "digits", "coding", "value_embed", "action_embed", "head", "mixture")
"""WorldModelConfig fields a warm start must share with its initialisation: the parameters' shapes and what they read."""


def check_warm_start(cfg: WorldModelConfig, spec: EnvSpec, init_cfg: WorldModelConfig, init_spec: EnvSpec, name: str) -> None:
    """A ValueError naming the first field in which the checkpoint `name` (config `init_cfg`, spec
    `init_spec`) cannot initialise a model of `cfg` on `spec`; checked before any data is read."""
    if init_spec != spec:
        raise ValueError(f"{name}: its observation spec (version {init_spec.version}) differs from the spec trained on "
                         f"(version {spec.version}; --spec); warm start needs the same observations")
    for f in WARM_FIELDS:
        if getattr(init_cfg, f) != getattr(cfg, f):
            raise ValueError(f"{name}: {f} = {getattr(init_cfg, f)!r}, this model's {getattr(cfg, f)!r}; "
                             "warm start needs the same architecture")


def warm_params(fresh: dict, init: dict, member: int | None = None) -> dict:
    """`init` in place of the fresh initialisation `fresh`: its fitted action terms (linear term,
    divergence hazard) are dropped (they are refit after training); an ensemble's stacked
    parameters give member i's (member 0's for a single model). Parameters of another
    architecture are refused, naming the first leaf that differs."""
    init = {k: v for k, v in init.items() if k not in FITTED_TERMS}
    f_leaves, f_tree = jax.tree.flatten_with_path(fresh)
    i_leaves, i_tree = jax.tree.flatten_with_path(init)
    if f_tree != i_tree:
        raise ValueError("init_params: the parameters' structure differs from this WorldModelConfig's model "
                         f"({sorted(init)} vs {sorted(fresh)}); warm start needs the same architecture")
    stacked = all(np.ndim(b) == np.ndim(a) + 1 for (_, a), (_, b) in zip(f_leaves, i_leaves))
    out = []
    for (path, a), (_, b) in zip(f_leaves, i_leaves):
        b = np.asarray(b)[member or 0] if stacked else np.asarray(b)
        if b.shape != np.shape(a):
            raise ValueError(f"init_params: {jax.tree_util.keystr(path)} has shape {b.shape}, this model's "
                             f"{np.shape(a)}; warm start needs the same architecture")
        out.append(jnp.asarray(b, dtype=jnp.asarray(a).dtype))
    return jax.tree.unflatten(f_tree, out)


def _train_member(traj: Trajectories, cfg: WorldModelConfig, out, log, progress, meta, member: int | None = None,
                  init_params: dict | None = None):
    spec: EnvSpec = traj.spec
    model, ser = build(cfg, spec)
    if cfg.select == "fidelity":
        tr_idx, va_idx, ho_idx = split_runs(traj, cfg.heldout_frac, cfg.seed, cfg.val_frac)
    else:
        (tr_idx, ho_idx), va_idx = split_runs(traj, cfg.heldout_frac, cfg.seed), np.zeros(0, int)
    if member is not None and cfg.bootstrap:  # an ensemble member: its own initialisation and batches, a bootstrap of the groups
        tr_idx = bootstrap(traj, tr_idx, cfg.seed * 1000 + member)
    seed = cfg.seed + (member or 0)
    seq, w = encode(traj, cfg)
    obs_tr, act_tr, len_tr = (jnp.asarray(x[tr_idx]) for x in (traj.obs, traj.actions, traj.length))
    static_tr = None if traj.static is None else jnp.asarray(traj.static[tr_idx])
    seq_tr = jnp.asarray(seq[tr_idx])
    seq_ho, w_ho = jnp.asarray(seq[ho_idx]), jnp.asarray(w[ho_idx])
    stoch = jnp.asarray([not f.deterministic for f in spec.fields])
    ratio = spec.divergence_ratio
    log(f"[worldmodel] {len(traj)} runs: {len(tr_idx)} train, {len(va_idx)} validation, {len(ho_idx)} held out (split by run group); "
        f"sequence length {ser.seq_len}, vocab {ser.vocab_size}")

    sched = optax.warmup_cosine_decay_schedule(0.0, cfg.learning_rate, cfg.warmup, max(cfg.steps, cfg.warmup + 1),
                                               cfg.learning_rate / 10)
    mask = lambda p: jax.tree.map(lambda x: x.ndim >= 2, p)
    tx = optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(sched, b1=0.9, b2=0.99, weight_decay=cfg.weight_decay, mask=mask))
    key = jax.random.key(seed)
    aux = cfg.aux_weight > 0
    params = model.init(key, seq_tr[:1], with_change=aux)["params"]
    if init_params is not None:
        params = warm_params(params, init_params, member)
    change_at, change_sd = change_targets(ser, obs_tr, len_tr, cfg.aux_scale == "interval")

    def loss_fn(p, s_in, s, wt, k, obs, length):
        if not aux:
            logits, _ = model.apply({"params": p}, s_in, deterministic=False, rngs={"dropout": k})
            ce = weighted_loss(logits, s, wt)[0]
            return ce, {"train_loss": ce}
        logits, _, change_BxS = model.apply({"params": p}, s_in, deterministic=False, rngs={"dropout": k}, with_change=True)
        tgt_BxN, ok_BxN = change_at(obs, length)
        mse = jnp.sum(jnp.where(ok_BxN, (change_BxS[:, change_pos] - tgt_BxN / change_sd) ** 2, 0.0)) / jnp.maximum(ok_BxN.sum(), 1)
        ce = weighted_loss(logits, s, wt)[0]
        return ce + cfg.aux_weight * mse, {"train_loss": ce, "change_mse": mse}

    change_pos = jnp.asarray([ser.obs_pos(j) + spec.index("val") * ser.digits - 1 for j in range(1, spec.n_decisions + 1)])
    field_of, sig_of, step_of = ser.symbol_roles()
    loss_pos = jnp.asarray((field_of >= 0) & np.isin(field_of, [spec.index(n) for n in ("val", "train")]))
    step_of, sig_of = jnp.asarray(step_of), jnp.asarray(sig_of)

    def masked_input(key, s_):
        """The batch as the model reads it: with history_mask = q, each observation's loss digits
        become PAD with probability q (never observation 0, which is the same for every run)."""
        if cfg.history_mask == 0:
            return s_
        hide = jax.random.bernoulli(key, cfg.history_mask, (s_.shape[0], spec.n_decisions + 1))
        hide = hide[:, step_of] & loss_pos[None] & (step_of >= 1)[None]
        return jnp.where(hide, ser.pad, s_)

    def augmented_batch(key):
        k_idx, k_noise = jax.random.split(key)
        idx = jax.random.randint(k_idx, (cfg.batch_size,), 0, seq_tr.shape[0])
        obs = obs_tr[idx]
        rows = jnp.arange(obs.shape[1])[None, :, None]
        jitter_ok = stoch[None, None, :] & (rows >= 1) & (obs < ratio)
        obs = obs + jnp.where(jitter_ok, cfg.obs_noise * jax.random.normal(k_noise, obs.shape), 0.0)
        s_ = ser.encode_episodes(obs, act_tr[idx], len_tr[idx], None if static_tr is None else static_tr[idx])
        return s_, ser.loss_weights(s_, cfg.loss_decay), obs, len_tr[idx]

    @jax.jit
    def train_step(state, st):
        k_step = jax.random.fold_in(key, st)
        k_batch, k_drop = jax.random.split(k_step)
        k_mask = jax.random.fold_in(k_step, 1)  # beside the split: the streams of history_mask = 0 stay as they were
        s_b, w_b, obs_b, len_b = augmented_batch(k_batch)
        s_in = s_b
        if cfg.own_draws > 0:  # a drawn value's later digits are not targets: their input is its drawn lead digit
            s_in, drawn = own_draws(model, state["params"], ser, jax.random.fold_in(k_step, 2), s_b, len_b, cfg.own_draws)
            w_b = jnp.where(drawn & (sig_of >= 1)[None], 0.0, w_b)
        (_, metrics), g = jax.value_and_grad(loss_fn, has_aux=True)(state["params"], masked_input(k_mask, s_in), s_b, w_b, k_drop,
                                                                  obs_b, len_b)
        upd, o = tx.update(g, state["opt"], state["params"])
        return {"params": optax.apply_updates(state["params"], upd), "opt": o}, metrics

    @jax.jit
    def eval_loss(p, s, wt):
        logits, _ = model.apply({"params": p}, s)
        return weighted_loss(logits, s, wt)

    def heldout(state):
        tot, wsum = 0.0, 0.0
        for j in range(0, seq_ho.shape[0], 256):
            l, n = eval_loss(state["params"], seq_ho[j : j + 256], w_ho[j : j + 256])
            tot, wsum = tot + float(l) * float(n), wsum + float(n)
        ho = tot / max(wsum, 1e-8)
        if probe is None:
            return {"heldout_loss": ho, "score": ho}
        rho, _ = probe.score(state["params"])
        return {"heldout_loss": ho, "val_spearman": rho, "score": -rho if np.isfinite(rho) else np.inf}

    probe = None
    if cfg.select == "fidelity":
        from lrpilot.worldmodel.fidelity import Probe

        probe = Probe(model, ser, traj.subset(va_idx), cfg.select_samples, seed)

    identity = {"spec": spec.to_dict(), "architecture": {k: getattr(cfg, k) for k in ARCHITECTURE},
                "training": harness.options(cfg, NOT_IDENTITY)}
    fitted = harness.fit({"params": params, "opt": tx.init(params)}, lambda st, i: train_step(st, jnp.int32(i)),
                         harness.Schedule(cfg.steps, eval_every=cfg.eval_every, patience=cfg.patience,
                                          select_after=min(cfg.select_after, cfg.steps)), heldout,
                         state_dir=f"{out}.state" if out else None, identity=identity,
                         progress=progress, desc="worldmodel", log=lambda s: log(f"[worldmodel] {s}"),
                         postfix=lambda e: {k: f"{e[k]:.4f}" for k in ("train_loss", "change_mse", "heldout_loss", "val_spearman") if k in e})
    best_params, best_step, history = fitted.best_state["params"], fitted.best_step, fitted.history
    best = next(h["heldout_loss"] for h in history if h["step"] == best_step)  # the held-out loss of the selected state
    if cfg.action_response != "model":
        from lrpilot.worldmodel.correction import with_action_linear

        best_params = with_action_linear(model, best_params, ser, traj.subset(tr_idx), cfg.action_fit)
        log(f"[worldmodel] action_linear: weights of phi {np.round(best_params['action_linear']['w'], 5).tolist()}")
    run_meta = {"best_heldout_loss": best, "best_step": best_step, "log": history, "n_train_runs": len(tr_idx),
                "selected_on": cfg.select, "n_val_runs": len(va_idx),
                "best_val_spearman": next((h.get("val_spearman") for h in history if h["step"] == best_step), None),
                "n_heldout_runs": len(ho_idx), "heldout_files": [Path(traj.files[i]).name for i in ho_idx],
                "lrpilot_version": lrpilot.__version__, **(meta or {})}
    if member is not None:
        run_meta["member"] = member
    if out is not None:
        checkpoints.save(out, kind="worldmodel", params=best_params, spec=spec, model_config=cfg.to_dict(), meta=run_meta)
        log(f"[worldmodel] saved {out} (held-out loss {best:.4f} at the selected step {best_step})")
    return TrainResult(best_params, history, best, len(tr_idx), len(ho_idx), run_meta)
