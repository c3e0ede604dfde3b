"""`lrpilot worldmodel train`, `fit-action`, `fit-rollout`, `eval` and `compare`."""

from __future__ import annotations

from pathlib import Path

from lrpilot.app import flags
from lrpilot.app.checks import data_dirs, out_dir, out_parent, resolve_ckpt


def _load_data(paths, spec):
    from lrpilot.trajectories import load_dir

    traj = load_dir(paths, spec)
    if len(traj) < 2:
        raise ValueError(f"{paths}: {len(traj)} trajectory file(s); a world model needs at least 2 runs")
    return traj


def cmd_train(args) -> int:
    from lrpilot.spec import SPECS
    from lrpilot.worldmodel.model import WorldModelConfig
    from lrpilot.worldmodel.train import check_warm_start, train

    cfg = flags.build_config(WorldModelConfig, args)
    if not 0 < args.data_fraction <= 1:
        raise ValueError(f"--data-fraction must be in (0, 1], got {args.data_fraction}")
    if args.member is not None and not 0 <= args.member < cfg.ensemble:
        raise ValueError(f"--member must be in [0, --ensemble={cfg.ensemble}), got {args.member}")
    init = None
    if args.init:
        from lrpilot import checkpoints

        ck = checkpoints.load(resolve_ckpt(args.init), kind="worldmodel")
        check_warm_start(cfg, SPECS[args.spec], WorldModelConfig.from_dict(ck.model_config), ck.spec, f"--init {args.init}")
        init = ck.params
    dirs = data_dirs(args.data)
    out_parent(args.out)
    traj = _load_data(dirs, SPECS[args.spec])
    if args.data_fraction < 1.0:
        from lrpilot.worldmodel.train import split_runs

        keep, _ = split_runs(traj, 1.0 - args.data_fraction, seed=12345)  # whole run groups, another hash than the held-out split
        print(f"[worldmodel] --data-fraction {args.data_fraction}: {len(keep)} of {len(traj)} runs")
        traj = traj.subset(keep)
    train(traj, cfg, args.out, progress=not args.quiet, init_params=init,
          meta={"data": list(args.data), "data_fraction": args.data_fraction, "spec": args.spec,
                "command": "lrpilot worldmodel train", "init": args.init}, only_member=args.member)
    return 0


def cmd_eval(args) -> int:
    from lrpilot import checkpoints
    from lrpilot.app import plots
    from lrpilot.io import write_json
    from lrpilot.trajectories import load_dir
    from lrpilot.worldmodel import fidelity, forecast
    from lrpilot.worldmodel.model import WorldModelConfig, build
    from lrpilot.worldmodel.train import heldout_runs, training_runs

    if args.replays and (args.all_runs or args.no_fidelity):
        raise ValueError("--replays: the noise ceiling is part of the fidelity section; drop --all-runs / --no-fidelity")
    replay_dirs = data_dirs(args.replays, "--replays") if args.replays else None
    out = out_dir(args.out)
    ck = checkpoints.load(resolve_ckpt(args.ckpt), kind="worldmodel")  # its own spec decides the observations
    cfg = WorldModelConfig.from_dict(ck.model_config)
    model, ser = build(cfg, ck.spec)
    full = traj = load_dir(data_dirs(args.data), ck.spec)
    replays = load_dir(replay_dirs, ck.spec) if replay_dirs else None
    if not args.all_runs:
        traj = traj.subset(heldout_runs(traj, cfg))
    print(f"[forecast] {len(traj)} held-out runs")
    result, samples = forecast.evaluate(model, ck.params, ser, traj, contexts=tuple(args.contexts),
                                        n_samples=args.samples, seed=args.seed)
    if not args.all_runs and not args.no_fidelity:
        tr = training_runs(full, cfg)
        result["fidelity"], details = fidelity.evaluate(model, ck.params, ser, traj, full.subset(tr), args.samples, args.seed,
                                                        sides=("heldout",) if args.heldout_only else ("heldout", "train"))
        plots.fidelity_groups(details, out / "fidelity_heldout.png")
        if replays is not None:
            from lrpilot.worldmodel.ceiling import noise_ceiling, replay_finals

            nc = noise_ceiling(details["groups"], details["traj"].files, details["real"], details["sim"],
                               replay_finals(replays))
            result["fidelity"]["heldout"]["noise_ceiling"] = nc
            print(f"[fidelity] noise ceiling on {nc['n_groups']} replayed held-out groups: real vs replay "
                  f"{fidelity._fmt(nc['real_vs_replay'])}, world model vs real {fidelity._fmt(nc['sim_vs_real'])} "
                  f"(vs the mean of both seeds {fidelity._fmt(nc['sim_vs_mean_of_seeds'])})")
    result["checkpoint"] = str(args.ckpt)
    result["checkpoint_saved_at"] = ck.meta["saved_at"]  # which model 'pretrained' was when this ran
    import lrpilot

    result["lrpilot_version"] = lrpilot.__version__
    write_json(out / "forecast.json", result)
    for c in args.contexts:
        plots.fan_charts(samples, out / f"fan_context{c}.png", c)
    f = result["forecasters"]
    print("horizon  " + "  ".join(f"{n:>11s}" for n in f))
    for i, h in enumerate(result["horizons"]):
        print(f"{h:7d}  " + "  ".join(f"{f[n]['mae'][i]:11.4f}" if f[n]["mae"][i] is not None else f"{'-':>11s}" for n in f))
    print(f"-> {out}/forecast.json, fan charts in {out}")
    return 0


