"""The real environment has the simulator's shape and the collection's exact observations."""

from __future__ import annotations

import numpy as np
from conftest import tiny_cfg

from lrpilot import data
from lrpilot.collect.real_env import RealEnv, RealParams
from lrpilot.controllers.spec_controller import SpecController
from lrpilot.spec import DEFAULT_SPEC
from lrpilot.trainers.loop import RunSpec, train

ACTIONS = [6, 6, 5, 3, 0, 1, 2, 3, 4, 5, 6, 0, 1, 2, 3, 3, 3, 0, 0, 1]


class Scripted(SpecController):
    name = "scripted"

    def choose(self, k):
        return ACTIONS[k]


def test_real_env_steps_equal_collection_rows():
    ds = data.load("python_docs")
    cfg = tiny_cfg(max_iters=40, eval_interval=40, eval_train=False)
    ctrl = Scripted(DEFAULT_SPEC)
    train(ds, cfg, [RunSpec(3, ctrl, "scripted", 1.5)], progress=False)
    rows = ctrl.trajectory()

    env = RealEnv(ds, cfg)
    params = RealParams(seed=3, base_lr_mult=1.5)
    obs, st = env.reset(None, params)
    got = [obs]
    rewards, flags = [], []
    for a in ACTIONS:
        obs, st, r, term, trunc, info = env.step(None, st, a, params)
        got.append(obs)
        rewards.append(r)
        flags.append((term, trunc))
    want = np.array([[row[f"obs_{n}"] for n in DEFAULT_SPEC.names] for row in rows])
    assert len(rows) == DEFAULT_SPEC.n_decisions + 1
    np.testing.assert_allclose(np.array(got), want, atol=2e-5)
    np.testing.assert_allclose(rewards, [row["reward"] for row in rows[1:]], atol=2e-5)
    assert flags[-1] == (False, True) and not any(t for t, _ in flags)
    # the functional shape: the old state is still usable after a step
    obs2, st2, *_ = env.step(None, env.reset(None, params)[1], ACTIONS[0], params)
    np.testing.assert_allclose(obs2, got[1], atol=2e-5)
    assert st.done and env.step(None, st, 3, params)[2] == 0.0
