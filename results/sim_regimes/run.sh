#!/bin/bash
# The 12 candidates of results/selection with the shipped spec (results/rel_hinge/cross_sim/'s 11 and kink10), each in the
# shipped ensemble with its episodes started as deployed, from observation 1 of the runs configured at x0.1,
# x1 and x10 of their default LR (the validation set's regimes): `lrpilot policy eval --lr-mults 0.1 1 10`,
# 256 episodes per regime, seed 0. WMS: "name=checkpoint ..." (default: shipped=pretrained). Then rank.py.
set -eu
OUT=results/sim_regimes
WMS=${WMS:-shipped=pretrained}
POLS="round3=results/simple_v2/round_3/policy convex_nolevel=results/action_convex/policy_nolevel
  convex_nolevel_all=results/action_convex/policy_nolevel_all kink30=results/rel_hinge/policy_kink30
  kink30_s1=results/rel_hinge/policy_kink30_s1 kink10=results/rel_hinge/policy_kink10
  round0=results/simple_v2/round_0/policy round1=results/simple_v2/round_1/policy round2=results/simple_v2/round_2/policy
  round3_lambda0=results/pessimism/round3_lambda0 round3_lambda1_halt=results/pessimism/round3_lambda1_halt
  v2_level_noop_level=results/policy_validation/checkpoints/policy_v2_level_noop_level"
for wm in $WMS; do
  for pol in $POLS; do
    f=$OUT/${pol%%=*}_in_${wm%%=*}.json
    [ -f "$f" ] || lrpilot policy eval --ckpt "${pol#*=}" --world-model "${wm#*=}" --data starter collect/data/v2.parquet \
      --lr-mults 0.1 1 10 --seed 0 --out "$f" > "${f%.json}.txt" 2>&1
  done
done
python results/sim_regimes/rank.py > $OUT/rank.md
python results/sim_regimes/lr_paths.py > $OUT/lr_paths.md
