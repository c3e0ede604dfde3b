"""The command line as a user runs it: `lrpilot train` and `lrpilot evaluate`, their files, their
errors (named, before any work), resume and --report-only."""

from __future__ import annotations

import json
import math
from pathlib import Path

import jax
import numpy as np
import pytest

import lrpilot
from lrpilot import controllers
from lrpilot.app.cli import main
from lrpilot.trainers.config import scale_config
from lrpilot.trainers.loop import run_info

ROOT = Path(__file__).resolve().parents[1]

TASK = "python_docs"
FORMATS_FIELDS = ("task", "scale", "controller", "seed", "final_train_loss", "best_val_loss", "total_train_time",
                  "avg_inference_tokens_per_second", "ms_per_iter", "diverged", "backend", "device", "lrpilot_version")


# ---------------------------------------------------------------------------------------------
# command line
# ---------------------------------------------------------------------------------------------
def test_cli_train_writes_formats_files(tmp_path, capsys):
    out = tmp_path / "run"
    rc = main(["train", "--task", TASK, "--scale", "tiny", "--max-iters", "40", "--eval-interval", "20",
               "--controller", "wsd", "--out", str(out), "--quiet"])
    assert rc == 0
    assert "best_val_loss" in capsys.readouterr().out
    fi = json.loads((out / "final_info.json").read_text())
    missing = [f for f in FORMATS_FIELDS if f not in fi]
    assert not missing, f"final_info.json lacks {missing}"
    assert (fi["task"], fi["scale"], fi["controller"], fi["seed"]) == (TASK, "tiny", "wsd", 0)
    assert fi["diverged"] is False and fi["backend"] == jax.default_backend()
    assert fi["lrpilot_version"] == lrpilot.__version__ and isinstance(fi["device"], str) and fi["device"]
    for k in ("total_train_time", "avg_inference_tokens_per_second", "ms_per_iter"):
        assert isinstance(fi[k], float) and fi[k] > 0, k
    assert fi["config"]["max_iters"] == 40 and fi["config"]["eval_interval"] == 20

    curves = json.loads((out / "curves.json").read_text())
    assert [p["iter"] for p in curves] == [0, 20, 40]
    ctrl = controllers.make("wsd")
    ctrl.reset(run_info(scale_config(TASK, "tiny", max_iters=40, eval_interval=20), 0))
    for p in curves:
        assert {"iter", "train_loss", "val_loss", "lr"} <= set(p)
        assert math.isfinite(p["train_loss"]) and math.isfinite(p["val_loss"])
        if p["iter"] == 0:
            assert p["lr"] is None  # no update yet
        else:
            assert p["lr"] == pytest.approx(ctrl.lr(p["iter"] - 1), rel=1e-6)
    assert fi["best_val_loss"] == min(p["val_loss"] for p in curves)
    assert fi["final_train_loss"] == curves[-1]["train_loss"]


@pytest.mark.parametrize("args, needle", [
    (["--task", "no_such_task"], "no_such_task"),
    (["--controller", "cosine:bogus_opt=1"], "bogus_opt"),
    (["--controller", "no_such_ctrl"], "no_such_ctrl"),
    (["--task", "file:/nonexistent/corpus.txt"], "/nonexistent/corpus.txt"),
    (["--max-iters", "0"], "--max-iters"),
])
def test_cli_bad_inputs(tmp_path, capsys, args, needle):
    rc = main(["train", "--scale", "tiny", "--out", str(tmp_path / "x"), "--quiet", *args])
    assert rc != 0
    err = capsys.readouterr().err
    assert needle in err and "error" in err
    assert not (tmp_path / "x" / "final_info.json").exists()