def fidelity_table(paths: list[str]) -> str:
    """A markdown table of the held-out fidelity and forecasting of several `worldmodel eval` outputs, a
    row per output directory (named by the directory); the noise ceiling where the eval had --replays."""
    from lrpilot.io import read_json
    from lrpilot.worldmodel.fidelity import fmt_interval

    def num(x, d=3):
        return "-" if x is None else f"{x:.{d}f}"

    def ms(d):
        return "-" if d.get("mean") is None else num(d["mean"]) + (f" ± {d['stderr']:.3f}" if d.get("stderr") else "")

    rows = ["| world model | held-out groups | within-group Spearman | LR regression; one-step linear | Spearman on training groups | "
            "action-effect ratio [95% interval] (real; linear one-step model) | high-LR cost ratio [95% interval] (real, groups) | fork-effect ratio (real; corr) | "
            "final-val MAE (train mean; one-step linear) | forecast MAE h=1 / 5 / 10 (last value) | "
            "replayed groups: noise ceiling / world model (groups) |",
            "|---|---|---|---|---|---|---|---|---|---|---|"]
    for path in paths:
        r = read_json(Path(path) / "forecast.json")
        f, fc = r.get("fidelity", {}).get("heldout"), r["forecasters"]
        if f is None:
            raise ValueError(f"{path}/forecast.json has no fidelity section (run worldmodel eval without --no-fidelity)")
        ae, hl, fe = f["action_effect"], f["high_lr_cost"], f.get("fork_effect") or {}
        tr = r["fidelity"].get("train") or {}
        fork = "-" if fe.get("ratio") is None else f"{num(fe['ratio'], 2)} ({num(fe['real'], 4)}; {num(fe.get('corr'), 2)})"
        h = lambda n, i: num(fc[n]["mae"][i])  # noqa: E731
        nc = f.get("noise_ceiling")  # written with --replays
        ceiling = "-" if nc is None else f"{ms(nc['real_vs_replay'])} / {ms(nc['sim_vs_real'])} ({nc['n_groups']})"
        rows.append(f"| `{Path(path).name}` | {f['n_groups']} | {ms(f['within_group_spearman'])} | "
                    f"{ms(f['regression_spearman'])}; {ms(f.get('onestep_spearman', {}))} | {ms(tr.get('within_group_spearman', {}))} | {num(ae['ratio'], 2)}{fmt_interval(ae.get('ratio_ci95'))} "
                    f"({num(ae['real'], 4)}; {num(ae.get('linear_ratio'), 2)}) | "
                    f"{num(hl['ratio'], 2)}{fmt_interval(hl.get('ratio_ci95'))} ({num(hl['real'], 3)}"
                    f"{'' if hl.get('n_groups') is None else ', ' + str(hl['n_groups']) + ' groups'}) | {fork} | {num(f['final_val_mae'])} ({num(f['final_val_mae_train_mean'])}; "
                    f"{num(f.get('onestep_final_val_mae'))}) | "
                    f"{h('worldmodel', 0)} / {h('worldmodel', 4)} / {h('worldmodel', 9)} "
                    f"({h('last_value', 0)} / {h('last_value', 4)} / {h('last_value', 9)}) | {ceiling} |")
    return "\n".join(rows)


