#!/bin/bash
# Each policy in each simulator: the shipped round-3 policy and the two refit policies, in the shipped
# ensemble and in the two level-free refits (same starts and seed; 256 episodes from the shipped data's prefixes).
# WM_NOLEVEL, WM_NOLEVEL_ALL: the refit checkpoints (results/action_convex/README.md rebuilds them).
set -eu
OUT=results/action_convex/cross_sim
for wm in shipped=pretrained nolevel=$WM_NOLEVEL nolevel_all=$WM_NOLEVEL_ALL; do
  for pol in round3=results/simple_v2/round_3/policy convex_nolevel=results/action_convex/policy_nolevel \
             convex_nolevel_all=results/action_convex/policy_nolevel_all; do
    f=$OUT/${pol%%=*}_in_${wm%%=*}.json
    [ -f "$f" ] || lrpilot policy eval --ckpt "${pol#*=}" --world-model "${wm#*=}" --data starter collect/data/v2.parquet \
      --seed 0 --out "$f" > "${f%.json}.txt" 2>&1
  done
done
