"""`lrpilot select`: candidates and cosine on the same real validation runs, the choice by mean
best val loss, resume when a candidate is added, and refusals (test tasks, bad candidates) before
any run."""

from __future__ import annotations

import shutil

import pytest

from lrpilot import checkpoints
from lrpilot.app.cli import main
from lrpilot.app.select import score, selection_markdown
from lrpilot.io import read_json

TINY = ["--tasks", "python_docs", "--lr-mults", "1", "10", "--seeds", "1", "--scale", "tiny", "--quiet"]


def test_select_on_real_runs_and_add_a_candidate(tmp_path, capsys):
    out = tmp_path / "sel"
    shipped = str(checkpoints.pretrained("policy"))
    assert main(["select", "--candidates", f"shipped={shipped}", "--out", str(out), *TINY]) == 0
    sel = read_json(out / "selection.json")
    c = sel["candidates"]["shipped"]
    res = read_json(out / "results.json")["by_lr_mult"]
    assert set(c["cells"]) == {"python_docs x1", "python_docs x10"}
    for m in ("1", "10"):
        rows = res[m]["python_docs"]
        cell = c["cells"][f"python_docs x{m}"]
        assert cell["best_val_loss"] == rows[f"policy:{shipped}"]["best_val_loss_mean"]
        assert cell["margin"] == pytest.approx(cell["best_val_loss"] - rows["cosine"]["best_val_loss_mean"])
    assert sel["chosen"] == "shipped" and "chosen: shipped" in capsys.readouterr().out
    # a second candidate trains only its own runs; the first's are kept
    first = (out / "runs").rglob("final_info.json")
    stamps = {p: p.stat().st_mtime_ns for p in first}
    copy = tmp_path / "copy"
    shutil.copytree(shipped, copy)
    assert main(["select", "--candidates", f"again={copy}", "est=policy_est:pretrained",  # shipped: carried from the first
                 f"both={shipped},policy_est:pretrained", "--out", str(out), *TINY]) == 0
    assert all(p.stat().st_mtime_ns == t for p, t in stamps.items())
    sel2 = read_json(out / "selection.json")
    assert set(sel2["candidates"]) == {"shipped", "again", "est", "both"}
    assert sel2["candidates"]["est"]["controllers"] == [f"policy_est:{shipped}"] and sel2["candidates"]["est"]["score"] > 0
    # two checkpoints as one recipe: each cell their mean (no run of their own), their own scores beside it
    both, one, est = (sel2["candidates"][n] for n in ("both", "shipped", "est"))
    assert both["controllers"] == [f"policy:{shipped}", f"policy_est:{shipped}"] and "member_scores" not in one
    assert both["member_scores"] == {f"policy:{shipped}": one["score"], f"policy_est:{shipped}": est["score"]}
    assert both["score"] == pytest.approx((one["score"] + est["score"]) / 2)
    assert sel2["candidates"]["again"]["score"] == pytest.approx(sel["candidates"]["shipped"]["score"])  # same policy, same seeds
    best = min(sel2["candidates"], key=lambda n: sel2["candidates"][n]["score"])
    assert sel2["chosen"] == best and f"| {best} (chosen) |" in (out / "selection.md").read_text()
    # a candidate whose checkpoint is gone is dropped and named; the others stay, no run trained again
    shutil.rmtree(copy)
    stamps = {p: p.stat().st_mtime_ns for p in (out / "runs").rglob("final_info.json")}
    capsys.readouterr()
    assert main(["select", "--candidates", f"est={shipped}", "--out", str(out), *TINY]) == 0  # a name given again: as given
    assert f"previous candidate 'again' dropped: no checkpoint at {copy}" in capsys.readouterr().out
    sel3 = read_json(out / "selection.json")
    assert list(sel3["candidates"]) == ["shipped", "both", "est"]
    assert sel3["candidates"]["est"]["controllers"] == [f"policy:{shipped}"]
    assert sel3["candidates"]["both"] == sel2["candidates"]["both"]
    assert all(p.stat().st_mtime_ns == t for p, t in stamps.items())
    assert main(["select", "--candidates", f"est={shipped}", "--only", "--out", str(out), *TINY]) == 0
    assert list(read_json(out / "selection.json")["candidates"]) == ["est"]
    # another validation set: the table starts afresh (its own runs), the earlier candidates are not carried
    assert main(["select", "--candidates", f"est={shipped}", "--out", str(out), *TINY[:2], "--lr-mults", "1",
                 *TINY[5:]]) == 0
    assert "another validation set" in capsys.readouterr().out
    assert list(read_json(out / "selection.json")["candidates"]) == ["est"]


