#!/usr/bin/env bash
# Ranking zoo II (benchmarks/results/recsys/zoo2/): the five settings of issue 21, 3 seeds each, early stopping on
# validation. Finished runs are skipped, so the script resumes; SETTINGS / SEEDS pick a part (two queues can run
# side by side on different settings).
#   S3REC=../shared/data/s3rec bash benchmarks/run_ranking_zoo2.sh && .venv/bin/python benchmarks/ranking_zoo2_table.py
set -euo pipefail
S3REC=${S3REC:-../shared/data/s3rec}
RUNS=${RUNS:-runs/recsys/zoo2}
BIN=${BIN:-.venv/bin}
SEEDS=${SEEDS:-0 1 2}
SETTINGS=${SETTINGS:-longseq heterrec gsvr dmae cdanet}
LENGTHS=${LENGTHS:-50 200 1000}
M=recsys_core/models
T="$BIN/shoplab recsys train --set train.progress=false"

run() {  # run OUT_DIR ARGS...: skip a finished run, log next to the runs
  local out=$1; shift
  [ -f "$out/metrics.json" ] && return 0
  mkdir -p "$(dirname "$out")"
  echo "$(date +%T) $out"
  $T "$@" --out-dir "$out" > "$out.log" 2>&1 || echo "FAILED $out (see $out.log)"
}

longseq() {  # longseq SEED: DIN-style and full softmax target attention against the low-rank one, per length
  local s=$1 L C="--config $M/lrta/config.yaml"
  for L in $LENGTHS; do
    local Z="$RUNS/longseq/L$L" D="--set data.max_len=$L --set train.seed=$s"
    run "$Z/lrta/seed$s" $C $D
    run "$Z/full/seed$s" $C $D --set model_params.rank=0
    run "$Z/lrta_no_approx/seed$s" $C $D --set model_params.approx_weight=0
    run "$Z/din/seed$s" --config $M/din/config.yaml --set data.kind=movielens --set data.user_sample=2000 \
      --set data.path=null --set train.epochs=8 --set train.patience=2 $D
  done
}

for s in $SEEDS; do
  for setting in $SETTINGS; do
    declare -F "$setting" >/dev/null && "$setting" "$s"
  done
done
