#!/bin/bash
# Full nanoGPT shakespeare_char protocol on the lent GPU: cosine, policy, cosine x2 peak LR, 3 seeds each.
set -o pipefail
export PYTHONPATH=$PWD LRPILOT_DATA_DIR=$PWD/.devdata PYTHONUNBUFFERED=1
# nanoGPT sets torch.backends.cuda.matmul.allow_tf32=True; this is JAX's equivalent for fp32 matmuls.
export JAX_DEFAULT_MATMUL_PRECISION=tensorfloat32
{ date; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv; nproc;
  python3 -c "import jax,flax,optax,orbax.checkpoint,pyarrow; print('jax',jax.__version__,'flax',flax.__version__,'optax',optax.__version__,jax.devices())"; } 2>&1 | tee $OUT/env.txt
timeout ${BUDGET:-500} python3 -m lrpilot.cli evaluate --tasks shakespeare_char --scale full \
  --controllers cosine policy cosine:lr_mult=2 --seeds 3 --max-batch 3 --out R 2>&1 | tr '\r' '\n' | tee $OUT/log.txt
echo "evaluate rc=$?" | tee -a $OUT/log.txt; date >> $OUT/log.txt
tar czf $OUT/full_gpu.tgz R