def test_cli_evaluate_report_only_reports_finished_runs_and_trains_nothing(tmp_path, capsys, monkeypatch):
    out = tmp_path / "ev"
    common = ["--tasks", TASK, "--scale", "tiny", "--max-iters", "40", "--eval-interval", "20", "--out", str(out),
              "--quiet"]
    assert main(["evaluate", "--controllers", "cosine", "--seeds", "1", *common]) == 0
    capsys.readouterr()
    info_path = out / "runs" / TASK / "lr_x1" / "cosine" / "seed0" / "final_info.json"
    info = json.loads(info_path.read_text())
    info_path.write_text(json.dumps({**info, "device": "Trainer GPU x1", "backend": "gpu"}))

    from lrpilot.trainers import loop as trainer_loop

    def no_training(*a, **k):
        raise AssertionError("--report-only trained a run")

    monkeypatch.setattr(trainer_loop, "train", no_training)
    assert main(["evaluate", "--controllers", "cosine", "wsd", "--seeds", "2", "--report-only", *common]) == 0
    printed = capsys.readouterr().out
    assert "reporting 1 finished runs; 3 not finished" in printed
    res = json.loads((out / "results.json").read_text())
    assert res["device"] == "Trainer GPU x1" and res["backend"] == "gpu"  # the training machine's, not this one's
    cos, wsd = res["results"][TASK]["cosine"], res["results"][TASK]["wsd"]
    assert cos["n_seeds"] == 1 and cos["seeds"] == [0] and cos["best_val_loss_mean"] == info["best_val_loss"]
    assert cos["best_val_loss_stderr"] is None
    assert wsd["n_seeds"] == 0 and wsd["seeds"] == [] and wsd["best_val_loss_mean"] is None
    md = (out / "results.md").read_text()
    assert "| `cosine` |" in md and "0/1" in md and "0/0" in md and "fewer finished seeds" in md
    assert (out / f"{TASK}.png").read_bytes()[:4] == b"\x89PNG"

    # a different training config matches no finished run: a clear error, nothing written over
    before = (out / "results.json").read_text()
    assert main(["evaluate", "--controllers", "cosine", "--seeds", "1", "--report-only", *common,
                 "--max-iters", "60"]) != 0
    err = capsys.readouterr().err
    assert "no finished run" in err and str(out) in err
    assert (out / "results.json").read_text() == before


