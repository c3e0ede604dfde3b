"""`lrpilot quickstart` end to end at the tiny scale: both runs train, the files and plot appear,
the comparison and the next steps are printed."""

from __future__ import annotations

import json

from lrpilot.app.cli import main


def test_quickstart_tiny(tmp_path, capsys):
    out = tmp_path / "qs"
    assert main(["quickstart", "--scale", "tiny", "--iters", "40", "--out", str(out), "--quiet"]) == 0
    text = capsys.readouterr().out
    assert "difference (policy - cosine)" in text and "Where to go next" in text
    assert (out / "quickstart.png").stat().st_size > 0
    infos = {d.name: json.loads((d / "final_info.json").read_text()) for d in out.iterdir() if d.is_dir()}
    assert len(infos) == 2
    for fi in infos.values():
        assert fi["best_val_loss"] < 5.0 and not fi["diverged"]
    lrs = {name: [c["lr"] for c in json.loads((out / name / "curves.json").read_text())] for name in infos}
    assert len({tuple(v) for v in lrs.values()}) == 2  # the policy did not just replay cosine
