#!/bin/bash
# Dataset v2's GPU runs on a lent accelerator: families `gpu` (4 x 128 to 6 x 384, blocks 64-256, 1,000 to
# 5,000 iterations) and `fork_gpu` (forked groups of the same models), resumable jobs side by side on the one
# GPU, each training groups of 8 runs in one batched step. JOBS: "family:seed" entries (a bare seed is
# $FAMILY's); a job with runs in collect/data/v2 resumes from them (its job file and runs are copied in
# first). EXPLORE (e.g. "walk=0.75 ramp=0.25"): every job's --explore mix, as its job file records it. Finished new runs are packed into $OUT every minute, so a lease that ends mid-job still returns
# every run that finished. Run from the repository root; BUDGET = seconds of collection.
#   device: run(command="bash results/gpu_v2/device_collect.sh", carry=[".devcorp"], timeout_s=...)
# .devcorp holds this repository's machine's system corpora (licenses, the MIME database, iso-codes'
# JSON; gettext's 79 MB of catalogs do not travel), copied into /usr/share where the device lacks them.
set -u
OUT=${OUT:-/tmp/out}; BUDGET=${BUDGET:-400}; EXPLORE=${EXPLORE:-}; JOBS=${JOBS:-"4 5 6 7"}; FAMILY=${FAMILY:-gpu}; DATA=${DATA:-/tmp/v2gpu}
# the corpora every GPU job was started with (the device has no gettext catalogs): explicit, so that the jobs resume anywhere
TASKS="python_docs python_docstrings python_stdlib unicode_names licenses mime_xml iso_codes_json"
mkdir -p "$OUT" "$DATA/jobs"
for j in $JOBS; do s=${j##*:}; [ -f "collect/data/v2/jobs/seed$s.json" ] || continue
  cp "collect/data/v2/jobs/seed$s.json" "$DATA/jobs/"; cp collect/data/v2/run_s${s}_*.parquet "$DATA/" 2>/dev/null; done
touch "$DATA/.start"
[ -d /usr/share/common-licenses ] || cp -r .devcorp/common-licenses /usr/share/ 2>/dev/null
[ -f /usr/share/mime/packages/freedesktop.org.xml ] || { mkdir -p /usr/share/mime && cp -r .devcorp/mime/packages /usr/share/mime/; } 2>/dev/null
[ -d /usr/share/iso-codes/json ] || { mkdir -p /usr/share/iso-codes && cp -r .devcorp/iso-codes/json /usr/share/iso-codes/; } 2>/dev/null
# the package without installing it: the kernel plus each stage's folder under one lrpilot namespace
# (python runs from /tmp: from the repository root, ./lrpilot, the kernel alone, would shadow it)
rm -rf /tmp/pkg && mkdir -p /tmp/pkg && cp -r lrpilot /tmp/pkg/
for s in checkpoints trainers collect worldmodel policy app; do ln -s "$PWD/$s" "/tmp/pkg/lrpilot/$s"; done
export PYTHONPATH=/tmp/pkg PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_PREALLOCATE=false
# nanoGPT sets allow_tf32; JAX's equivalent for fp32 matrix products (as results/full_gpu)
export JAX_DEFAULT_MATMUL_PRECISION=tensorfloat32
{ date; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1; nproc
  python3 -c "import jax,flax,optax,orbax.checkpoint,pyarrow,sys; print('python',sys.version.split()[0],'jax',jax.__version__,'flax',flax.__version__,'optax',optax.__version__,jax.devices())"
  (cd /tmp && python3 -c "from lrpilot.collect.tasks import default_tasks; print('tasks', default_tasks())"); } > "$OUT/env.txt" 2>&1
cat "$OUT/env.txt"
pack() {  # finished new runs only (a .tmp is a run being written; resumed jobs' old runs stay out)
  (cd "$DATA" && find . -maxdepth 1 -name 'run_s*.parquet' -newer .start | tar czf "$OUT/.runs.tgz" -T - jobs 2>/dev/null) \
    && mv "$OUT/.runs.tgz" "$OUT/gpu_runs.tgz"
}
pids=()
for j in $JOBS; do
  s=${j##*:}; f=$FAMILY; [ "$j" = "$s" ] || f=${j%%:*}
  # shellcheck disable=SC2086
  (cd /tmp && exec timeout "$BUDGET" python3 -m lrpilot.app.cli collect --family "$f" --seed "$s" --parallel 8 --runs 400 \
    --out "$DATA" --tasks $TASKS ${EXPLORE:+--explore $EXPLORE} --quiet) > "$OUT/collect_s$s.log" 2>&1 &
  pids+=($!)
done
new() { find "$DATA" -maxdepth 1 -name 'run_s*.parquet' -newer "$DATA/.start" | wc -l; }
( while sleep 60; do pack; echo "$(date +%T) $(new) new runs"; nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader; done ) &
ticker=$!
wait "${pids[@]}"; kill $ticker 2>/dev/null
pack; echo "finished: $(new) new runs"; date
tail -n 3 "$OUT"/collect_s*.log
# then the simulator's speed on this GPU: the shipped 3-member ensemble, cached, up to 16,384 envs
[ "${BENCH:-1}" = 1 ] && timeout 110 python3 benchmarks/bench_sim.py --ckpt pretrained --data collect/data/v2.parquet --envs 256,1024,4096,16384 \
  --nocache-envs "" --real collect --task python_docs --reps 3 2>&1 | tee "$OUT/bench_sim_gpu.txt"
date