def cmd_compare(args) -> int:
    print(fidelity_table(args.evals))
    return 0


def cmd_fit_action(args) -> int:
    import dataclasses

    import numpy as np

    from lrpilot import checkpoints
    from lrpilot.trajectories import load_dir
    from lrpilot.worldmodel import hazard
    from lrpilot.worldmodel.correction import ActionTerms, with_action_linear
    from lrpilot.worldmodel.model import WorldModelConfig, build
    from lrpilot.worldmodel.train import training_runs

    src = resolve_ckpt(args.ckpt)
    out_parent(args.out)
    ck = checkpoints.load(src, kind="worldmodel")
    old = WorldModelConfig.from_dict(ck.model_config)
    if args.keep:  # the checkpoint's term stays; the flags can only add action terms to it
        if "action_linear" not in ck.params or old.action_response != args.response:
            raise SystemExit(f"worldmodel fit-action --keep: {src} has no linear action term with action_response "
                             f"{args.response!r} to keep (its action_response: {old.action_response!r})")
        if old.action_level:  # its level terms are kept as they are
            if args.level_terms not in (None, old.action_level_terms):
                raise SystemExit(f"worldmodel fit-action --keep: {src}'s term already has level terms "
                                 f"(action_level_terms {old.action_level_terms}), not {args.level_terms}")
            args.level_terms = old.action_level_terms
        args.level = args.level or old.action_level  # --level adds psi to a term without; --fit: how the added terms are fit
        args.convex = args.convex or old.action_convex
        if old.action_hinge is not None and args.hinge is not None:
            raise SystemExit(f"worldmodel fit-action --keep: {src}'s term already has a kink (action_hinge {old.action_hinge})")
        if old.action_hinge is not None:  # the kept kink stays where it is
            args.hinge, args.hinge_params = old.action_hinge, old.action_hinge_params
        again = sorted(set(args.hinge_offsets) & set(old.action_hinge_offsets))
        if again:
            raise SystemExit(f"worldmodel fit-action --keep: {src}'s term already has kinks at offsets {again}")
        args.hinge_offsets = [*old.action_hinge_offsets, *args.hinge_offsets]  # the kept kinks, then the new
    if args.level_terms is not None and not args.level:
        raise SystemExit("worldmodel fit-action: --level-terms needs --level")
    if args.divergence and (args.response != "noop" or args.hinge is None):
        raise SystemExit("worldmodel fit-action: --divergence adds an action's hazard to the no-op's continuation, read against "
                         "the action term's kink: it needs --response noop and --hinge (or --keep of a term with a kink)")
    if args.hinge_offsets and args.hinge is None:
        raise SystemExit("worldmodel fit-action: --hinge-offsets place kinks at offsets from the first: they need --hinge (or "
                         "--keep of a term with a kink)")
    cfg = dataclasses.replace(old, action_response=args.response, action_level=args.level, action_fit=args.fit,
                              action_level_terms=args.level_terms or "both",
                              action_convex=args.convex, action_hinge=args.hinge, action_hinge_params=args.hinge_params,
                              action_hinge_offsets=tuple(args.hinge_offsets),
                              action_divergence=args.divergence or (args.keep and old.action_divergence))
    model, ser = build(cfg, ck.spec)
    full = load_dir(data_dirs(args.data), ck.spec)
    train = full.subset(training_runs(full, cfg))
    terms, keep_terms = ActionTerms.of(cfg), ActionTerms.of(old) if args.keep else None
    params = {k: v for k, v in ck.params.items() if k != "action_hazard" or (args.keep and not args.divergence)}
    if args.divergence and args.keep and terms.names() == keep_terms.names():
        print("[worldmodel] the kept linear term has every column asked for: only the divergence hazard is fit")
    else:
        params = with_action_linear(model, params, ser, train, cfg.action_fit, keep_terms)
        print(f"[worldmodel] action_response {args.response}: linear term fit ({args.fit}{', the old term kept' if args.keep else ''}) "
              f"on {len(train)} training runs, columns {list(terms.names())}, weights "
              f"{params['action_linear']['w'].round(5).tolist()}, b {params['action_linear']['b'].round(5).tolist()}")
    if args.divergence:
        c = hazard.fit(train, terms)
        params["action_hazard"] = {"c": c if cfg.ensemble == 1 else np.tile(c, (cfg.ensemble, 1))}
        print(f"[worldmodel] divergence hazard sigmoid({c[0]:.3f} + {c[1]:.3f} z), z: decades above the kink, fit on "
              f"{len(hazard.rows(train, terms)[0])} decisions of random-walk and fork runs")
    checkpoints.save(args.out, kind="worldmodel", params=params, spec=ck.spec,
                     model_config=cfg.to_dict(),
                     meta={**ck.meta, "action_linear_from": str(args.ckpt), "action_linear_data": list(args.data),
                           **({"action_linear_kept": {"terms": list(keep_terms.names()), "fit": old.action_fit}}
                              if args.keep else {})})
    print(f"-> {args.out}")
    return 0


