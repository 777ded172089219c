#!/usr/bin/env bash
# GPSD at convergence on Amazon Beauty CTR: per seed s (pretraining seed = fine-tuning seed), pretrain at
# d = 32/64/128, then scratch (NT), full transfer (FT) and sparse transfer + freezing (ST&SF), each with early
# stopping on validation AUC (patience 2, up to 6 epochs: gpsd/config.yaml). Finished runs are skipped, so
# the script resumes; DIMS / SEEDS narrow it.
#   S3REC=../shared/data/s3rec DIMS="32 64" SEEDS="0 1 2" bash benchmarks/run_gpsd_grid.sh
set -euo pipefail
S3REC=${S3REC:-../shared/data/s3rec}
RUNS=${RUNS:-runs/recsys}
BIN=${BIN:-.venv/bin}
DIMS=${DIMS:-32 64 128}
SEEDS=${SEEDS:-0 1 2}
mkdir -p "$RUNS/logs"
T="$BIN/shoplab recsys train --set train.progress=false --set data.path=$S3REC"

run() {  # run OUT_DIR LOG ARGS...: skip a finished run
  local out=$1 log=$2; shift 2
  [ -f "$out/metrics.json" ] && return 0
  $T "$@" --out-dir "$out" > "$RUNS/logs/$log.log" 2>&1
}

for seed in $SEEDS; do
  for d in $DIMS; do
    pre="$RUNS/gpsd_pretrain_d$d/seed$seed"
    run "$pre" "gpsd_pretrain_d${d}_s$seed" --config recsys_core/models/gpsd/pretrain_d$d.yaml --set train.seed=$seed
    C=(--config recsys_core/models/gpsd/config.yaml --set model_params.hidden=$d --set train.seed=$seed)
    P=(--set model_params.transfer.from_run=$pre)
    run "$RUNS/gpsd_d${d}_nt/seed$seed" "gpsd_d${d}_nt_s$seed" "${C[@]}"
    run "$RUNS/gpsd_d${d}_ft/seed$seed" "gpsd_d${d}_ft_s$seed" "${C[@]}" "${P[@]}" --set model_params.transfer.mode=full
    run "$RUNS/gpsd_d${d}_stsf/seed$seed" "gpsd_d${d}_stsf_s$seed" "${C[@]}" "${P[@]}" \
      --set model_params.transfer.mode=sparse --set model_params.transfer.freeze_sparse=true
  done
done
