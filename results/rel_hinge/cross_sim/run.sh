#!/bin/bash
# Every policy candidate of results/selection with the shipped spec (11 of 13: not shipped_v1, spec v1, nor
# round0_est, round 0's checkpoint in another mode) in the shipped ensemble and in the ensemble with the kink
# (`wm_kink30`, rebuilt by the fit-action command in results/rel_hinge/README.md; WM_KINK30 its path): the same
# 256 starts from the shipped data's prefixes, seed 0, as results/action_convex/cross_sim/ (whose runs in the
# shipped ensemble are reused). Then rank.py: how each simulator ranks the policies against their real runs.
set -eu
OUT=results/rel_hinge/cross_sim
POLS="round3=results/simple_v2/round_3/policy convex_nolevel=results/action_convex/policy_nolevel
  convex_nolevel_all=results/action_convex/policy_nolevel_all kink30=results/rel_hinge/policy_kink30
  kink30_s1=results/rel_hinge/policy_kink30_s1
  round0=results/simple_v2/round_0/policy round1=results/simple_v2/round_1/policy round2=results/simple_v2/round_2/policy
  round3_lambda0=results/pessimism/round3_lambda0 round3_lambda1_halt=results/pessimism/round3_lambda1_halt
  v2_level_noop_level=results/policy_validation/checkpoints/policy_v2_level_noop_level"
for wm in shipped=pretrained kink30=$WM_KINK30; do
  for pol in $POLS; do
    f=$OUT/${pol%%=*}_in_${wm%%=*}.json
    old=results/action_convex/cross_sim/${pol%%=*}_in_${wm%%=*}.json
    if [ -f "$old" ] && [ ! -f "$f" ]; then cp "$old" "$f"; cp "${old%.json}.txt" "${f%.json}.txt"; fi
    [ -f "$f" ] || lrpilot policy eval --ckpt "${pol#*=}" --world-model "${wm#*=}" --data starter collect/data/v2.parquet \
      --seed 0 --out "$f" > "${f%.json}.txt" 2>&1
  done
done
python results/rel_hinge/cross_sim/rank.py > $OUT/rank.md