def cmd_fit_rollout(args) -> int:
    import dataclasses

    import jax
    import numpy as np

    from lrpilot import checkpoints
    from lrpilot.trajectories import load_dir
    from lrpilot.worldmodel import fidelity, rollout
    from lrpilot.worldmodel.correction import ActionTerms, layout
    from lrpilot.worldmodel.env import SimEnv
    from lrpilot.worldmodel.model import WorldModelConfig, build
    from lrpilot.worldmodel.train import training_runs

    for flag, v, lo in (("--groups", args.groups, 2), ("--samples", args.samples, 1), ("--rounds", args.rounds, 1)):
        if v < lo:
            raise SystemExit(f"worldmodel fit-rollout: {flag} must be >= {lo}, got {v}")
    if not args.l2 >= 0:
        raise SystemExit(f"worldmodel fit-rollout: --l2 must be >= 0, got {args.l2}")
    src = resolve_ckpt(args.ckpt)
    out_parent(args.out)
    ck = checkpoints.load(src, kind="worldmodel")
    cfg = WorldModelConfig.from_dict(ck.model_config)
    lin = ck.params.get("action_linear")
    terms, params = (None if lin is None else layout(ActionTerms.of(cfg), np.asarray(lin["w"]))), ck.params
    if terms is None or not terms.level:
        raise SystemExit(f"worldmodel fit-rollout: {src} has no linear term with level terms to move (fit one first: "
                         "lrpilot worldmodel fit-action --level)")
    if args.level_terms not in (None, cfg.action_level_terms):
        wider = dataclasses.replace(terms, level_terms=args.level_terms)
        params = rollout.extended(params, terms, wider)  # refuses a layout that does not extend the checkpoint's
        terms, cfg = wider, dataclasses.replace(cfg, action_level_terms=args.level_terms)
    model, ser = build(cfg, ck.spec)
    full = load_dir(data_dirs(args.data), ck.spec)
    train = full.subset(training_runs(full, cfg))
    grps = fidelity.groups(train)
    if not grps:
        raise SystemExit(f"worldmodel fit-rollout: no group of >= 3 runs sharing a task and configuration among the "
                         f"{len(train)} training runs of {args.data}")
    pick = np.sort(np.random.default_rng(args.seed).permutation(len(grps))[: args.groups])
    train = train.subset(np.concatenate([grps[i] for i in pick]))
    print(f"[worldmodel] fit-rollout: {len(pick)} of {len(grps)} training groups ({len(train)} runs), {args.samples} samples")
    params, history = rollout.fit(SimEnv(model, ser), params, terms, train, args.samples, jax.random.key(args.seed),
                                  args.rounds, args.l2, state=f"{args.out}.state")
    checkpoints.save(args.out, kind="worldmodel", params=params, spec=ck.spec, model_config=cfg.to_dict(),
                     meta={**ck.meta, "rollout_fit": {"from": str(args.ckpt), "data": list(args.data), "groups": len(pick),
                                                      "runs": len(train), "samples": args.samples, "seed": args.seed,
                                                      "l2": args.l2, "terms": list(terms.psi_names), "rounds": history}})
    print(f"-> {args.out}")
    return 0


