"""`lrpilot simple`: the SimPLe loop end to end on the tiny family (real collection with the shipped
policy driving a share of the runs, world model, fidelity, PPO), its resume, its summary's
paired real comparison, and its refusals before any work."""

from __future__ import annotations

import re
import types

import numpy as np
import pytest

from lrpilot import checkpoints
from lrpilot.app.cli import main
from lrpilot.app.simple import real_comparison
from lrpilot.io import read_json
from lrpilot.spec import DEFAULT_SPEC
from lrpilot.trajectories import load_dir


def _shipped_spec() -> str:
    """The --spec name of the shipped policy (round 0's initial policy must share its spec)."""
    from lrpilot.spec import SPECS, EnvSpec

    spec = EnvSpec.from_dict(read_json(checkpoints.pretrained("policy") / "checkpoint.json")["spec"])
    return next(name for name, s in SPECS.items() if s == spec)


SHIPPED_SPEC = _shipped_spec()
OTHER_SPEC = "v1" if SHIPPED_SPEC != "v1" else "v2"
TINY = ["--spec", SHIPPED_SPEC, "--rounds", "2", "--wm-finetune-steps", "10", "--initial-policy", "pretrained", "--runs-per-round", "4", "--parallel", "2", "--family", "tiny", "--tasks", "python_docs",
        "--fidelity-samples", "2", "--wm-n-layer", "1", "--wm-d-model", "16", "--wm-n-head", "2", "--wm-steps", "20",
        "--wm-eval-every", "10", "--wm-select", "nll", "--wm-select-after", "0", "--wm-batch-size", "4",
        "--ppo-iterations", "2", "--ppo-n-envs", "8", "--ppo-n-minibatches", "2", "--ppo-eval-envs", "8", "--quiet"]


def test_two_rounds_end_to_end_and_resume(tmp_path, capsys):
    out = tmp_path / "loop"
    assert main(["simple", "--out", str(out), *TINY]) == 0
    e, e1 = read_json(out / "summary.json")["rounds"]
    assert e["runs_total"] == 4 and e1["runs_total"] == 8
    shipped = str(checkpoints.pretrained("policy"))
    assert e["real_runs"]["driven_by"] == shipped  # round 0's policy share: --initial-policy
    ctrl = [m["controller"] for m in load_dir(out / "round_0" / "data", DEFAULT_SPEC).meta]
    assert any(c["name"] == "policy_eps" and c["path"] == shipped for c in ctrl)
    assert set(e["fidelity"]) == {"heldout", "train"}
    assert "policy (greedy)" in e["sim_eval"]["returns"]
    assert checkpoints.exists(e["worldmodel"]) and checkpoints.exists(e["policy"])
    assert "[simple] round 0: 4 runs" in capsys.readouterr().out
    md = (out / "summary.md").read_text().splitlines()
    assert md[2].startswith("| 0 | 4 (4) |") and len(md[2].split("|")) == 10
    # round 1: driven by round 0's policy; its world model continued round 0's for --wm-finetune-steps
    assert e1["real_runs"]["driven_by"] == e["policy"]
    assert e["worldmodel_init"] is None and e1["worldmodel_init"] == e["worldmodel"]
    log1 = checkpoints.load(e1["worldmodel"], kind="worldmodel").meta["log"]
    assert max(h["step"] for h in log1) == 10
    assert log1[0]["heldout_loss"] < checkpoints.load(e["worldmodel"], kind="worldmodel").meta["log"][0]["heldout_loss"]
    # a rerun finds every artifact and trains nothing
    stamp = (out / "round_1" / "policy").stat().st_mtime_ns
    assert main(["simple", "--out", str(out), *TINY]) == 0
    assert (out / "round_1" / "policy").stat().st_mtime_ns == stamp
    assert read_json(out / "summary.json")["rounds"] == [e, e1]


def _traj(rows):
    """A stand-in with the fields real_comparison reads: rows of (group, controller, val curve)."""
    vi = DEFAULT_SPEC.index("val")
    n = max(len(v) for *_, v in rows)
    obs = np.zeros((len(rows), n, len(DEFAULT_SPEC.fields)), np.float32)
    for i, (*_, v) in enumerate(rows):
        obs[i, : len(v), vi] = v
    meta = [{"family": "cpu2", "job_seed": 1, "group": g, "controller": {"name": c}} for g, c, _ in rows]
    return types.SimpleNamespace(spec=DEFAULT_SPEC, meta=meta, files=[f"f{i}" for i in range(len(rows))], obs=obs,
                                 length=np.array([len(v) for *_, v in rows]))


def test_real_comparison_pairs_policy_and_exploration_within_groups():
    rows = [(0, "policy_eps", [1.0, 0.6, 0.5]), (0, "walk", [1.0, 0.7, 0.8]), (0, "cosine", [1.0, 0.6, 0.6]),
            (1, "policy_eps", [1.0, 0.9]), (1, "ramp", [1.0, 0.8]),
            (2, "walk", [1.0, 0.1])]  # no policy run: not compared
    c = real_comparison(_traj(rows))
    assert (c["n_groups"], c["n_policy"], c["n_explore"]) == (2, 2, 3)
    f, b = c["final_val_rel"], c["best_val_rel"]
    assert f["policy_minus_explore"] == pytest.approx(((0.5 - 0.7) + (0.9 - 0.8)) / 2)
    assert f["stderr"] == pytest.approx(np.std([-0.2, 0.1], ddof=1) / np.sqrt(2))
    assert f["policy_better_groups"] == 0.5
    assert b["policy_minus_explore"] == pytest.approx(((0.5 - 0.65) + (0.9 - 0.8)) / 2)
    assert real_comparison(_traj(rows[-1:])) is None


@pytest.mark.parametrize("argv, match", [
    (["--family", "huge"], "--family: unknown family 'huge'"),
    (["--spec", "v9"], "--spec: unknown spec 'v9'"),
    (["--wm-finetune-steps", "-1"], "--wm-finetune-steps must be >= 0"),
    (["--tasks", "shakespeare_char"], "held out"),
    (["--spec", OTHER_SPEC, "--initial-policy", "pretrained"], "pretrained|policy"),
])
def test_bad_arguments_fail_before_any_work(tmp_path, capsys, argv, match):
    out = tmp_path / "loop"
    assert main(["simple", "--out", str(out), *argv]) != 0
    assert re.search(match, capsys.readouterr().err)
    assert not (out / "round_0").exists()
