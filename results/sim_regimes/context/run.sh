#!/bin/bash
# The 12 candidates of ../run.sh, each in the shipped ensemble with its episodes started where the validation runs
# start: `lrpilot policy eval --like` python_docs' and gettext_catalogs' runs (results/selection/runs, small protocol:
# their parameter counts, 768 tokens per update, 2,000 iterations) at x0.1, x1 and x10 of the default LR (1e-3),
# 256 episodes per regime (both tasks' starts), seed 0. Then ../rank.py on this folder.
set -eu
OUT=results/sim_regimes/context
R=results/selection/runs
POLS=$(sed -n '/^POLS="/,/"$/p' results/sim_regimes/run.sh | sed 's/^POLS="//; s/"$//')
for pol in $POLS; do
  f=$OUT/${pol%%=*}_in_shipped.json
  [ -f "$f" ] || lrpilot policy eval --ckpt "${pol#*=}" --world-model pretrained \
    --like $R/python_docs/lr_x1/cosine/seed0 $R/gettext_catalogs/lr_x1/cosine/seed0 \
    --lr-mults 0.1 1 10 --seed 0 --out "$f" > "${f%.json}.txt" 2>&1
done
python results/sim_regimes/rank.py $OUT > $OUT/rank.md
