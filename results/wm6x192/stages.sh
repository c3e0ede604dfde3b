#!/bin/bash
# The 6 x 192 ensemble through the shipped world model's stages (checkpoints/pretrained/MODEL_CARD.md's commands),
# then its fidelity section on the yardstick. Each step is skipped when its output exists (fit-rollout resumes from
# OUT.state), and a stage is also skipped when a later one's output exists, so a rerun goes on where a stop left it.
# Needs the three members in results/wm6x192/wm.members/ and the data folders of data_dirs.sh under $DATA (default
# /work/scratch); stage checkpoints go to $STAGES (default results/wm6x192/stages, ignored by git).
set -euo pipefail
cd "$(dirname "$0")/../.."
D=${DATA:-/work/scratch}; S=${STAGES:-results/wm6x192/stages}; W=results/wm6x192
R="results/simple_v2/round_0/data results/simple_v2/round_1/data results/simple_v2/round_2/data results/simple_v2/round_3/data"
OUTS=($W/wm $S/stage1 $S/stage2 $S/stage3 $W/wm_fit)  # the chain's outputs, in order
done_() { local c; for c in "${OUTS[@]:$1}"; do [ -f "$c/checkpoint.json" ] && return 0; done; return 1; }  # N or later
step() { echo "[$(date -u +%H:%M)] $*"; }
done_ 0 ||
  { step stack; lrpilot worldmodel train --data starter $D/v2_at_tw $R --spec v2 --n-layer 6 --d-model 192 \
  --n-head 6 --steps 3000 --select nll --patience 0 --eval-every 250 --action-response noop --action-level true \
  --own-draws 0.5 --ensemble 3 --bootstrap false --out $W/wm; }
done_ 1 ||
  { step stage1; lrpilot worldmodel fit-action --ckpt $W/wm --data starter $D/v2_no21 $R --response noop \
  --hinge -0.873 --hinge-params -0.191 --hinge-offsets -1 1 --fit exogenous --out $S/stage1; }
done_ 2 ||
  { step stage2; lrpilot worldmodel fit-action --ckpt $S/stage1 --data starter $D/v2_no21_drop $R \
  --response noop --keep --level --level-terms kinks --fit paired --out $S/stage2; }
done_ 3 ||
  { step stage3; lrpilot worldmodel fit-action --ckpt $S/stage2 --data starter $D/v2_no21_drop $R \
  --response noop --keep --divergence --fit exogenous --out $S/stage3; }
done_ 4 || { step fit-rollout; lrpilot worldmodel fit-rollout --ckpt $S/stage3 --data starter $D/v2_no21_drop $R \
  --groups 120 --samples 32 --out $W/wm_fit; }
[ -f $W/eval_heldout/forecast.json ] || { step eval; lrpilot worldmodel eval --ckpt $W/wm_fit --data starter \
  $D/v2_before_timing $R --samples 32 --heldout-only --replays results/noise_ceiling/replays --out $W/eval_heldout; }
for c in $W/wm_fit pretrained; do  # simulator speed beside the shipped one's, the same way (one core)
  f=$W/bench_sim_$(basename $c).txt
  [ -s $f ] || { step bench $c; python benchmarks/bench_sim.py --ckpt $c --data collect/data/starter --envs 256 \
    --nocache-envs '' --real '' > $f.tmp && mv $f.tmp $f; }
done
step done