def test_cli_seeds_count_list_and_zero(tmp_path, capsys):
    from lrpilot.app.cli import _seeds

    assert _seeds("3") == [0, 1, 2] and _seeds("0,") == [0] and _seeds("5,7") == [5, 7]
    with pytest.raises(SystemExit) as e:
        main(["evaluate", "--seeds", "0", "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert e.value.code != 0 and "'0,'" in err  # says how to ask for seed 0 alone
    assert not list(tmp_path.iterdir())


def test_cli_rejects_unknown_scale(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["train", "--scale", "huge", "--out", str(tmp_path)])
    assert e.value.code != 0 and "huge" in capsys.readouterr().err


def test_cli_evaluate_grid_and_resume(tmp_path, capsys):
    out = tmp_path / "ev"
    argv = ["evaluate", "--tasks", TASK, "--controllers", "cosine", "wsd", "--seeds", "2", "--scale", "tiny",
            "--max-iters", "40", "--eval-interval", "20", "--max-batch", "1", "--out", str(out), "--quiet"]
    assert main(argv) == 0
    first = capsys.readouterr().out
    assert "0 runs already done, 4 to train" in first
    assert "4/4 runs trained" in first

    res = json.loads((out / "results.json").read_text())
    assert res["scale"] == "tiny" and res["seeds"] == [0, 1]
    assert res["lrpilot_version"] == lrpilot.__version__ and res["device"]
    assert set(res["results"]) == {TASK} and set(res["results"][TASK]) == {"cosine", "wsd"}
    keys = {"best_val_loss_mean", "best_val_loss_stderr", "final_train_loss_mean", "final_train_loss_stderr",
            "total_train_time_mean", "ms_per_iter_mean", "controller_overhead_ms_mean", "n_seeds", "n_diverged"}
    finals = {}
    for ctrl, row in res["results"][TASK].items():
        assert keys <= set(row), keys - set(row)
        assert row["n_seeds"] == 2 and row["n_diverged"] == 0
        infos = [json.loads(f.read_text()) for f in sorted((out / "runs" / TASK / "lr_x1" / ctrl).glob("seed*/final_info.json"))]
        assert [i["seed"] for i in infos] == [0, 1] and all(i["controller"] == ctrl for i in infos)
        for field in ("best_val_loss", "final_train_loss"):
            xs = [i[field] for i in infos]
            assert row[f"{field}_mean"] == pytest.approx(np.mean(xs), rel=1e-9)
            assert row[f"{field}_stderr"] == pytest.approx(np.std(xs, ddof=1) / math.sqrt(2), rel=1e-6)
        finals.update({f: f.stat().st_mtime_ns for f in (out / "runs" / TASK / "lr_x1" / ctrl).glob("seed*/final_info.json")})
    assert len(finals) == 4
    md = (out / "results.md").read_text()
    assert "`cosine`" in md and "`wsd`" in md and "0/2" in md
    pngs = list(out.glob("*.png"))
    assert pngs and all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in pngs)
    assert "| `cosine` |" in first  # the command prints results.md

    # a rerun trains nothing and leaves the finished runs as they were
    assert main(argv) == 0
    assert "4 runs already done, 0 to train" in capsys.readouterr().out
    assert {f: f.stat().st_mtime_ns for f in finals} == finals
    assert json.loads((out / "results.json").read_text())["results"] == res["results"]


def test_worldmodel_eval_writes_forecasts_fidelity_and_which_checkpoint(tmp_path, tiny_wm):
    from lrpilot import checkpoints
    from lrpilot.spec import DEFAULT_SPEC

    cfg, _, _, params = tiny_wm
    ckpt, out = tmp_path / "wm", tmp_path / "eval"
    checkpoints.save(ckpt, kind="worldmodel", params=params, spec=DEFAULT_SPEC, model_config=cfg.to_dict())
    assert main(["worldmodel", "eval", "--ckpt", str(ckpt), "--data", "starter", "--out", str(out),
                 "--contexts", "3", "--samples", "2"]) == 0
    res = json.loads((out / "forecast.json").read_text())
    assert res["checkpoint"] == str(ckpt)  # as given, and when that checkpoint was saved ('pretrained' changes)
    assert res["checkpoint_saved_at"] == checkpoints.load(ckpt, kind="worldmodel").meta["saved_at"]
    assert len(res["forecasters"]["worldmodel"]["mae"]) == len(res["horizons"]) == 10
    held = res["fidelity"]["heldout"]
    assert held["n_groups"] > 0 and held["samples"] == 2 and set(res["fidelity"]) == {"heldout", "train"}
    for field in ("within_group_spearman", "regression_spearman", "final_val_mae", "final_val_mae_train_mean",
                  "action_effect", "high_lr_cost"):
        assert field in held, field
    assert (out / "fan_context3.png").exists() and (out / "fidelity_heldout.png").exists()
    assert main(["worldmodel", "eval", "--ckpt", str(ckpt), "--data", "starter", "--out", str(tmp_path / "held"),
                 "--contexts", "3", "--samples", "2", "--heldout-only"]) == 0  # no training side: faster on large data
    assert set(json.loads((tmp_path / "held" / "forecast.json").read_text())["fidelity"]) == {"heldout"}


def test_worldmodel_train_init_warm_starts_and_refuses_another_architecture_before_the_data(tmp_path, tiny_wm, capsys):
    from lrpilot import checkpoints
    from lrpilot.spec import DEFAULT_SPEC

    cfg, _, _, params = tiny_wm
    init = tmp_path / "init"
    shifted = jax.tree.map(lambda x: x + 0.5, params)  # unlike a fresh initialisation with the same seed
    checkpoints.save(init, kind="worldmodel", params={**shifted, "action_hazard": {"c": np.zeros(2)}},  # a fitted term:
                     spec=DEFAULT_SPEC, model_config=cfg.to_dict())                                    # dropped, refit
    tiny = ["--n-layer", "1", "--n-head", "2", "--dropout", "0", "--batch-size", "4", "--quiet"]
    nowhere = str(tmp_path / "no_data")  # mismatches are refused before any data is looked up
    for extra, needle in ((["--d-model", "32"], "d_model = 16, this model's 32"), (["--d-model", "16", "--spec", "v2"], "spec")):
        assert main(["worldmodel", "train", "--data", nowhere, "--init", str(init), *tiny, *extra,
                     "--out", str(tmp_path / "bad")]) != 0
        err = capsys.readouterr().err
        assert f"--init {init}" in err and needle in err and "no_data" not in err, err
    out = tmp_path / "warm"
    assert main(["worldmodel", "train", "--data", "starter", "--init", str(init), *tiny, "--d-model", "16", "--steps", "2",
                 "--warmup", "1", "--eval-every", "1", "--select-after", "0", "--learning-rate", "1e-9", "--out", str(out)]) == 0
    ck = checkpoints.load(out, kind="worldmodel")
    assert ck.meta["init"] == str(init) and "action_hazard" not in ck.params
    got, want = jax.tree.leaves(ck.params["trunk"]), jax.tree.leaves(shifted["trunk"])
    assert all(np.allclose(g, w, atol=1e-5) for g, w in zip(got, want))  # it began where the checkpoint was


def test_worldmodel_compare_tabulates_each_eval_directory(tmp_path, capsys):
    def section(rho, fork):
        return {"n_groups": 9, "within_group_spearman": {"mean": rho, "stderr": 0.05}, "regression_spearman": {"mean": 0.3},
                "final_val_mae": 0.1, "final_val_mae_train_mean": 0.12, "action_effect": {"ratio": 0.5, "real": -0.004},
                "high_lr_cost": {"ratio": None, "real": None}, **({"fork_effect": fork} if fork else {})}

    fc = {"worldmodel": {"mae": [0.05] * 10}, "last_value": {"mae": [0.1] * 10}}
    for name, rho, fork in (("level", 0.5, None), ("delta", 0.61, {"ratio": 0.9, "real": 0.0047, "corr": 0.8})):
        (tmp_path / name).mkdir()
        fid = {"heldout": section(rho, fork), **({"train": section(0.7, None)} if fork else {})}
        if fork:  # written since the linear one-step baseline, and since the one-step baseline simulator
            fid["heldout"]["action_effect"]["linear_ratio"] = 0.56
            fid["heldout"]["action_effect"]["ratio_ci95"] = [0.2, 0.81]  # written since the intervals over groups
            fid["heldout"]["high_lr_cost"] = {"ratio": 1.1, "real": 0.3, "n_groups": 12, "ratio_ci95": [0.6, 1.5]}
            fid["heldout"].update(onestep_spearman={"mean": 0.58, "stderr": 0.05}, onestep_final_val_mae=0.09)
            fid["heldout"]["noise_ceiling"] = {"n_groups": 7, "real_vs_replay": {"mean": 0.88, "stderr": 0.02},
                                               "sim_vs_real": {"mean": 0.74, "stderr": 0.04}}  # written with --replays
        (tmp_path / name / "forecast.json").write_text(json.dumps({"forecasters": fc, "fidelity": fid}))
    assert main(["worldmodel", "compare", str(tmp_path / "level"), str(tmp_path / "delta")]) == 0
    rows = capsys.readouterr().out.strip().splitlines()
    assert len(rows) == 4 and rows[2].startswith("| `level` | 9 | 0.500 ± 0.050 | 0.300; - | - |") and "| - |" in rows[2]
    assert rows[3].startswith("| `delta` | 9 | 0.610 ± 0.050 | 0.300; 0.580 ± 0.050 | 0.700 ± 0.050 |") and "0.90 (0.0047; 0.80)" in rows[3]
    assert "| 0.50 (-0.0040; -) |" in rows[2] and "| 0.50 [0.20, 0.81] (-0.0040; 0.56) |" in rows[3]
    assert "| - (-) |" in rows[2] and "| 1.10 [0.60, 1.50] (0.300, 12 groups) |" in rows[3]
    assert "| 0.100 (0.120; -) |" in rows[2] and "| 0.100 (0.120; 0.090) |" in rows[3]
    assert rows[2].endswith("(0.100 / 0.100 / 0.100) | - |") and rows[3].endswith("| 0.880 ± 0.020 / 0.740 ± 0.040 (7) |")
    (tmp_path / "bare").mkdir()
    (tmp_path / "bare" / "forecast.json").write_text(json.dumps({"forecasters": fc}))
    assert main(["worldmodel", "compare", str(tmp_path / "bare")]) == 2
    assert "no fidelity section" in capsys.readouterr().err
