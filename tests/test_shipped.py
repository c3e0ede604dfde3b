"""The shipped pair (`checkpoints/pretrained/`): the policy was trained in the shipped world model's first
members, its members are the committed checkpoints it names, and it drives a run inside the spec's range."""

from __future__ import annotations

from pathlib import Path

import jax
import numpy as np
from test_policy import _run

from lrpilot import checkpoints
from lrpilot.worldmodel.model import WorldModelConfig

ROOT = Path(__file__).resolve().parents[1]


def test_shipped_checkpoints_load_and_drive_a_run():
    """The shipped pair: the policy's trunk is the world model's architecture; each policy member (the shipped
    checkpoint, or an ensemble's members, committed under results/) was trained in one world model whose members'
    transformers are the shipped world model's first ones (the action terms beside them may have been refit since:
    `action_*` fields and parameters), and beat the simulator's constants there; the policy drives a run."""
    from lrpilot import policy
    from lrpilot.policy.deploy import PolicyController
    from lrpilot.policy.ensemble import MEMBERS

    wm = checkpoints.load(checkpoints.pretrained("worldmodel"), kind="worldmodel")
    pol = checkpoints.load(checkpoints.pretrained("policy"), kind="policy", spec=wm.spec)  # the spec it was trained in
    transformer = lambda cfg: {k: v for k, v in WorldModelConfig.from_dict(cfg).to_dict().items()  # noqa: E731
                               if not k.startswith("action_") and k != "ensemble"}
    assert transformer(pol.model_config["trunk"]) == transformer(wm.model_config) and wm.model_config["ensemble"] >= 3
    members = pol.model_config.get(MEMBERS) or [{"path": str(checkpoints.pretrained("policy"))}]
    for m in members:
        path = ROOT / m["path"]
        fp = checkpoints.fingerprint(path)
        assert m.get("fingerprint", fp) == fp  # the member stacked
        ck = checkpoints.load(path, kind="policy", spec=wm.spec)
        assert ck.meta["world_model"] == pol.meta["world_model"] and ck.meta["sim_eval"]["returns"]["policy (greedy)"]["mean"] > 0
        assert min(d["mean"] for d in ck.meta["sim_eval"]["policy_minus_best"].values()) > 0
    trained_in = checkpoints.load(ROOT / pol.meta["world_model"], kind="worldmodel", spec=wm.spec)
    k = trained_in.model_config["ensemble"]
    assert transformer(trained_in.model_config) == transformer(wm.model_config)
    leaves = lambda ck: jax.tree_util.tree_leaves_with_path({n: v for n, v in ck.params.items() if not n.startswith("action_")})
    for (p1, a), (p2, b) in zip(leaves(trained_in), leaves(wm), strict=True):  # the same transformers
        assert p1 == p2, (p1, p2)
        np.testing.assert_array_equal(np.asarray(b)[:k], np.asarray(a), err_msg=jax.tree_util.keystr(p1))
    ctrl = policy.load("pretrained")
    assert isinstance(ctrl, PolicyController)
    lrs = _run(ctrl, lambda k: 4.0 * (0.97 ** k), max_iters=2000)
    lo, hi = (x * 1e-3 for x in pol.spec.lr_range)
    assert all(lo * (1 - 1e-9) <= x <= hi * (1 + 1e-9) for x in lrs)