def register(sub) -> None:
    from lrpilot.worldmodel.model import ACTION_FITS, LEVEL_TERMS, WorldModelConfig

    w = sub.add_parser("worldmodel", help="train or evaluate the world model")
    ws = w.add_subparsers(dest="wm_command", required=True)
    t = ws.add_parser("train", help="train a world model on trajectory files")
    t.add_argument("--data", nargs="+", default=["starter"], help="trajectory directories ('starter': the shipped dataset)")
    t.add_argument("--out", required=True, help="checkpoint directory (resumes from OUT.state)")
    t.add_argument("--quiet", action="store_true", help="no progress bar")
    t.add_argument("--spec", default="v1", choices=["v1", "v2", "v3"],
                   help="observation spec: v1 (task-independent observations), v2 (v1 plus the run's context: "
                        "base LR, parameter count, tokens per update, run length) or v3 (v2 plus each interval's absolute "
                        "LR); trajectory files of another spec are re-derived from their raw metrics")
    t.add_argument("--data-fraction", type=float, default=1.0, help="train on this fraction of the run groups (ablation)")
    t.add_argument("--init", default=None, metavar="CKPT", help="warm start: begin from this world model's parameters "
                   "(an ensemble's member M for --member M, else member 0; its fitted action terms are dropped and refit) "
                   "instead of a fresh initialisation, e.g. to train a model longer or on more data; the architecture "
                   "and --spec must match ('pretrained': the shipped one)")
    t.add_argument("--member", type=int, default=None, help="with --ensemble K: train only member M (0..K-1), e.g. one "
                   "per process or machine; a run without --member then stacks the finished members")
    flags.add_config_flags(t.add_argument_group("world model (WorldModelConfig)"), WorldModelConfig)
    t.set_defaults(func=cmd_train)
    e = ws.add_parser("eval", help="forecast held-out runs; writes forecast.json and fan charts")
    e.add_argument("--data", nargs="+", default=["starter"], help="trajectory sources ('starter': the shipped dataset); the checkpoint's split picks the held-out runs")
    e.add_argument("--ckpt", required=True, help="world-model checkpoint ('pretrained': the shipped one)")
    e.add_argument("--out", required=True, help="directory for forecast.json and the plots")
    e.add_argument("--contexts", nargs="+", type=int, default=[3, 5, 10], help="observations of context before forecasting")
    e.add_argument("--samples", type=int, default=32, help="simulated futures per run")
    e.add_argument("--seed", type=int, default=0, help="seed of the simulated futures")
    e.add_argument("--all-runs", action="store_true", help="evaluate on every run of --data (data never trained on; "
                   "no fidelity section, which needs the training split)")
    e.add_argument("--no-fidelity", action="store_true", help="skip the fidelity section (forecasting only)")
    e.add_argument("--heldout-only", action="store_true", help="the fidelity section on the held-out groups only, without "
                   "its 'train' side (most of the evaluation's time on large data; e.g. for a model judged on data it was "
                   "not trained on)")
    e.add_argument("--replays", nargs="+", help="directories of replays of held-out runs (lrpilot.collect.replay: the same "
                   "actions, other seeds): adds the real-vs-real noise ceiling of the within-group Spearman")
    e.set_defaults(func=cmd_eval)
    a = ws.add_parser("fit-action", help="add a linear one-step action response, fit on the model's residuals over its "
                      "training runs, to a trained world model (WorldModelConfig.action_response)")
    a.add_argument("--response", choices=["residual", "noop"], default="noop", help="the linear term beside the model's own "
                   "response to the action (residual) or instead of it, beside its no-op continuation (noop)")
    a.add_argument("--ckpt", required=True, help="world-model checkpoint ('pretrained': the shipped one)")
    a.add_argument("--data", nargs="+", default=["starter"], help="the trajectory sources it was trained on (its split picks "
                   "the training runs)")
    a.add_argument("--out", required=True, help="the new checkpoint")
    a.add_argument("--level", action="store_true", help="the linear term also corrects the model's response to the LR "
                   "level (log LR, log absolute LR, their squares and products with progress), at every step")
    a.add_argument("--level-terms", choices=list(LEVEL_TERMS), default=None, help="with --level: the level terms of the "
                   "log LR relative to the configured one and the absolute (both; the default), of the absolute alone "
                   "(absolute: an anneal moves the relative log LR too), or of how far the absolute one is above the "
                   "action term's kink (kink, with --hinge or a kept kink: the level's cost above it alone)")
    a.add_argument("--convex", action="store_true", help="the action's term gains a x (log10 absolute LR)^2: one "
                   "doubling's effect grows with the LR in effect")
    a.add_argument("--hinge", type=float, default=None, metavar="H", help="the action's term gains a x max(0, log10 "
                   "absolute LR - H): a kink at an absolute LR of 10^H, flat below (e.g. -1.5: 0.03, about x30 of a "
                   "small model's default)")
    a.add_argument("--hinge-params", type=float, default=0.0, metavar="S", help="with --hinge: the kink moves with the "
                   "model's size, to an absolute LR of 10^(H + S x log10 parameter count) (e.g. H -0.396, S -0.191: x30 of "
                   "the collected runs' default LR at every size; results/rel_hinge/)")
    a.add_argument("--hinge-offsets", type=float, nargs="+", default=[], metavar="O", help="with --hinge (or a kept "
                   "kink): the action's term also gains a x max(0, log10 absolute LR - the kink - O) for each O: more kinks, O "
                   "decades from the first (e.g. -1 1: x1 and x100 of the collected runs' default LR for a kink at x10; "
                   "results/upper_hinge/)")
    a.add_argument("--divergence", action="store_true", help="with --response noop and a kink: fit an action's own hazard "
                   "of divergence (a logistic of the LR's decades above the kink, on the random walks and forks) that the "
                   "simulator adds to the no-op's; with --keep and no other new term only the hazard is fit")
    a.add_argument("--keep", action="store_true", help="keep the checkpoint's fitted term (its response, level terms and "
                   "fit) and fit only the terms the flags add to it (action terms; --level: the level terms, where it has "
                   "none), on what it leaves (stagewise)")
    a.add_argument("--fit", choices=list(ACTION_FITS), default="all", help="the decisions it is fit on: every run's "
                   "pooled (all), only random-walk and fork runs' within each run (exogenous: run fixed effects), or only "
                   "the runs of groups sharing a seed, within each group at each decision (paired: fork and anneal-timing groups)")
    a.set_defaults(func=cmd_fit_action)
    r = ws.add_parser("fit-rollout", help="move a fitted term's level weights so that whole runs simulated from their first "
                      "observation rank the training groups' runs as the real ones (worldmodel/rollout.py)")
    r.add_argument("--ckpt", required=True, help="world-model checkpoint with a level term ('pretrained': the shipped one)")
    r.add_argument("--data", nargs="+", default=["starter"], help="the trajectory sources it was trained on (its split picks "
                   "the training runs)")
    r.add_argument("--out", required=True, help="the new checkpoint")
    r.add_argument("--groups", type=int, default=60, help="training groups simulated (drawn with --seed; about 1.5 s per "
                   "run at 32 samples on one CPU core)")
    r.add_argument("--samples", type=int, default=32, help="simulated futures per run (their median is the run's final val)")
    r.add_argument("--level-terms", choices=list(LEVEL_TERMS), default=None, help="level terms to fit, extending the "
                   "checkpoint's (e.g. kinks_v to its kinks: a V about the collected runs' default LR, from weight 0); "
                   "default: the checkpoint's")
    r.add_argument("--rounds", type=int, default=1, help="fits, each on a fresh simulation with the weights moved so far")
    r.add_argument("--l2", type=float, default=1.0, help="ridge on the level weights' pairwise-logistic coefficients")
    r.add_argument("--seed", type=int, default=0, help="seed of the group draw and of the simulated futures")
    r.set_defaults(func=cmd_fit_rollout)
    c = ws.add_parser("compare", help="a markdown table of the fidelity of several `worldmodel eval` outputs")
    c.add_argument("evals", nargs="+", help="output directories of lrpilot worldmodel eval (each with forecast.json)")
    c.set_defaults(func=cmd_compare)
