#!/bin/bash
# The named selections of collect/data/v2 the results' commands read, as folders of links under $1 (default
# /work/scratch): V2_BEFORE_TIMING (jobs 1-16, 3,128 runs), V2_AT_TW (jobs 1-19, 3,623), V2_NO21 (V2_AT_TW and job
# 20's first 36, 3,659), V2_NO21_DROP (V2_NO21 and job 22's first 36, 3,695). "First" is the run index in the file
# name, the order the job wrote them.
set -euo pipefail
out=${1:-/work/scratch}
src=$(cd "$(dirname "$0")/../../collect/data/v2" && pwd)
for d in v2_before_timing v2_at_tw v2_no21 v2_no21_drop; do mkdir -p "$out/$d"; done
for p in "$src"/run_s*_*.parquet; do
  f=$(basename "$p"); j=${f#run_s}; j=${j%%_*}; i=${f##*_}; i=$((10#${i%.parquet}))
  if [ "$j" -le 16 ]; then ln -sf "$p" "$out/v2_before_timing/"; fi
  if [ "$j" -le 19 ] || { [ "$j" -eq 20 ] && [ "$i" -lt 36 ]; }; then ln -sf "$p" "$out/v2_no21/"; ln -sf "$p" "$out/v2_no21_drop/"; fi
  if [ "$j" -le 19 ]; then ln -sf "$p" "$out/v2_at_tw/"; fi
  if [ "$j" -eq 22 ] && [ "$i" -lt 36 ]; then ln -sf "$p" "$out/v2_no21_drop/"; fi
done
for d in v2_before_timing v2_at_tw v2_no21 v2_no21_drop; do echo "$out/$d: $(ls "$out/$d" | wc -l) runs"; done
