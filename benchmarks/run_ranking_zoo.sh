#!/usr/bin/env bash
# Ranking zoo I (benchmarks/results/recsys/zoo/): DIN, DeepFM, STORE, SGCTR, DGenCTR (with and without its
# pre-training) and MATT around DIN / DeepFM / GPSD, 3 seeds each, early stopping on validation (patience 2),
# on Amazon Beauty CTR and MovieLens-1M CTR; the ablations on seed 0 first. Finished runs are skipped, so the
# script resumes; seed 0 of every row runs before the ablations and before seeds 1-2.
#   S3REC=../shared/data/s3rec bash benchmarks/run_ranking_zoo.sh [beauty|ml1m|all] && \
#   .venv/bin/python benchmarks/ranking_zoo_table.py
# MATT around GPSD wraps benchmarks/run_gpsd_grid.sh's d=32 scratch runs (Beauty only; skipped until they exist).
set -euo pipefail
WHICH=${1:-all}
S3REC=${S3REC:-../shared/data/s3rec}
RUNS=${RUNS:-runs/recsys}
BIN=${BIN:-.venv/bin}
SEEDS=${SEEDS:-0 1 2}
mkdir -p "$RUNS/logs"
M=recsys_core/models
T="$BIN/shoplab recsys train --set train.progress=false"

ROWS=${ROWS:-}  # e.g. ROWS="din deepfm matt_din": only these rows (run folder names under zoo/<dataset>/)

run() {  # run OUT_DIR ARGS...: skip a finished run (or a row not in ROWS), log next to the runs
  local out=$1; shift
  [ -f "$out/metrics.json" ] && return 0
  if [ -n "$ROWS" ] && [[ " $ROWS " != *" $(basename "$(dirname "$out")") "* ]]; then return 0; fi
  mkdir -p "$(dirname "$out")"
  echo "$(date +%T) $out"
  $T "$@" --out-dir "$out" > "$out.log" 2>&1 || echo "FAILED $out (see $out.log)"
}

dataset_args() {  # the data section of each dataset (the model configs are written for Beauty)
  if [ "$1" = beauty ]; then echo "--set data.path=$S3REC"
  else echo "--set data.kind=movielens --set data.dataset=ml-1m --set data.path=null --set data.max_len=30"; fi
}

model_args() {  # per-dataset model sizes: ML-1M's zip3 (679 values) is tokenised by STORE too
  if [ "$1" = ml1m ] && [ "$2" = store ]; then echo "--set model_params.tokenize_min_vocab=500"; fi
  if [ "$2" = din ] || [ "$2" = deepfm ]; then echo "--set train.epochs=8 --set train.patience=2"; fi
}

seed_rows() {  # seed_rows DATASET SEED
  local ds=$1 s=$2 Z="$RUNS/zoo/$1" D
  D="$(dataset_args "$ds") --set train.seed=$s"
  for m in din deepfm store; do
    run "$Z/$m/seed$s" --config $M/$m/config.yaml $D $(model_args "$ds" $m)
  done
  run "$Z/dgenctr_pretrain/seed$s" --config $M/dgenctr/pretrain.yaml $D
  run "$Z/dgenctr/seed$s" --config $M/dgenctr/config.yaml $D --set model_params.init_from="$Z/dgenctr_pretrain/seed$s"
  run "$Z/dgenctr_scratch/seed$s" --config $M/dgenctr/config.yaml $D --set model_params.init_from=null
  local bases="din deepfm"
  [ "$ds" = beauty ] && [ -f "$RUNS/gpsd_d32_nt/seed$s/metrics.json" ] && bases="$bases gpsd"
  for b in $bases; do
    local base="$Z/$b/seed$s"
    [ "$b" = gpsd ] && base="$RUNS/gpsd_d32_nt/seed$s"
    [ -f "$base/metrics.json" ] && run "$Z/matt_$b/seed$s" --config $M/matt/config.yaml $D \
      --set model_params.base_run="$base"
  done
  run "$Z/sgctr/seed$s" --config $M/sgctr/config.yaml $D  # the slowest row (~3 CPU-minutes an epoch on Beauty) last
}

ablation_rows() {  # ablation_rows DATASET SEED: one mechanism off at a time
  local ds=$1 s=$2 Z="$RUNS/zoo/$1" D
  D="$(dataset_args "$ds") --set train.seed=$s"
  local S="--config $M/store/config.yaml $D $(model_args "$ds" store)"
  run "$Z/store_no_semantic/seed$s" $S --set model_params.semantic_tokens=false
  run "$Z/store_no_rotation/seed$s" $S --set model_params.rotation=false
  run "$Z/store_keep_all/seed$s" $S --set model_params.keep_ratio=1.0
  run "$Z/sgctr_no_generative/seed$s" --config $M/sgctr/config.yaml $D --set model_params.generative_weight=0
  run "$Z/sgctr_no_refine_train/seed$s" --config $M/sgctr/config.yaml $D --set model_params.refine_steps=0
}

PARTS=${PARTS:-rows ablations}  # e.g. PARTS=rows SEEDS="1 2": a second queue beside one doing seed 0
FIRST=${SEEDS%% *}
for ds in beauty ml1m; do
  [ "$WHICH" = all ] || [ "$WHICH" = "$ds" ] || continue
  [[ "$PARTS" == *rows* ]] && seed_rows "$ds" "$FIRST"
  [[ "$PARTS" == *ablations* ]] && ablation_rows "$ds" "$FIRST"
  for s in $SEEDS; do [ "$s" = "$FIRST" ] || [[ "$PARTS" != *rows* ]] || seed_rows "$ds" "$s"; done
  for s in $SEEDS; do [ "$s" = "$FIRST" ] || [[ "$PARTS" != *ablations* ]] || ablation_rows "$ds" "$s"; done
done