def test_score_ranks_by_mean_and_reports_margins():
    def row(x):
        return {"best_val_loss_mean": x, "best_val_loss_stderr": 0.01}

    results = {"by_lr_mult": {"1": {"t": {"cosine": row(2.0), "policy:a": row(1.9), "policy:b": row(2.2)}},
                              "10": {"t": {"cosine": row(2.0), "policy:a": row(2.3), "policy:b": row(1.9)}}}}
    s = score(results, {"a": "policy:a", "b": "policy:b"})
    assert s["chosen"] == "b"  # mean 2.05 against a's 2.10
    a, b = s["candidates"]["a"], s["candidates"]["b"]
    assert (a["score"], a["margin_mean"], a["margin_worst"]) == pytest.approx((2.1, 0.1, 0.3))
    assert (b["margin_mean"], b["margin_worst"]) == pytest.approx((0.05, 0.2))
    assert b["cells"]["t x10"] == {"best_val_loss": 1.9, "stderr": 0.01, "cosine": 2.0, "margin": pytest.approx(-0.1)}


def test_a_recipe_of_several_checkpoints_is_judged_on_their_mean():
    """The lucky seed of a recipe does not win it: its cells are the mean over its checkpoints (standard
    error over them), counted only where each finished; a single checkpoint of a spread recipe still
    shows its own score."""
    def row(x):
        return {"best_val_loss_mean": x, "best_val_loss_stderr": 0.01}

    results = {"by_lr_mult": {"1": {"t": {"cosine": row(2.0), "policy:a0": row(1.8), "policy:a1": row(2.4),
                                          "policy:b0": row(1.95), "policy:b1": row(1.97)}},
                              "10": {"t": {"cosine": row(2.0), "policy:a0": row(1.9), "policy:a1": row(None),  # unfinished
                                           "policy:b0": row(1.9), "policy:b1": row(1.92)}}}}
    s = score(results, {"a": ["policy:a0", "policy:a1"], "b": ["policy:b0", "policy:b1"], "a0": ["policy:a0"]})
    a, b, a0 = (s["candidates"][n] for n in ("a", "b", "a0"))
    assert set(a["cells"]) == {"t x1"} and a["score"] == pytest.approx(2.1)  # x10 dropped: a1 lacks it
    assert a["cells"]["t x1"]["stderr"] == pytest.approx(0.3)  # std of (1.8, 2.4) / sqrt(2)
    assert a["member_scores"] == {"policy:a0": pytest.approx(1.85), "policy:a1": pytest.approx(2.4)}
    assert b["score"] == pytest.approx(1.935) and a0["score"] == pytest.approx(1.85)
    assert s["chosen"] == "a0"  # a single checkpoint is still a candidate of its own
    assert "(mean of 2: 1.8500 / 2.4000)" in selection_markdown({"validation": {}, **s})


@pytest.mark.parametrize("argv, match", [
    (["--candidates", "a=pretrained", "--tasks", "shakespeare_char"], "test tasks"),
    (["--candidates", "a=pretrained", "--tasks", "nope"], "offline corpora"),
    (["--candidates", "apretrained"], "NAME=POLICY_CHECKPOINT"),
    (["--candidates", "a=pretrained", "a=pretrained"], "given twice"),
    (["--candidates", "a=pretrained,"], "NAME=POLICY_CHECKPOINT[,POLICY_CHECKPOINT...]"),
    (["--candidates", "a=pretrained,pretrained"], "twice"),
    (["--candidates", "a=/no/such/policy"], "/no/such/policy"),
    (["--candidates", "a=policy_est:/no/such/policy"], "/no/such/policy"),
])
def test_bad_arguments_fail_before_any_run(tmp_path, capsys, argv, match):
    assert main(["select", "--out", str(tmp_path / "sel"), *argv]) == 2
    assert match in capsys.readouterr().err
    assert not (tmp_path / "sel").exists()


def test_a_resumed_run_is_not_reused_for_another_checkpoint_at_the_same_path(tmp_path):
    """Runs are found again by controller spec, i.e. by the checkpoint's path: the record's checkpoint
    fingerprint tells a new checkpoint saved at that path from the one that trained them."""
    import shutil

    from lrpilot import controllers
    from lrpilot.app.evaluate import _finished, run_dir
    from lrpilot.io import write_json

    ckpt = tmp_path / "policy"
    shutil.copytree(checkpoints.pretrained("policy"), ckpt)
    spec, cfg = f"policy:{ckpt}", {"max_iters": 10}
    fp = controllers.make(spec).describe()["fingerprint"]
    assert isinstance(fp, str) and len(fp) == 16
    info = {"config": cfg, "controller_options": {"name": "policy", "fingerprint": fp}}
    write_json(run_dir(tmp_path, "python_docs", 1.0, spec, 0) / "final_info.json", info)
    assert _finished(tmp_path, "python_docs", 1.0, spec, 0, cfg, fp) == info
    header = ckpt / "checkpoint.json"  # another checkpoint saved at the same path
    header.write_text(header.read_text().replace('"saved_at": "', '"saved_at": "x', 1))
    fp2 = controllers.make(spec).describe()["fingerprint"]
    assert fp2 != fp and _finished(tmp_path, "python_docs", 1.0, spec, 0, cfg, fp2) is None
    legacy = {"config": cfg, "controller_options": {"name": "policy"}}  # recorded before fingerprints: kept
    write_json(run_dir(tmp_path, "python_docs", 1.0, spec, 0) / "final_info.json", legacy)
    assert _finished(tmp_path, "python_docs", 1.0, spec, 0, cfg, fp2) == legacy
